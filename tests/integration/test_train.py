"""End to end on a tiny synthetic AVE set: generate -> prepare -> train -> evaluate -> resume."""
import json

import pytest
import torch

from molt.config import load_config
from molt.tasks.ave.prepared import PreparedAVE, ensure_prepared
from molt.tasks.ave.synthetic import generate_ave
from molt.tasks.ave import majority_accuracy
from molt.app.evaluate import evaluate, load_trained
from molt.app.train import train


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_ave")
    generate_ave(root, num_videos=128, seed=3, image_size=64, fps=4, workers=1, show_progress=False)
    return ensure_prepared(root, show_progress=False)


def _config(epochs, **method):
    return load_config("ave_molt_tiny", {
        "trainer": {"max_epochs": epochs, "batch_size": 8, "seed": 0, "log_every_n_steps": 1},
        "method_config": method, "optim": {"lr": 3e-3, "head_lr": 3e-3}})


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return train(_config(16), data=prepared, out_dir=out, enable_progress_bar=False), out


def test_training_learns_beyond_majority(trained, prepared, tmp_path):
    result, _ = trained
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(result["run_dir"])
    events.Reload()
    task_loss = [e.value for e in events.Scalars("train/task_loss")]
    steps_per_epoch = len(PreparedAVE(prepared, "train")) // 8 + 1
    first, last = task_loss[:steps_per_epoch], task_loss[-steps_per_epoch:]
    assert sum(last) / len(last) < 0.5 * sum(first) / len(first)
    train_labels = PreparedAVE(prepared, "train").segment_labels()
    val_baseline = majority_accuracy(train_labels, PreparedAVE(prepared, "val").segment_labels())
    assert result["best_val_accuracy"] > val_baseline + 0.05
    fitted = evaluate(result["adapters"], data=prepared, split="train", out_dir=tmp_path)
    assert fitted["accuracy"] > majority_accuracy(train_labels, train_labels) + 0.15
    assert result["trainable_params"] < result["total_params"]


def test_checkpoints_hold_only_trainable_weights(trained):
    result, _ = trained
    state = torch.load(result["best_checkpoint"], map_location="cpu", weights_only=False)
    keys = set(state["state_dict"])
    assert keys and all(k.startswith(("model.features.method.", "model.task.")) for k in keys)
    assert not any(k.startswith(("model.features.visual.", "model.features.audio.")) for k in keys)


def test_eval_reproduces_test_accuracy_and_draws_timelines(trained, prepared, tmp_path):
    result, _ = trained
    metrics = evaluate(result["adapters"], data=prepared, split="test", out_dir=tmp_path, batch_size=5)
    assert metrics["accuracy"] == pytest.approx(result["test"]["accuracy"], abs=1e-6)
    assert json.loads((tmp_path / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    assert (tmp_path / "timelines.png").stat().st_size > 1000
    model, config, options = load_trained(result["best_checkpoint"])
    assert config.backbone == "tiny" and options["num_classes"] == PreparedAVE(prepared, "test").num_classes


def test_resume_continues_from_saved_step(prepared, tmp_path):
    first = train(_config(1), data=prepared, out_dir=tmp_path, run_name="resume", enable_progress_bar=False)
    steps_per_epoch = first["global_step"]
    assert steps_per_epoch > 0
    resumed = train(_config(2), data=prepared, out_dir=tmp_path, run_name="resume", resume="last",
                    enable_progress_bar=False)
    assert resumed["run_dir"] == first["run_dir"]
    assert resumed["global_step"] == 2 * steps_per_epoch


def test_same_seed_same_result(prepared, tmp_path):
    runs = [train(_config(1), data=prepared, out_dir=tmp_path / str(i), enable_progress_bar=False)
            for i in range(2)]
    assert runs[0]["test"]["accuracy"] == runs[1]["test"]["accuracy"]
    assert runs[0]["test"]["loss"] == pytest.approx(runs[1]["test"]["loss"], rel=1e-5)


def test_predict_one_video_file(trained, prepared, tmp_path):
    from molt.app.cli import main

    result, _ = trained
    video = sorted((prepared.parent / "AVE").glob("*.mp4"))[0]
    out = tmp_path / "pred.json"
    assert main(["predict", "ave", "--checkpoint", result["adapters"], "--video", str(video), "--json", str(out),
                 "--out", str(tmp_path / "pictures")]) == 0
    prediction = json.loads(out.read_text())
    assert len(prediction["segments"]) == 10
    names = set(PreparedAVE(prepared, "test").categories) | {"background"}
    assert prediction["clip_category"] in names
    assert all(s["label"] in names and 0.0 <= s["event_probability"] <= 1.0 for s in prediction["segments"])
    assert main(["predict", "ave", "--checkpoint", result["adapters"], "--video", str(tmp_path / "none.mp4")]) == 2
