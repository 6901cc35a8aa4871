"""AVE task: head shapes, prediction rule, loss (masking, overfit), segment accuracy, majority baseline, picture."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import fit_head
from molt.tasks import TaskHead, build_head
from molt.tasks.ave import AVEHeadConfig, AVEHead, majority_accuracy, majority_class, plot_timelines
from molt.tasks.ave.head import clip_targets, segment_targets

DIM, C, T = 16, 5, 10


def one_hot(targets: torch.Tensor, num_classes: int = C) -> torch.Tensor:
    return F.one_hot(targets, num_classes + 1).float()


def make_task(**kwargs) -> AVEHead:
    torch.manual_seed(0)
    options = dict(dim=DIM, num_classes=C, hidden_dim=32, num_heads=4, dropout=0.0)
    options.update(kwargs)
    return build_head("ave", **options)


def tokens(batch: int, k: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch * T, k, DIM, generator=torch.Generator().manual_seed(seed))


def test_output_shapes_and_interface():
    task = make_task()
    assert isinstance(task, TaskHead) and task.name == "ave"
    labels = one_hot(torch.full((2, T), C))
    out = task(tokens(2, k=4), tokens(2, k=3, seed=1), {"labels": labels})
    assert out["event_logits"].shape == (2, T)
    assert out["class_logits"].shape == (2, C)
    assert task.predict(out).shape == (2, T) and task.predict(out).dtype == torch.int64
    # without shape information in the batch the head falls back to num_segments
    assert task(tokens(2), tokens(2), {})["event_logits"].shape == (2, T)
    with pytest.raises(ValueError, match="B\\*T"):
        task(torch.randn(15, 4, DIM), torch.randn(15, 4, DIM), {})
    with pytest.raises(ValueError, match="visual tokens"):
        task(torch.randn(20, 4, DIM + 1), tokens(2), {})


def test_prediction_rule():
    task = make_task()
    event_logits = torch.tensor([[-3.0, -0.01, 0.01, 3.0], [2.0, 2.0, -2.0, 0.0]])
    class_logits = torch.tensor([[0.1, 2.0, 0.3, -1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 5.0]])
    predictions = task.predict({"event_logits": event_logits, "class_logits": class_logits})
    # sigmoid(0) = 0.5 is not above the threshold -> background
    assert predictions.tolist() == [[C, C, 1, 1], [4, 4, C, C]]


def test_loss_matches_definition_and_masks_background_clips():
    task = make_task()
    targets = torch.tensor([[C] * T, [2] * 3 + [C] * 7])
    batch = {"labels": one_hot(targets)}
    out = {"event_logits": torch.randn(2, T, requires_grad=True), "class_logits": torch.randn(2, C, requires_grad=True)}
    terms = task.loss_terms(out, batch)
    expected_event = F.binary_cross_entropy_with_logits(out["event_logits"], (targets != C).float())
    expected_category = F.cross_entropy(out["class_logits"][1:], torch.tensor([2]))
    assert torch.allclose(terms["event"], expected_event)
    assert torch.allclose(terms["category"], expected_category)
    # the all-background clip's class logits get no gradient from the category term
    terms["category"].backward()
    assert out["class_logits"].grad[0].abs().sum() == 0 and out["class_logits"].grad[1].abs().sum() > 0

    # a batch of only all-background clips: no NaN, category term is exactly zero, backward works
    task = make_task(category_weight=2.0)
    batch = {"labels": one_hot(torch.full((2, T), C))}
    out = task(tokens(2), tokens(2, seed=1), batch)
    loss = task.loss(out, batch)
    assert torch.isfinite(loss)
    assert task.loss_terms(out, batch)["category"].item() == 0.0
    loss.backward()


def test_clip_and_segment_targets():
    targets = torch.tensor([[C, 1, 1, 3], [C, C, C, C], [2, 2, 0, 0]])
    assert clip_targets(targets, C).tolist() == [1, -1, 0]  # most frequent; tie -> lowest index
    assert segment_targets(one_hot(targets), C).tolist() == targets.tolist()
    assert segment_targets(targets, C).tolist() == targets.tolist()
    with pytest.raises(ValueError, match="C \\+ 1"):
        segment_targets(torch.zeros(1, T, C + 2), C)
    with pytest.raises(ValueError, match="class indices"):
        segment_targets(torch.full((1, T), C + 1), C)


def test_overfit_tiny_batch():
    task = make_task()
    visual, audio = tokens(4, seed=2), tokens(4, seed=3)
    targets = torch.tensor([[C] * T, [1] * 5 + [C] * 5, [C] * 2 + [3] * 8, [4] * T])
    batch = {"labels": one_hot(targets)}
    losses = fit_head(task, visual, audio, batch, lr=3e-3, steps=20)
    assert losses[-1] < losses[0] / 4, losses
    task.eval()
    with torch.no_grad():
        assert (task.predict(task(visual, audio, batch)) == targets).float().mean() > 0.9


def _outputs_for(predictions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits whose predictions are ``predictions`` (one event class per clip, background = C)."""
    event_logits = torch.where(predictions == C, -4.0, 4.0)
    classes = torch.where(predictions == C, 0, predictions).amax(dim=1)
    return {"event_logits": event_logits, "class_logits": F.one_hot(classes, C).float() * 5}


