"""AVVP head: shapes, MMIL pooling, prediction rule, weak-label loss, batch-size independent metrics, picture."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import fit_head
from molt.tasks import TaskHead, build_head
from molt.tasks.avvp import AVVPHead, avvp_scores

DIM, C, T = 16, 5, 10
NAMES = [f"class {i}" for i in range(C)]


def make_task(**kwargs) -> AVVPHead:
    torch.manual_seed(0)
    options = {"dim": DIM, "class_names": NAMES, "hidden_dim": 32, "num_heads": 4, "dropout": 0.0}
    options.update(kwargs)
    return build_head("avvp", **options)


def tokens(clips: int, k: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(clips * T, k, DIM, generator=torch.Generator().manual_seed(seed))


def make_batch(clips: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(clips, C, generator=generator) < 0.4).float()
    audio = (torch.rand(clips, T, C, generator=generator) < 0.5).float() * labels[:, None]
    visual = (torch.rand(clips, T, C, generator=generator) < 0.5).float() * labels[:, None]
    valid = torch.tensor([float(i % 3 != 0) for i in range(clips)])       # every third clip: train-like
    return {"labels": labels, "audio_labels": audio * valid[:, None, None],
            "visual_labels": visual * valid[:, None, None], "label_valid": valid,
            "video_id": [f"clip{i}" for i in range(clips)]}


def test_shapes_and_pooling():
    task = make_task()
    assert isinstance(task, TaskHead) and task.name == "avvp" and task.num_classes == C
    out = task(tokens(3), tokens(3, k=2, seed=1), make_batch(3))
    assert out["segment_logits"].shape == (3, T, 2, C)
    for key in ("video_prob", "audio_prob", "visual_prob"):
        assert out[key].shape == (3, C)
        assert bool(((out[key] >= 0) & (out[key] <= 1 + 1e-6)).all())
    probabilities = torch.sigmoid(out["segment_logits"])
    # MMIL pools are weighted means of the segment probabilities
    assert bool((out["audio_prob"] <= probabilities[:, :, 0].amax(dim=1) + 1e-6).all())
    assert bool((out["video_prob"] >= probabilities.amin(dim=(1, 2)) - 1e-6).all())
    prediction = task.predict(out)
    assert prediction.shape == (3, T, 2, C) and prediction.dtype == torch.int64
    assert task(tokens(2), tokens(2), {})["segment_logits"].shape == (2, T, 2, C)   # T from num_segments
    with pytest.raises(ValueError, match="B\\*T"):
        task(torch.randn(15, 4, DIM), torch.randn(15, 4, DIM), {})
    with pytest.raises(ValueError, match="audio tokens"):
        task(tokens(2), torch.randn(20, 4, DIM + 1), {})
    with pytest.raises(ValueError, match="num_classes or class_names"):
        AVVPHead(dim=DIM)


def test_single_modality_reads_only_its_tokens():
    task = make_task(modalities="audio")
    out = task(None, tokens(2), make_batch(2))
    assert out["segment_logits"].shape == (2, T, 2, C)
    assert "visual" not in task.pool
    with pytest.raises(ValueError, match="visual tokens"):
        make_task(modalities="visual")(None, tokens(2), {})


def test_prediction_filters_segments_by_video_prediction():
    task = make_task()
    logits = torch.full((1, T, 2, C), -3.0)
    logits[0, 2:5, 0, 1] = 3.0          # class 1 heard on 2-5, and the clip is predicted to hold it
    logits[0, :, 1, 2] = 3.0            # class 2 seen everywhere, but the clip is predicted not to hold it
    video = torch.tensor([[0.1, 0.9, 0.2, 0.1, 0.1]])
    prediction = task.predict({"segment_logits": logits, "video_prob": video})
    assert prediction[0, :, 0, 1].tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    assert prediction.sum() == 3


def test_loss_matches_definition_and_is_finite():
    task = make_task(guided_weight=0.5)
    batch = make_batch(4)
    out = task(tokens(4), tokens(4, seed=1), batch)
    terms = task.loss_terms(out, batch)
    y = batch["labels"]
    assert torch.allclose(terms["video"], F.binary_cross_entropy(out["video_prob"].clamp(1e-7, 1 - 1e-7), y))
    assert torch.allclose(terms["visual"], F.binary_cross_entropy(out["visual_prob"].clamp(1e-7, 1 - 1e-7),
                                                                  0.9 * y + 0.05))
    loss = task.loss(out, batch)
    assert torch.allclose(loss, terms["video"] + 0.5 * (terms["audio"] + terms["visual"]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in task.parameters() if p.requires_grad)
    # extreme probabilities stay finite (clamped); under autocast the loss is still computed in float32
    extreme = {"video_prob": torch.tensor([[1.0, 0.0]]), "audio_prob": torch.tensor([[0.0, 1.0]]),
               "visual_prob": torch.tensor([[1.0, 1.0]])}
    assert math.isfinite(make_task(num_classes=2, class_names=None).loss(extreme, {"labels": torch.tensor([[0., 1.]])}))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = task.loss(task(tokens(4), tokens(4, seed=1), batch), batch)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    with pytest.raises(ValueError, match="weak labels"):
        task.loss(out, {"labels": torch.zeros(4, C + 1)})


def test_overfits_weak_labels_of_a_tiny_batch():
    task = make_task()
    batch = make_batch(6, seed=2)
    visual, audio = tokens(6, seed=3), tokens(6, seed=4)
    losses = fit_head(task, visual, audio, batch, lr=5e-3, steps=25)
    assert losses[-1] < losses[0] / 3, losses
    task.eval()
    task.update_metrics(task(visual, audio, batch), batch)
    assert task.compute_metrics()["video_f1"] == 1.0


def test_metrics_are_batch_size_independent_and_follow_the_definitions():
    task = make_task()
    task.eval()
    batch = make_batch(7, seed=5)
    with torch.no_grad():
        outputs = task(tokens(7, seed=6), tokens(7, seed=7), batch)
    task.update_metrics(outputs, batch)
    whole = task.compute_metrics()
    task.reset_metrics()
    for start, stop in ((0, 2), (2, 3), (3, 7)):
        part = {k: v[start:stop] for k, v in batch.items()}
        task.update_metrics({k: v[start:stop] for k, v in outputs.items()}, part)
    assert task.compute_metrics() == pytest.approx(whole)
    # segment/event figures: only clips with label_valid, as avvp_scores on those clips
    valid = batch["label_valid"] > 0
    prediction = task.predict(outputs)[valid]
    expected = avvp_scores(prediction[:, :, 0], prediction[:, :, 1], batch["audio_labels"][valid],
                           batch["visual_labels"][valid])
    assert {k: whole[k] for k in expected} == pytest.approx(expected)
    assert "segment_av_f1" in whole and 0.0 <= whole["video_f1"] <= 1.0


def test_metrics_without_segment_labels():
    task = make_task()
    batch = make_batch(3)
    batch["label_valid"] = torch.zeros(3)
    task.update_metrics(task(tokens(3), tokens(3), batch), batch)
    metrics = task.compute_metrics()
    assert math.isnan(metrics["segment_av_f1"]) and math.isnan(metrics["event_type_av_f1"])
    assert not math.isnan(metrics["video_f1"])
    # the same state keys whatever the batch holds: DDP adds the states of processes key by key
    keys = set(task.metric_state)
    task.reset_metrics()
    task.update_metrics(task(tokens(3), tokens(3), make_batch(3)), make_batch(3))
    assert set(task.metric_state) == keys
    task.reset_metrics()
    task.update_metrics(task(tokens(3), tokens(3), {}), {"labels": make_batch(3)["labels"]})
    assert set(task.metric_state) == keys and math.isnan(task.compute_metrics()["segment_audio_f1"])
    task.reset_metrics()
    assert math.isnan(task.compute_metrics()["video_f1"])


def test_save_figures_draws_parsing(tmp_path):
    task = make_task()
    batch = make_batch(4)
    with torch.no_grad():
        outputs = task(tokens(4), tokens(4), batch)
    paths = task.save_figures([(outputs, batch)], tmp_path, {"class_names": NAMES})
    assert paths == [tmp_path / "parsing.png"] and paths[0].stat().st_size > 1000
    train_like = dict(batch, label_valid=torch.zeros(4))
    assert task.save_figures([(outputs, train_like)], tmp_path / "none", {}) == []
