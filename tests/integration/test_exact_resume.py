"""A run killed and resumed with ``--resume last`` ends where the uninterrupted run with the same seed ends:
the same adapter tensors, bit for bit, and the same metrics (CPU, tiny preset, one thread in every process)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from molt.checkpoints import read_training_checkpoint

EPOCHS, BATCH = 3, 4   # 32 training clips -> 8 steps per epoch


@pytest.fixture(scope="module")
def prepared(ave_prepared_40):
    return ave_prepared_40


def _molt(data, out, *extra):
    command = [sys.executable, "-m", "molt", "train", "ave", "--data", str(data), "--out", str(out), "--batch-size",
               str(BATCH), "--seed", "5", *map(str, extra)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
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


def test_ddp_on_two_processes_killed_mid_epoch_then_resumed_ends_bitwise_identical(prepared, tmp_path):
    reference = tmp_path / "uninterrupted"
    _finish(_molt(prepared, reference, "--epochs", EPOCHS, *DDP))
    expected = _outcome(reference)
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
