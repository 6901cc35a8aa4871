"""Runs that survive the real world: DDP on two CPU processes, SIGKILL then resume, corrupt checkpoints,
mixed precision, non-finite losses."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from molt.config import load_config
from molt.app.evaluate import evaluate
from molt.app.train import NonFiniteLossError, train


@pytest.fixture(scope="module")
def prepared(ave_prepared_40):
    return ave_prepared_40


def _molt(*args, **kwargs):
    command = [sys.executable, "-m", "molt", *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_ddp_on_two_cpu_processes_sums_metric_counts(prepared, tmp_path):
    process = _molt("train", "ave", "--data", prepared, "--out", tmp_path, "--epochs", 2, "--batch-size", 4,
                    "--accelerator", "cpu", "--devices", 2, "--strategy", "ddp")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    result = json.loads((tmp_path / "ave_molt_tiny" / "version_0" / "result.json").read_text())
    assert output.count("result.json (or molt train --json)") == 1     # only rank 0 prints the result
    assert result["global_step"] == 2 * 4          # 32 clips / (2 processes x 4 per batch) = 4 steps per epoch
    # the DDP test figure is the whole split's (counts summed over processes), as one process computes it
    single = evaluate(result["adapters"], data=prepared, split="test", batch_size=3)
    assert result["test"]["accuracy"] == pytest.approx(single["accuracy"], abs=1e-6)


def test_sigkill_mid_run_then_resume_from_last_checkpoint(prepared, tmp_path):
    epochs = 8
    process = _molt("train", "ave", "--data", prepared, "--out", tmp_path, "--epochs", epochs, "--batch-size", 4)
    last = tmp_path / "ave_molt_tiny" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    saved = torch.load(last, map_location="cpu", weights_only=False)   # complete, never truncated
    assert 0 <= saved["epoch"] < epochs - 1
    config = load_config("ave_molt_tiny", {"trainer": {"max_epochs": epochs, "batch_size": 4}})
    result = train(config, data=prepared, out_dir=tmp_path, resume="last", enable_progress_bar=False)
    assert result["run_dir"].endswith("version_0")    # same run, same TensorBoard version
    assert result["global_step"] == epochs * 8
    assert not list(last.parent.glob(".*.partial"))


def test_corrupt_checkpoint_is_named(prepared, tmp_path):
    config = load_config("ave_molt_tiny", {"trainer": {"max_epochs": 1, "batch_size": 8}})
    result = train(config, data=prepared, out_dir=tmp_path, enable_progress_bar=False)
    broken = tmp_path / "broken.ckpt"
    data = Path(result["best_checkpoint"]).read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="broken.ckpt is corrupt or truncated"):
        train(config, data=prepared, out_dir=tmp_path, resume=str(broken), enable_progress_bar=False)


def test_bf16_mixed_precision_trains_on_cpu(prepared, tmp_path):
    config = load_config("ave_molt_tiny", {"trainer": {"max_epochs": 1, "batch_size": 8, "accelerator": "cpu",
                                                       "precision": "bf16-mixed"}})
    result = train(config, data=prepared, out_dir=tmp_path, enable_progress_bar=False)
    assert result["global_step"] == 4 and 0.0 <= result["test"]["accuracy"] <= 1.0
    assert torch.isfinite(torch.tensor(result["test"]["loss"]))


def test_non_finite_loss_stops_the_run_naming_the_step(prepared, tmp_path):
    config = load_config("ave_molt_tiny", {"trainer": {"max_epochs": 1, "batch_size": 8},
                                           "optim": {"lr": 1e10, "head_lr": 1e10}})
    with pytest.raises(NonFiniteLossError, match=r"global step \d+, epoch 0, batch \d+ \(clips: \[") as stopped:
        train(config, data=prepared, out_dir=tmp_path, enable_progress_bar=False)
    assert stopped.value.exit_code == 3 and "no checkpoint with finite weights was written" in str(stopped.value)


def test_training_from_a_feature_cache_matches_online_training(prepared, tmp_path):
    from molt.app.cli import main

    cache = tmp_path / "cache"
    assert main(["extract", "ave", "--data", str(prepared), "--out", str(cache), "--dtype", "float32"]) == 0
    config = load_config("ave_molt_tiny", {"trainer": {"max_epochs": 2, "batch_size": 8, "seed": 5}})
    online = train(config, data=prepared, out_dir=tmp_path / "online", enable_progress_bar=False)
    cached = train(config, data=prepared, out_dir=tmp_path / "cached", enable_progress_bar=False, features=cache)
    assert cached["global_step"] == online["global_step"] == 8
    assert cached["test"]["loss"] == pytest.approx(online["test"]["loss"], rel=1e-4)
    assert cached["test"]["accuracy"] == pytest.approx(online["test"]["accuracy"], abs=1e-6)
    # the adapters trained from the cache work on raw clips, with the frozen backbones loaded
    evaluated = evaluate(cached["adapters"], data=prepared, split="test")
    assert evaluated["accuracy"] == pytest.approx(cached["test"]["accuracy"], abs=1e-6)


def test_a_cache_for_other_blocks_or_lavish_is_refused(prepared, tmp_path):
    from molt.app.cli import main

    cache = tmp_path / "cache"
    assert main(["extract", "ave", "--data", str(prepared), "--out", str(cache), "--splits",
                 "train,val,test", "--blocks", "late"]) == 0
    mid = load_config("ave_molt_tiny", {"trainer": {"max_epochs": 1},
                                        "method_config": {"blocks_visual": "mid", "blocks_audio": "mid"}})
    with pytest.raises(ValueError, match=r"blocks: cache has \[6, 7\], expected \[4, 5\]"):
        train(mid, data=prepared, out_dir=tmp_path, enable_progress_bar=False, features=cache)
    from molt.config import switch_method

    lavish = switch_method(load_config("ave_molt_tiny", {"trainer": {"max_epochs": 1}}), "lavish")
    with pytest.raises(ValueError, match="lavish cannot train from a feature cache"):
        train(lavish, data=prepared, out_dir=tmp_path, enable_progress_bar=False, features=cache)