def test_accuracy_counts_are_batch_size_independent():
    task = make_task()
    targets = torch.tensor([[C] * T, [1] * 5 + [C] * 5, [2] * T, [C] * 4 + [0] * 6, [3] * T])
    predictions = targets.clone()
    predictions[0, :3] = 4           # 3 wrong
    predictions[1, 5:] = 1           # 5 wrong
    predictions[2] = C               # 10 wrong
    # clip 3 right, clip 4 right (predicted with the wrong category on nothing)
    outputs = _outputs_for(predictions)
    assert torch.equal(task.predict(outputs), predictions)
    expected = 1 - 18 / (5 * T)

    task.reset_metrics()
    task.update_metrics(outputs, {"labels": one_hot(targets)})
    all_at_once = task.compute_metrics()
    task.reset_metrics()
    for i in range(len(targets)):
        task.update_metrics({k: v[i:i + 1] for k, v in outputs.items()}, {"labels": one_hot(targets[i:i + 1])})
    one_by_one = task.compute_metrics()
    assert all_at_once["accuracy"] == pytest.approx(expected)
    assert one_by_one == all_at_once
    # unequal batches (2 + 3) give the same figure too, not a mean of per-batch means
    task.reset_metrics()
    for part in (slice(0, 2), slice(2, 5)):
        task.update_metrics({k: v[part] for k, v in outputs.items()}, {"labels": one_hot(targets[part])})
    assert task.compute_metrics()["accuracy"] == pytest.approx(expected)
    task.reset_metrics()
    assert math.isnan(task.compute_metrics()["accuracy"])


def test_accuracy_any_label_uses_valid_labels():
    task = make_task()
    targets = torch.tensor([[1] * T])
    predictions = torch.tensor([[2] * T])
    valid = one_hot(targets) + one_hot(predictions)  # the same video also annotated with class 2
    task.update_metrics(_outputs_for(predictions), {"labels": one_hot(targets), "valid_labels": valid})
    metrics = task.compute_metrics()
    assert metrics["accuracy"] == 0.0 and metrics["accuracy_any_label"] == 1.0


@pytest.mark.parametrize("modality, other", [("audio", "visual"), ("visual", "audio")])
def test_single_modality_head_ignores_the_other_tokens(modality, other):
    task = make_task(modalities=modality).eval()
    inputs = {"visual": tokens(2, seed=4), "audio": tokens(2, seed=5)}
    reference = task(inputs["visual"], inputs["audio"], {})
    changed = dict(inputs, **{other: tokens(2, seed=6) * 10})
    out = task(changed["visual"], changed["audio"], {})
    for key in reference:
        assert torch.equal(out[key], reference[key])
    missing = dict(inputs, **{other: None})
    assert torch.equal(task(missing["visual"], missing["audio"], {})["event_logits"], reference["event_logits"])
    assert not any(name.startswith(f"pool.{other}") or name.startswith(f"project.{other}")
                   for name, _ in task.named_parameters())
    # the two-modality head does depend on both
    both = make_task().eval()
    assert not torch.equal(both(inputs["visual"], inputs["audio"], {})["event_logits"],
                           both(changed["visual"], changed["audio"], {})["event_logits"])


def test_majority_baseline():
    train = torch.tensor([[C, C, C, 1], [1, 1, C, 2]])
    assert majority_class(train) == C
    assert majority_class(one_hot(train)) == C
    evaluation = torch.tensor([[C, 1, 1, 1], [C, C, 2, 0]])
    assert majority_accuracy(train, evaluation) == pytest.approx(3 / 8)
    assert majority_class(torch.tensor([[2, 1, 1, 2]])) == 1  # tie -> lowest index


def test_build_task_and_validation():
    task = build_head("ave", dim=DIM, num_classes=C, hidden_dim=32, class_names=[f"c{i}" for i in range(C)])
    assert isinstance(task, AVEHead) and task.background_index == C
    with pytest.raises(ValueError, match="unknown task"):
        build_head("segmentation", dim=DIM, num_classes=C)
    with pytest.raises(ValueError, match="hidden_size"):
        build_head("ave", dim=DIM, num_classes=C, hidden_size=32)
    with pytest.raises(ValueError, match="modalities"):
        AVEHead(AVEHeadConfig(modalities="text"), dim=DIM, num_classes=C)
    with pytest.raises(ValueError, match="class_names"):
        AVEHead(dim=DIM, num_classes=C, class_names=["a"])
    # metric counters never enter the state dict
    assert not any("correct" in key or "total" in key for key in task.state_dict())


def test_plot_timelines_writes_png(tmp_path):
    targets = torch.tensor([[C] * 3 + [1] * 7, [0] * T, [C] * T])
    predictions = torch.tensor([[C] * 4 + [1] * 6, [0] * 5 + [C] * 5, [C] * T])
    names = [f"event {i}" for i in range(C)]
    path = plot_timelines(predictions, targets, ["vidA", "vidB", "vidC"], names, tmp_path / "sub" / "t.png",
                          max_clips=2)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    # without class names, background is the largest index seen
    path = plot_timelines(predictions, targets, ["a", "b", "c"], None, tmp_path / "t2.png")
    assert path.stat().st_size > 2000
    with pytest.raises(ValueError, match="video ids"):
        plot_timelines(predictions, targets, ["a"], names, tmp_path / "t3.png")
