"""Faults of ``molt train`` that end in a saved state, a non-zero exit status and one line: a full disk while a
checkpoint is written, concurrent runs claiming a run directory, an unwritable ``--out``, numbers no run can use,
and the command that resumes a stopped run. (Signals and processes: ``tests/integration/test_exact_resume.py`` and
``tests/integration/test_train_faults.py``.)"""
import errno
import os
import re
import threading

import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from molt.app.cli import _resume_command, main
from molt.app.train import (EXIT_NO_SPACE, AtomicCheckpointIO, NoSpaceLeftError, TrainingInterrupted, claim_version,
                            train)
from molt.config import load_config


def _checkpoint(value: float) -> dict:
    return {"state_dict": {"model.weight": torch.full((1000,), value)}, "global_step": 3}


def test_a_full_disk_removes_the_partial_file_says_the_size_needed_and_keeps_earlier_checkpoints(tmp_path,
                                                                                                  monkeypatch):
    io = AtomicCheckpointIO()
    last = tmp_path / "last.ckpt"
    io.save_checkpoint(_checkpoint(1.0), last)
    before = last.read_bytes()
    original = TorchCheckpointIO.save_checkpoint

    def full_disk(self, checkpoint, path, storage_options=None):
        with open(path, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", full_disk)
    with pytest.raises(NoSpaceLeftError) as stopped:
        io.save_checkpoint(_checkpoint(2.0), last)
    message = str(stopped.value)
    assert f"no space left on the device for {last}" in message and " MB, " in message and "free" in message
    assert "earlier checkpoints there are intact" in message and stopped.value.resumable
    assert stopped.value.exit_code == EXIT_NO_SPACE == 4
    assert last.read_bytes() == before and not list(tmp_path.glob(".*.partial"))
    with pytest.raises(NoSpaceLeftError) as first:
        io.save_checkpoint(_checkpoint(2.0), tmp_path / "new" / "best.ckpt")
    assert "start again" in str(first.value) and not first.value.resumable   # nothing earlier to resume from

    handed = []                           # under GracefulStop: the error is handed over, every process stops
    AtomicCheckpointIO(on_no_space=handed.append).save_checkpoint(_checkpoint(2.0), last)
    # the same message, but for the free space, read again at each failure (other processes write to this disk)
    def without_free_space(text):
        return re.sub(r"[\d.]+ MB are free", "N MB are free", text)

    assert [type(error) for error in handed] == [NoSpaceLeftError]
    assert without_free_space(str(handed[0])) == without_free_space(message) and "MB are free" in message
    assert last.read_bytes() == before and not list(tmp_path.glob(".*.partial"))

    def other_error(self, checkpoint, path, storage_options=None):
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", other_error)
    with pytest.raises(OSError, match="Input/output error"):
        io.save_checkpoint(_checkpoint(2.0), last)
    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", original)
    io.save_checkpoint(_checkpoint(3.0), last)
    assert torch.load(last, weights_only=True)["state_dict"]["model.weight"][0] == 3.0


def test_runs_started_together_claim_different_versions(tmp_path):
    (tmp_path / "version_0").mkdir(parents=True)
    (tmp_path / "version_2").mkdir()
    (tmp_path / "version_notes").mkdir()
    assert claim_version(tmp_path) == "version_3"
    claimed, start = [], threading.Barrier(8)

    def claim():
        start.wait()
        claimed.append(claim_version(tmp_path))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed, key=lambda name: int(name.split("_")[1])) == [f"version_{n}" for n in range(4, 12)]


def test_the_resume_command_repeats_the_arguments_with_resume_last():
    assert _resume_command(["train", "ave", "--data", "d x", "--out", "o", "--epochs", "3"]) == \
        "molt train ave --data 'd x' --out o --epochs 3 --resume last"
    assert _resume_command(["--quiet", "train", "ave", "--resume", "a.ckpt", "--out", "o"]) == \
        "molt --quiet train ave --out o --resume last"
    assert _resume_command(["train", "ave", "--resume=last"]) == "molt train ave --resume last"
    stopped = TrainingInterrupted(15, "stopped by SIGTERM")
    assert stopped.exit_code == 143 and stopped.resumable and TrainingInterrupted(2, "x").exit_code == 130


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a directory without write permission: chmod cannot "
                                              "make it read-only (the integration tier mounts a read-only tmpfs)")
def test_a_read_only_out_is_one_line_before_any_work(ave_data, tmp_path, caplog):
    out = tmp_path / "read_only"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["train", "ave", "--data", str(ave_data), "--out", str(out / "runs"), "--epochs", "1"]) == 2
    finally:
        out.chmod(0o755)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and f"{out} is not writable" in errors[0] and "--out" in errors[0], errors
    assert list(out.iterdir()) == []


def test_a_signal_before_the_first_step_stops_the_run_saying_so_and_restores_the_handlers(ave_data, tmp_path,
                                                                                           monkeypatch):
    """SIGTERM while the model is being built (before Lightning starts): the run stops when training would start,
    with exit status 143 and nothing to resume, and the process's own handlers are back afterwards."""
    import signal

    import molt.app.train as train_module

    build = train_module.build_model

    def build_then_signal(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)      # handled by train's handler: recorded, acted on later
        return build(*args, **kwargs)

    monkeypatch.setattr(train_module, "build_model", build_then_signal)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(load_config("ave_molt_tiny", {"trainer": {"max_epochs": 1}}), data=ave_data, out_dir=tmp_path,
              enable_progress_bar=False)
    assert stopped.value.exit_code == 143 and not stopped.value.resumable
    assert "stopped by SIGTERM before the first training step" in str(stopped.value)
    assert "start again with the same command" in str(stopped.value)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert not list(tmp_path.glob("*/version_0/checkpoints/*.ckpt"))
