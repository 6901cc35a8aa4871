"""Training checkpoints: last.ckpt every epoch whatever the validation score, and no checkpoint that runs code."""
import json
import os
from pathlib import Path

import pytest
import torch

from molt.app.cli import main
from molt.config import load_config
from molt.checkpoints import read_training_checkpoint
from molt.app.train import train


@pytest.fixture(scope="module")
def frozen_run(ave_data, tmp_path_factory):
    """Three epochs at learning rate 0 on the session's AVE set: the validation score never improves after epoch 0."""
    root = tmp_path_factory.mktemp("frozen")
    data = ave_data
    config = load_config("ave_molt_tiny", {"trainer": {"max_epochs": 3, "batch_size": 8},
                                           "optim": {"lr": 0.0, "head_lr": 0.0}})
    result = train(config, data=data, out_dir=root / "runs", enable_progress_bar=False)
    return data, result


def test_last_checkpoint_is_written_every_epoch(frozen_run):
    _, result = frozen_run
    checkpoints = os.path.dirname(result["best_checkpoint"])
    last = read_training_checkpoint(os.path.join(checkpoints, "last.ckpt"))
    best = read_training_checkpoint(result["best_checkpoint"])
    assert last["global_step"] == result["global_step"] == 6   # 3 epochs of 2 batches
    assert best["global_step"] == 2                             # nothing better came after the first epoch
    environment = result["environment"]       # what the figures depend on, recorded in result.json (and demo.json)
    assert environment["torch"] == torch.__version__.split("+")[0] or environment["torch"] == torch.__version__
    assert environment["torch_threads"] >= 1
    assert {"timm", "lightning", "av", "numpy", "python", "cpu"} <= set(environment)
    assert environment["cpu_capability"] in ("DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256", "SVE")


class _MakesADirectory:
    """Unpickling this creates a directory: the marker that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_a_checkpoint_that_pickles_code_is_refused_by_eval_predict_and_resume(frozen_run, tmp_path, caplog):
    data, result = frozen_run
    state = torch.load(result["best_checkpoint"], map_location="cpu", weights_only=True)
    marker = tmp_path / "code_ran"
    state["molt_task_options"] = {**state["molt_task_options"], "hook": _MakesADirectory(str(marker))}
    evil = tmp_path / "evil.ckpt"
    torch.save(state, evil)
    video = next((data / "AVE").glob("*.mp4"))
    runs = tmp_path / "runs"
    for argv in (["eval", "ave", "--data", str(data), "--checkpoint", str(evil)],
                 ["predict", "ave", "--checkpoint", str(evil), "--video", str(video)],
                 ["train", "ave", "--data", str(data), "--resume", str(evil), "--epochs", "1", "--out", str(runs)]):
        caplog.clear()
        assert main(argv) == 2, argv
        assert f"{evil}: refused" in caplog.text and "could run code" in caplog.text, argv
        assert not marker.exists(), argv
    assert not runs.exists()           # the refused resume left no empty run directory


def test_the_console_gets_one_line_per_event_and_no_progress_bar_off_a_terminal(frozen_run, tmp_path):
    import subprocess
    import sys

    data, _ = frozen_run
    done = subprocess.run([sys.executable, "-m", "molt", "train", "ave", "--data", str(data), "--epochs", "1",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()
    # one progress line for the one epoch (printed once, not twice), none of Lightning's start-up chatter
    assert sum(" molt.app.train: epoch 1/1: " in line for line in lines) == 1
    assert not any("GPU available" in line or "Seed set to" in line for line in lines), lines
    assert not any("Tip:" in line or "it/s" in line or "Warning" in line for line in lines), lines
    assert len(lines) < 40, lines


def test_quiet_prints_the_result_only(frozen_run, tmp_path):
    import subprocess
    import sys

    data, _ = frozen_run
    done = subprocess.run([sys.executable, "-m", "molt", "--quiet", "train", "ave", "--json", "--data", str(data),
                           "--epochs", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""
    result = json.loads(done.stdout)
    assert Path(result["run_dir"], "result.json").is_file() and result["global_step"] > 0
