"""``molt train`` as separate processes meeting faults: runs started together on one ``--out``, a full disk, a
read-only ``--out``, a loss that becomes NaN. Each ends in a saved state (or nothing started), one line and a
non-zero exit status; concurrent runs each get their own run directory."""
import json
import os
import subprocess
import sys

import pytest

from helpers import mounted_tmpfs
from molt.checkpoints import read_training_checkpoint


@pytest.fixture(scope="module")
def prepared(ave_prepared_40):
    return ave_prepared_40


def _train(data, out, *extra, wait=True):
    command = [sys.executable, "-m", "molt", "train", "ave", "--data", str(data), "--out", str(out),
               "--batch-size", "8", *map(str, extra)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
    if not wait:
        return process
    output, _ = process.communicate(timeout=600)
    return process.returncode, output


def _errors(output):
    return [line for line in output.splitlines() if " ERROR " in line]


def test_three_runs_started_together_on_one_out_get_three_run_directories(prepared, tmp_path):
    processes = [_train(prepared, tmp_path, "--epochs", 1, "--seed", seed, wait=False) for seed in range(3)]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], [output[-2000:] for output in outputs]
    runs = sorted((tmp_path / "ave_molt_tiny").iterdir())
    assert [run.name for run in runs] == ["version_0", "version_1", "version_2"]
    seeds = set()
    for run in runs:
        result = json.loads((run / "result.json").read_text())
        assert result["run_dir"] == str(run)
        assert result["best_checkpoint"].startswith(str(run / "checkpoints"))
        seeds.add(read_training_checkpoint(run / "checkpoints" / "last.ckpt")["molt_config"]["trainer"]["seed"])
        writers = {path.name.split(".")[-2] for path in run.glob("events.out.tfevents.*")}
        assert len(writers) == 1, writers          # TensorBoard files of one process only (fit's and test's)
    assert seeds == {0, 1, 2}


def _root() -> bool:
    return os.geteuid() == 0


@pytest.mark.skipif(not _root(), reason="mounting a small tmpfs (a disk that fills up) needs root; the unit tier "
                                        "injects ENOSPC into the checkpoint writer instead")
@pytest.mark.parametrize("processes, steps", [((), 4), (("--strategy", "ddp", "--devices", 2, "--accelerator", "cpu"),
                                                        2)], ids=["one process", "ddp"])
def test_a_disk_that_fills_up_keeps_the_earlier_checkpoint_and_says_how_much_space(prepared, tmp_path, processes,
                                                                                    steps):
    """Under DDP the first process, the only one that writes, tells the others: all stop, none waits for it."""
    # room for one checkpoint of the tiny preset (about 11 MB) and TensorBoard's file, not for two
    with mounted_tmpfs(tmp_path / "small_disk", "size=16m") as out:
        code, output = _train(prepared, out, "--epochs", 2, *processes)
        assert code == 4, output[-3000:]
        errors = _errors(output)
        assert len(errors) == 1 and "no space left on the device for" in errors[0], output[-3000:]
        assert "the checkpoint needs 10." in errors[0] or "the checkpoint needs 11." in errors[0], errors
        assert "earlier checkpoints there are intact" in errors[0] and errors[0].endswith("--resume last")
        assert "Traceback" not in output
        checkpoints = out / "ave_molt_tiny" / "version_0" / "checkpoints"
        assert [path.name for path in checkpoints.iterdir()] == ["best.ckpt"]   # no partial file left
        assert read_training_checkpoint(checkpoints / "best.ckpt")["global_step"] == steps


@pytest.mark.skipif(not _root(), reason="mounting a read-only tmpfs needs root (the unit tier checks a chmod-ed "
                                        "directory as another user)")
def test_a_read_only_out_is_one_line_and_exit_2_before_any_work(prepared, tmp_path):
    with mounted_tmpfs(tmp_path / "read_only", "ro,size=1m") as out:
        code, output = _train(prepared, out / "runs", "--epochs", 1)
        assert code == 2, output[-3000:]
        errors = _errors(output)
        assert len(errors) == 1 and f"{out} is not writable" in errors[0] and "--out" in errors[0], output[-3000:]
        assert len(output.splitlines()) == 1


def test_a_loss_that_becomes_nan_is_one_line_naming_what_to_resume_from_and_exit_3(prepared, tmp_path):
    code, output = _train(prepared, tmp_path, "--epochs", 2, "--lr", "1e10")
    assert code == 3, output[-3000:]
    errors = _errors(output)
    assert len(errors) == 1 and "non-finite loss" in errors[0] and "Lower the learning rate" in errors[0], output
    assert "no checkpoint with finite weights" in errors[0] or "the last finite weights are in" in errors[0]
    assert "Traceback" not in output and not list(tmp_path.glob("*/*/result.json"))
