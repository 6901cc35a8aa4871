"""The benchmark scripts whose figures the README and docs/ quote still run end to end (tiny backbones, on the CPU)."""
import json
import subprocess
import sys

import pytest

from helpers import ROOT

BENCHMARKS = ROOT / "benchmarks"


def _run(script: str, *args: str) -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    _run("gpu_check.py", "--backbone", "tiny", "--device", "cpu", "--methods", "molt,lavish", "--batches", "1",
         "--precisions", "32-true", "--steps", "1", "--extract-clips", "8", "--out", str(tmp_path))
    payload = json.loads((tmp_path / "gpu_check.json").read_text())
    # a half-precision-backbone row only for the method that reads taps (LAVisH runs inside the blocks)
    assert [(r["method"], r["precision"], r["backbone_dtype"]) for r in payload["training"]] == [
        ("molt", "32-true", "float32"), ("molt", "bf16-mixed", "bfloat16"), ("lavish", "32-true", "float32")]
    assert all(r["median_step_s"] > 0 and r["peak_bytes"] > 0 for r in payload["training"])
    extraction = payload["extraction"]
    assert extraction["clips"] == 8
    assert extraction["extract_vs_bare"] == pytest.approx(extraction["extract_clips_per_s"]
                                                          / extraction["bare_clips_per_s"])
    assert "| molt | 1 | bf16-mixed | bfloat16 |" in (tmp_path / "gpu_check.md").read_text()


def test_cache_speed_times_the_batches_it_was_asked_for(tmp_path):
    _run("cache_speed.py", "--presets", "tiny", "--timed-batches", "2", "--batch-size", "3", "--out", str(tmp_path))
    (row,) = json.loads((tmp_path / "cache_speed.json").read_text())
    assert (row["clips"], row["timed_batches"], row["batch_size"]) == (9, 2, 3)
    assert row["speedup"] == pytest.approx(row["online_epoch_s"] / row["cached_epoch_s"])
    assert row["speedup_limit"] == pytest.approx(1 + row["frozen_gflops_per_clip"] / row["side_gflops_per_clip"])
    assert row["speedup_of_limit"] == pytest.approx(row["speedup"] / row["speedup_limit"])
    assert "| tiny | adapter | cpu " in (tmp_path / "cache_speed.md").read_text()
