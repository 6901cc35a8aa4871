"""Every task end to end through the generic trainer and CLI: synth -> prepare -> train -> eval, on generated data.

Each run is short (tiny backbones, tens of clips, a few epochs) and must beat the task's trivial predictions on
the test split, with the model selected on val.
"""
import json

import pytest
import torch
from torch.utils.data import DataLoader

from molt.app.cli import main
from molt.config import load_config
from molt.app.train import train


def _trivial_scores(task_head, dataset, key: str, value_of) -> float:
    """The head's ``key`` metric on ``dataset`` for outputs built by ``value_of(batch)`` (no model involved)."""
    task_head.reset_metrics()
    for batch in DataLoader(dataset, batch_size=4, shuffle=False):
        task_head.update_metrics(value_of(batch), batch)
    return task_head.compute_metrics()[key]


def _check_items_without_media(dataset) -> None:
    """What training from a feature cache reads is the item minus its media, never decoded."""
    full, light = dataset[1], dataset.item_without_media(1)
    assert set(light) == set(full) - {"frames", "audio"}
    for key, value in light.items():
        assert torch.equal(value, full[key]) if torch.is_tensor(value) else value == full[key]


def test_avs_s4_beats_all_background_and_all_foreground(tmp_path):
    from molt.tasks.avs.prepared import PreparedAVS, ensure_prepared

    data = tmp_path / "avs"
    assert main(["synth", "avs", "--setting", "s4", "--out", str(data), "--videos", "64", "--seed", "1"]) == 0
    config = load_config("avs_molt_tiny", {"trainer": {"max_epochs": 10, "batch_size": 8}})
    result = train(config, data=data, out_dir=tmp_path / "runs", enable_progress_bar=False)
    assert result["monitor"] == "val/mIoU"

    from molt.app.evaluate import load_trained

    head = load_trained(result["adapters"])[0].task
    test_set = PreparedAVS(ensure_prepared(data, setting="s4"), "test")
    size = test_set.task_options()["mask_size"]
    _check_items_without_media(test_set)

    def constant(logit):
        return lambda batch: {"mask_logits": torch.full((len(batch["video_id"]), 5, size, size), logit)}

    background = _trivial_scores(head, test_set, "mIoU", constant(-10.0))
    foreground = _trivial_scores(head, test_set, "mIoU", constant(10.0))
    assert background == pytest.approx(0.0) and foreground < 0.2
    assert result["test"]["mIoU"] > max(background, foreground) + 0.05
    assert 0.0 <= result["test"]["F_score"] <= 1.0

    out = tmp_path / "eval"
    assert main(["eval", "avs", "--data", str(data), "--checkpoint", result["adapters"], "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mIoU"] == pytest.approx(result["test"]["mIoU"], abs=1e-6)
    assert (out / "masks.png").stat().st_size > 1000


def test_avvp_beats_trivial_parsers(tmp_path):
    from molt.tasks.avvp.prepared import PreparedLLP, ensure_prepared

    data = tmp_path / "llp"
    assert main(["synth", "avvp", "--out", str(data), "--videos", "120", "--seed", "2"]) == 0
    config = load_config("avvp_molt_tiny", {"trainer": {"max_epochs": 15, "batch_size": 8},
                                            "optim": {"lr": 3e-3, "head_lr": 3e-3}})
    result = train(config, data=data, out_dir=tmp_path / "runs", enable_progress_bar=False)
    assert result["monitor"] == "val/segment_type_av_f1"

    from molt.app.evaluate import load_trained

    head = load_trained(result["adapters"])[0].task
    test_set = PreparedLLP(ensure_prepared(data), "test")
    classes = len(test_set.task_options()["class_names"])
    _check_items_without_media(test_set)

    def everywhere(batch):
        count = len(batch["video_id"])
        return {"segment_logits": torch.full((count, 10, 2, classes), 10.0),
                "video_prob": torch.ones(count, classes)}

    def nothing(batch):
        count = len(batch["video_id"])
        return {"segment_logits": torch.full((count, 10, 2, classes), -10.0), "video_prob": torch.zeros(count, classes)}

    trivial = max(_trivial_scores(head, test_set, "segment_type_av_f1", everywhere),
                  _trivial_scores(head, test_set, "segment_type_av_f1", nothing))
    assert result["test"]["segment_type_av_f1"] > trivial + 0.15
    assert result["test"]["event_type_av_f1"] > 0.2

    out = tmp_path / "eval"
    assert main(["eval", "avvp", "--data", str(data), "--checkpoint", result["adapters"], "--out", str(out)]) == 0
    assert (out / "parsing.png").stat().st_size > 1000


def test_eval_refuses_a_checkpoint_of_another_task(tmp_path):
    from molt.tasks.ave.synthetic import generate_ave

    data = tmp_path / "ave"
    generate_ave(data, num_videos=16, seed=0, image_size=64, fps=4, workers=1, show_progress=False)
    config = load_config("ave_molt_tiny", {"trainer": {"max_epochs": 1, "batch_size": 8}})
    result = train(config, data=data, out_dir=tmp_path / "runs", enable_progress_bar=False)
    assert main(["eval", "avs", "--data", str(data), "--checkpoint", result["adapters"]]) == 2
    with pytest.raises(ValueError, match="trained for task 'ave', not 'avs'"):
        from molt.app.evaluate import evaluate

        evaluate(result["adapters"], data=data, task="avs")


def test_avqa_pipeline_reports_every_family_and_type(tmp_path, capsys):
    from molt.tasks.avqa.reader import QUESTION_TYPES

    data = tmp_path / "avqa"
    assert main(["synth", "avqa", "--out", str(data), "--videos", "20", "--seed", "3"]) == 0
    # the first release's test file beside the corrected one: here the same questions, one of them repeated
    questions = json.loads((data / "avqa-test.json").read_text())
    (data / "original").mkdir()
    (data / "original" / "avqa-test.json").write_text(json.dumps(questions + questions[:1]))
    config = load_config("avqa_molt_tiny", {"trainer": {"max_epochs": 2, "batch_size": 16}})
    result = train(config, data=data, out_dir=tmp_path / "runs", enable_progress_bar=False)
    assert result["monitor"] == "val/accuracy" and result["global_step"] > 0
    for family in ("AQ", "VQ", "AVQ"):
        assert 0.0 <= result["test"][f"{family}/accuracy"] <= 1.0
    from molt.tasks.avqa.prepared import PreparedAVQA, ensure_prepared

    _check_items_without_media(PreparedAVQA(ensure_prepared(data), "train"))

    out = tmp_path / "eval"
    capsys.readouterr()
    assert main(["eval", "avqa", "--data", str(data), "--checkpoint", result["adapters"], "--out", str(out),
                 "--split", "test"]) == 0
    printed = capsys.readouterr().out
    assert "AQ" in printed and "AVQ" in printed and "Avg" in printed        # the paper's Tab. 1 shape
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(result["test"]["accuracy"], abs=1e-6)
    assert len(QUESTION_TYPES) == 9 and all(path.endswith(".png") for path in metrics["figures"])
    assert printed.count("test (corrected test file) split") == 1

    assert main(["eval", "avqa", "--data", str(data), "--checkpoint", result["adapters"], "--out",
                 str(tmp_path / "eval_original"), "--test-json", "original"]) == 0
    printed = capsys.readouterr().out
    assert f"test_original (original test file) split, {len(questions) + 1} items" in printed
    original = json.loads((tmp_path / "eval_original" / "metrics.json").read_text())
    assert original["split"] == "test_original" and original["items"] == metrics["items"] + 1
