"""`molt extract --devices 2` on CPU processes: the same cache, array for array, as one process; a kill half-way and
the same command again complete it."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest



@pytest.fixture(scope="module")
def prepared(ave_prepared_40):
    return ave_prepared_40


def _extract(prepared, out, *extra, wait=True):
    command = [sys.executable, "-m", "molt", "--quiet", "extract", "ave", "--data", str(prepared), "--out", str(out),
               "--dtype", "float32", "--chunk-size", "2", "--batch-size", "2", *extra]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
                               start_new_session=True)
    if wait:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-3000:]
    return process


def _arrays(cache: Path) -> dict[str, np.ndarray]:
    return {str(path.relative_to(cache)): np.load(path) for path in sorted(cache.rglob("*.npy"))}


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("one_process")
    _extract(prepared, out)
    return _arrays(out)


def _assert_same_cache(cache, reference):
    arrays = _arrays(cache)
    # 32 / 4 / 4 clips in chunks of 2: 20 chunks, each with 2 blocks of 2 tap groups
    assert set(arrays) == set(reference) and len(arrays) == 80
    assert all(np.array_equal(arrays[name], reference[name]) for name in reference)
    assert json.loads((cache / "manifest.json").read_text())["splits"] == ["test", "train", "val"]


def test_two_processes_write_the_one_process_cache(prepared, reference, tmp_path):
    _extract(prepared, tmp_path, "--devices", "2")
    _assert_same_cache(tmp_path, reference)


def test_killed_half_way_then_run_again_completes(prepared, reference, tmp_path):
    process = _extract(prepared, tmp_path, "--devices", "2", wait=False)
    deadline = time.time() + 300
    while not list(tmp_path.glob("train/chunk_*/done.json")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the extraction ended before it could be killed"
    assert not (tmp_path / "train" / "split.json").exists()
    _extract(prepared, tmp_path, "--devices", "2")
    _assert_same_cache(tmp_path, reference)


def test_ddp_training_from_the_cache_equals_ddp_training_online(prepared, tmp_path):
    cache = tmp_path / "cache"
    _extract(prepared, cache, "--devices", "2")
    runs = {}
    for name, extra in (("online", []), ("cached", ["--features", str(cache)])):
        command = [sys.executable, "-m", "molt", "--quiet", "train", "ave", "--json", "--data", str(prepared), "--out",
                   str(tmp_path / name), "--epochs", "2", "--batch-size", "4", "--seed", "2", "--strategy", "ddp",
                   "--devices", "2", "--accelerator", "cpu", *extra]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = json.loads(done.stdout[:done.stdout.rindex("}") + 1])
    assert runs["cached"]["global_step"] == runs["online"]["global_step"] == 2 * 4     # 32 clips / 2 ranks / 4
    assert runs["cached"]["test"]["loss"] == pytest.approx(runs["online"]["test"]["loss"], rel=1e-4)
    assert runs["cached"]["test"]["accuracy"] == pytest.approx(runs["online"]["test"]["accuracy"], abs=1e-6)
