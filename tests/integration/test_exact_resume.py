"""A run killed and resumed with ``--resume last`` ends where the uninterrupted run with the same seed ends:
the same adapter tensors, bit for bit, and the same metrics (CPU, tiny preset, one thread in every process).
SIGTERM and SIGINT stop a run with a resumable checkpoint and exit status 128 + the signal's number; the kill points
of the signal tests are exact (``fault_injection.py``), not timed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from molt.checkpoints import read_training_checkpoint

EPOCHS, BATCH = 3, 4   # 32 training clips -> 8 steps per epoch


@pytest.fixture(scope="module")
def prepared(ave_prepared_40):
    return ave_prepared_40


FAULT_INJECTION = Path(__file__).with_name("fault_injection.py")


def _molt(data, out, *extra, fault=None):
    program = [str(FAULT_INJECTION)] if fault else ["-m", "molt"]
    command = [sys.executable, *program, "train", "ave", "--data", str(data), "--out", str(out), "--batch-size",
               str(BATCH), "--seed", "5", *map(str, extra)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if fault:
        environment["MOLT_TEST_FAULT"] = fault
    # a session of its own, so a kill reaches the DDP worker processes too
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
                            start_new_session=True)


def _kill(process) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def _finish(process) -> None:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]


def _curves(run):
    """``tag -> [(step, value), ...]`` of every scalar TensorBoard shows for the run (purged steps dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _outcome(out):
    run = out / "ave_molt_tiny" / "version_0"
    result = json.loads((run / "result.json").read_text())
    return load_file(str(run / "adapters" / "best" / "adapter_model.safetensors")), result, _curves(run)


def _assert_same(resumed, uninterrupted, steps_per_epoch=8):
    (tensors, result, curves), (reference, expected, reference_curves) = resumed, uninterrupted
    assert curves == reference_curves           # the same curve: no step repeated, missing or different
    assert "train/loss" in curves and "val/accuracy" in curves
    assert set(tensors) == set(reference)
    different = [name for name in tensors if not (tensors[name] == reference[name]).all()]
    assert different == [], f"{len(different)} of {len(tensors)} tensors differ, e.g. {different[:3]}"
    assert result["test"] == expected["test"] and result["best_val_accuracy"] == expected["best_val_accuracy"]
    assert result["global_step"] == expected["global_step"] == EPOCHS * steps_per_epoch


@pytest.fixture(scope="module")
def uninterrupted(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    _finish(_molt(prepared, out, "--epochs", EPOCHS))
    return _outcome(out)


def test_killed_mid_epoch_then_resumed_ends_bitwise_identical(prepared, uninterrupted, tmp_path):
    process = _molt(prepared, tmp_path, "--epochs", EPOCHS)
    last = tmp_path / "ave_molt_tiny" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)   # well into the next epoch
    _kill(process)
    assert read_training_checkpoint(last)["global_step"] < EPOCHS * 8
    _finish(_molt(prepared, tmp_path, "--epochs", EPOCHS, "--resume", "last"))
    _assert_same(_outcome(tmp_path), uninterrupted)


def test_stopped_after_a_completed_epoch_then_resumed_ends_bitwise_identical(prepared, uninterrupted, tmp_path):
    _finish(_molt(prepared, tmp_path, "--epochs", 1))
    assert read_training_checkpoint(tmp_path / "ave_molt_tiny" / "version_0" / "checkpoints" /
                                    "last.ckpt")["global_step"] == 8
    _finish(_molt(prepared, tmp_path, "--epochs", EPOCHS, "--resume", "last"))
    _assert_same(_outcome(tmp_path), uninterrupted)


def test_killed_after_a_mid_epoch_checkpoint_resumes_mid_epoch_bitwise_identical(prepared, uninterrupted, tmp_path):
    process = _molt(prepared, tmp_path, "--epochs", EPOCHS, "--checkpoint-every-n-steps", 3)
    last = tmp_path / "ave_molt_tiny" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    _kill(process)                           # right after the first checkpoint: step 3 of the 8 of epoch 0
    state = read_training_checkpoint(last)
    assert state["global_step"] % 8 != 0, state["global_step"]
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] == state["global_step"] % 8
    _finish(_molt(prepared, tmp_path, "--epochs", EPOCHS, "--checkpoint-every-n-steps", 3, "--resume", "last"))
    _assert_same(_outcome(tmp_path), uninterrupted)


DDP = ("--strategy", "ddp", "--devices", 2, "--accelerator", "cpu")


@pytest.fixture(scope="module")
def ddp_uninterrupted(prepared, tmp_path_factory):
    reference = tmp_path_factory.mktemp("ddp_uninterrupted")
    _finish(_molt(prepared, reference, "--epochs", EPOCHS, *DDP))
    return _outcome(reference)


def test_ddp_on_two_processes_killed_mid_epoch_then_resumed_ends_bitwise_identical(prepared, ddp_uninterrupted,
                                                                                    tmp_path):
    expected = ddp_uninterrupted
    # 32 clips on 2 ranks in batches of 4: 4 steps per epoch; the test figures are those of one process
    assert expected[1]["global_step"] == EPOCHS * 4
    evaluated = subprocess.run([sys.executable, "-m", "molt", "--quiet", "eval", "ave", "--data", str(prepared),
                                "--checkpoint", expected[1]["adapters"]], capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads(evaluated.stdout[:evaluated.stdout.rindex("}") + 1])["accuracy"] == \
        pytest.approx(expected[1]["test"]["accuracy"], abs=1e-6)

    killed = tmp_path / "killed"
    process = _molt(prepared, killed, "--epochs", EPOCHS, "--checkpoint-every-n-steps", 3, *DDP)
    last = killed / "ave_molt_tiny" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    _kill(process)
    state = read_training_checkpoint(last)
    assert state["global_step"] % 4 != 0, state["global_step"]
    _finish(_molt(prepared, killed, "--epochs", EPOCHS, "--checkpoint-every-n-steps", 3, "--resume", "last", *DDP))
    _assert_same(_outcome(killed), expected, steps_per_epoch=4)


# (where the process is signalled, with which signal; what last.ckpt holds then: global step, or None for "less than")
FAULTS = {
    # SIGKILL right after the checkpoint of the epoch's second-to-last batch (--checkpoint-every-n-steps 1)
    "kill after the checkpoint before the epoch's last batch": ("save:7:SIGKILL", 7),
    # after the epoch's last batch, in its validation: no checkpoint of step 8 exists yet (one written before
    # validation resumed without validating that epoch), so the run resumes from step 7 and trains batch 8 again
    "kill between the last batch's checkpoint and validation": ("val:8:SIGKILL", 7),
    # right after the first file of step 8 (best.ckpt, written at the end of validation), before last.ckpt
    "kill at the epoch boundary": ("save:8:SIGKILL", 7),
    # SIGTERM in the middle of an epoch: last.ckpt of that step, then exit 143
    "sigterm mid-epoch": ("train:5:SIGTERM", 6),
    # SIGTERM in an epoch's last batch: the epoch ends (validation, checkpoints), then exit 143
    "sigterm in the epoch's last batch": ("train:15:SIGTERM", 16),
    # SIGINT (Ctrl+C) during validation: the epoch ends, then exit 130
    "sigint during validation": ("val:16:SIGINT", 16),
}


@pytest.mark.parametrize("fault", list(FAULTS), ids=lambda name: name.replace(" ", "-"))
def test_killed_or_signalled_at_an_exact_point_then_resumed_ends_bitwise_identical(prepared, uninterrupted, tmp_path,
                                                                                    fault):
    spec, step = FAULTS[fault]
    name = spec.rsplit(":", 1)[1]
    number = getattr(signal, name)
    process = _molt(prepared, tmp_path, "--epochs", EPOCHS, "--checkpoint-every-n-steps", 1, fault=spec)
    output, _ = process.communicate(timeout=600)
    run = tmp_path / "ave_molt_tiny" / "version_0"
    assert not (run / "result.json").exists()
    if number == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL, output[-3000:]
    else:
        assert process.returncode == 128 + number, output[-3000:]
        errors = [line for line in output.splitlines() if " ERROR " in line]
        assert len(errors) == 1 and f"stopped by {name}" in errors[0], output[-3000:]
        assert f"--out {tmp_path}" in errors[0] and errors[0].endswith("--resume last"), errors
        assert "Traceback" not in output
    assert read_training_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == step
    assert not list((run / "checkpoints").glob(".*.partial"))
    _finish(_molt(prepared, tmp_path, "--epochs", EPOCHS, "--checkpoint-every-n-steps", 1, "--resume", "last"))
    _assert_same(_outcome(tmp_path), uninterrupted)


def test_ddp_sigterm_to_the_first_process_stops_both_with_one_checkpoint_and_resumes_bitwise_identical(
        prepared, ddp_uninterrupted, tmp_path):
    """SIGTERM reaches the first process only (as ``kill PID`` does): both processes stop after the same batch,
    the first writes last.ckpt, one line is logged, exit status 143; the resumed run equals the uninterrupted one."""
    process = _molt(prepared, tmp_path, "--epochs", EPOCHS, *DDP, fault="train:5:SIGTERM")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 143, output[-3000:]
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "stopped by SIGTERM at global step 6" in errors[0], output[-3000:]
    last = tmp_path / "ave_molt_tiny" / "version_0" / "checkpoints" / "last.ckpt"
    assert read_training_checkpoint(last)["global_step"] == 6        # 4 steps per epoch: mid-epoch 2
    assert sorted(path.name for path in (tmp_path / "ave_molt_tiny").iterdir()) == ["version_0"]
    _finish(_molt(prepared, tmp_path, "--epochs", EPOCHS, "--resume", "last", *DDP))
    _assert_same(_outcome(tmp_path), ddp_uninterrupted, steps_per_epoch=4)


def test_ctrl_c_to_the_process_group_with_dataloader_workers_stops_cleanly_and_resumes_bitwise_identical(
        prepared, tmp_path):
    """SIGINT to the whole process group, as Ctrl+C in a terminal sends it: the DataLoader workers (forked, with the
    run's handler) keep serving batches, the run stops after the batch with last.ckpt and exit status 130, and the
    resumed run equals an uninterrupted run with the same workers."""
    workers = ("--workers", 2)
    _finish(_molt(prepared, tmp_path / "uninterrupted", "--epochs", EPOCHS, *workers))
    stopped = tmp_path / "stopped"
    process = _molt(prepared, stopped, "--epochs", EPOCHS, *workers, fault="train:5:SIGINT:group")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 130, output[-3000:]
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "stopped by SIGINT at global step 6" in errors[0], output[-3000:]
    assert "Traceback" not in output and "DataLoader worker" not in output
    _finish(_molt(prepared, stopped, "--epochs", EPOCHS, *workers, "--resume", "last"))
    _assert_same(_outcome(stopped), _outcome(tmp_path / "uninterrupted"))
