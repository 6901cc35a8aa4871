"""AVSBench metrics: M_J (IoU with its all-black rule) and M_F (255 thresholds, beta^2 = 0.3) on hand-made masks,
against a loop-by-threshold reference, and the batch-size behaviour of the two accumulated variants."""
import math

import pytest
import torch

from molt.tasks import build_head
from molt.tasks.avs import f_curves, f_measure, f_thresholds, frame_iou, mask_iou

BIG = 20.0  # a logit whose sigmoid is ~1 (and -BIG ~0)


def logits_of(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.bool(), BIG, -BIG)


def square(size: int = 4, cells=()) -> torch.Tensor:
    mask = torch.zeros(size, size)
    for r, c in cells:
        mask[r, c] = 1
    return mask


def reference_f(probabilities: torch.Tensor, target: torch.Tensor) -> float:
    """F-measure of a batch written threshold by threshold from the AVSBench definition."""
    thresholds = torch.linspace(0, 1 - 1e-10, 255)
    total, frames = torch.zeros(255, dtype=torch.float64), 0
    for p, y in zip(probabilities, target):
        if float(y.mean()) == 0.0:
            continue
        curve = torch.zeros(255, dtype=torch.float64)
        for i, threshold in enumerate(thresholds):
            positive = (p >= threshold).double()
            tp = float((positive * y).sum())
            precision, recall = tp / (float(positive.sum()) + 1e-20), tp / (float(y.sum()) + 1e-20)
            value = (1.3 * precision * recall) / (0.3 * precision + recall) if precision + recall > 0 else 0.0
            curve[i] = value
        total += curve
        frames += 1
    return float((total / frames).max()) if frames else 0.0


# M_J -----------------------------------------------------------------------------------------------------------

def test_iou_hand_made_frames():
    truth = square(cells=[(0, 0), (0, 1), (1, 0), (1, 1)])
    partial = square(cells=[(0, 0), (0, 1), (1, 0), (3, 3)])        # 3 of 4 hit + 1 false positive: 3 / 5
    targets = torch.stack([truth, truth, truth, torch.zeros(4, 4), torch.zeros(4, 4), torch.ones(4, 4)])
    predictions = torch.stack([truth, partial, torch.zeros(4, 4), torch.zeros(4, 4),
                               square(cells=[(0, 0), (2, 2), (3, 3), (1, 3)]), torch.ones(4, 4)])
    ious = frame_iou(logits_of(predictions), targets)
    # all-black truth: true negatives / all pixels (16/16 for an empty prediction, 12/16 with 4 false positives)
    expected = [1.0, 0.6, 0.0, 1.0, 0.75, 1.0]
    assert ious.tolist() == pytest.approx(expected, abs=1e-6)
    assert mask_iou(logits_of(predictions), targets) == pytest.approx(sum(expected) / 6, abs=1e-6)


def test_iou_threshold_is_strictly_above_half():
    truth = square(cells=[(0, 0)])
    at_half = torch.zeros(1, 4, 4)                     # sigmoid(0) = 0.5 is not > 0.5: nothing predicted
    assert frame_iou(at_half, truth[None]).item() == pytest.approx(0.0)
    just_above = at_half.clone()
    just_above[0, 0, 0] = 1e-3
    assert frame_iou(just_above, truth[None]).item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        frame_iou(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))


# M_F -----------------------------------------------------------------------------------------------------------

def test_thresholds_are_the_avsbench_ones():
    thresholds = f_thresholds()
    assert thresholds.shape == (255,) and thresholds.dtype == torch.float32
    assert thresholds[0] == 0.0 and thresholds[-1] == 1.0  # 1 - 1e-10 rounds to 1 in float32


def test_f_measure_known_answer():
    # 4 object pixels: probabilities 0.9, 0.9, 0.3, 0.3; one background pixel at 0.6; the rest ~0.0067
    truth = square(cells=[(0, 0), (0, 1), (1, 0), (1, 1)])
    logits = torch.full((4, 4), -5.0)
    for (r, c), p in zip([(0, 0), (0, 1), (1, 0), (1, 1), (3, 3)], [0.9, 0.9, 0.3, 0.3, 0.6]):
        logits[r, c] = math.log(p / (1 - p))
    curves, has_object = f_curves(logits[None], truth[None])
    assert has_object.tolist() == [True]
    curve = curves[0]
    thresholds = f_thresholds()
    low = 1.3 * 0.25 / (0.3 * 0.25 + 1)            # every pixel positive: P = 4/16, R = 1
    best = 1.3 * 0.8 / (0.3 * 0.8 + 1)             # 5 positives (4 true): P = 4/5, R = 1
    middle = 1.3 * (2 / 3) * 0.5 / (0.3 * (2 / 3) + 0.5)
    high = 1.3 * 1.0 * 0.5 / (0.3 + 0.5)
    assert curve[0].item() == pytest.approx(low)
    assert curve[thresholds.tolist().index(next(t for t in thresholds.tolist() if 0.01 < t <= 0.3))].item() == \
        pytest.approx(best)
    assert curve[(thresholds > 0.31) & (thresholds < 0.59)].tolist() == pytest.approx([middle] * int(
        ((thresholds > 0.31) & (thresholds < 0.59)).sum()))
    assert curve[(thresholds > 0.61) & (thresholds < 0.89)].min().item() == pytest.approx(high)
    assert curve[thresholds > 0.91].abs().max().item() == 0.0      # nothing positive: NaN -> 0
    assert f_measure(logits[None], truth[None]) == pytest.approx(best)


def test_f_measure_skips_all_black_frames_and_is_zero_without_objects():
    truth = square(cells=[(1, 1), (1, 2)])
    good = logits_of(truth)
    black = torch.zeros(4, 4)
    alone = f_measure(good[None], truth[None])
    assert alone == pytest.approx(1.0)
    # an all-black ground truth is skipped whatever is predicted there
    assert f_measure(torch.stack([good, torch.full((4, 4), BIG)]), torch.stack([truth, black])) == pytest.approx(alone)
    assert f_measure(torch.full((2, 4, 4), BIG), torch.zeros(2, 4, 4)) == 0.0
    _, has_object = f_curves(torch.zeros(2, 4, 4), torch.stack([truth, black]))
    assert has_object.tolist() == [True, False]


def test_f_measure_matches_threshold_loop_reference():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 12, 12, generator=generator) * 3
    truth = (torch.rand(6, 12, 12, generator=generator) > 0.6).float()
    truth[2] = 0                                              # one all-black frame
    logits[3, :6] = 40.0                                      # saturated probabilities hit the last threshold
    expected = reference_f(torch.sigmoid(logits), truth)
    assert f_measure(logits, truth) == pytest.approx(expected, rel=1e-9)


# accumulation: official (per group of clips) and per-image variants ----------------------------------------------

def _clips(count: int = 6, frames: int = 5, size: int = 8, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    masks = (torch.rand(count, frames, size, size, generator=generator) > 0.7).float()
    masks[1] = 0                                              # a clip without any sounding object on screen
    logits = torch.randn(count, frames, size, size, generator=generator) * 2 + (masks - 0.5) * 3
    valid = torch.ones(count, frames)
    return logits, masks, valid


def _metrics(logits, masks, valid, loader_batch: int, **options) -> dict:
    task = build_head("avs", dim=8, mask_size=masks.shape[-1], stage_dims=[4], channels=8, tpavi_stages=[0],
                      projection_dilations=[1], **options)
    for start in range(0, logits.shape[0], loader_batch):
        part = slice(start, start + loader_batch)
        task.update_metrics({"mask_logits": logits[part]}, {"masks": masks[part], "mask_valid": valid[part]})
    return task.compute_metrics()


def test_official_variant_is_the_mean_of_avsbench_batch_values():
    logits, masks, valid = _clips()
    for clips_per_batch in (1, 4):
        groups = [slice(i, i + clips_per_batch) for i in range(0, 6, clips_per_batch)]   # last group is smaller
        expected_iou = sum(mask_iou(logits[g].flatten(0, 1), masks[g].flatten(0, 1)) for g in groups) / len(groups)
        expected_f = sum(f_measure(logits[g].flatten(0, 1), masks[g].flatten(0, 1)) for g in groups) / len(groups)
        for loader_batch in (1, 4, 6):     # the data loader's batch size does not matter
            metrics = _metrics(logits, masks, valid, loader_batch, metric_batch_clips=clips_per_batch)
            assert metrics["mIoU_official"] == pytest.approx(expected_iou, rel=1e-9)
            assert metrics["F_score_official"] == pytest.approx(expected_f, rel=1e-9)
            assert metrics["mIoU"] == metrics["mIoU_official"] and metrics["F_score"] == metrics["F_score_official"]
    # clip 1 (all black) scores F = 0 as a batch of its own, as in AVSBench's test loop
    one = _metrics(logits[1:2], masks[1:2], valid[1:2], 1)
    assert one["F_score_official"] == 0.0 and one["F_score_per_image"] == 0.0


def test_per_image_variant_is_dataset_wide_and_batch_independent():
    logits, masks, valid = _clips()
    flat_logits, flat_masks = logits.flatten(0, 1), masks.flatten(0, 1)
    expected_iou = frame_iou(flat_logits, flat_masks).mean().item()
    expected_f = f_measure(flat_logits, flat_masks)      # one batch of every frame = the per-image definition
    results = [_metrics(logits, masks, valid, b, metric_variant="per_image") for b in (1, 2, 5)]
    for metrics in results:
        assert metrics["mIoU"] == pytest.approx(expected_iou, rel=1e-9)
        assert metrics["F_score"] == pytest.approx(expected_f, rel=1e-9)
        assert metrics["mIoU_per_image"] == metrics["mIoU"]
    # with equal clip lengths the IoU variants agree; the F variants do not (max of means vs mean of maxima, and
    # the all-black clip scores 0 as an AVSBench batch of its own)
    assert results[0]["mIoU_official"] == pytest.approx(results[0]["mIoU_per_image"], rel=1e-9)
    assert results[0]["F_score_official"] < results[0]["F_score_per_image"] - 0.05


def test_unannotated_frames_are_ignored():
    logits, masks, valid = _clips(count=3)
    valid[:, 1:] = 0                                          # S4 train: only the first frame is annotated
    garbage = logits.clone()
    garbage[:, 1:] = -logits[:, 1:]
    first = _metrics(logits, masks, valid, 2)
    assert _metrics(garbage, masks, valid, 2) == first
    expected = frame_iou(logits[:, 0], masks[:, 0]).mean().item()
    assert first["mIoU_per_image"] == pytest.approx(expected, rel=1e-9)


def test_trivial_predictions():
    _, masks, valid = _clips()
    background = _metrics(torch.full_like(masks, -BIG), masks, valid, 3)
    foreground = _metrics(torch.full_like(masks, BIG), masks, valid, 3)
    black_frames = (masks.sum(dim=(2, 3)) == 0).float().mean().item()
    # all background scores 1 on the all-black frames and 0 elsewhere
    assert background["mIoU_per_image"] == pytest.approx(black_frames, rel=1e-6)
    coverage = masks.sum(dim=(2, 3)) / masks[0, 0].numel()
    expected = torch.where(coverage > 0, coverage, torch.zeros_like(coverage)).mean().item()
    assert foreground["mIoU_per_image"] == pytest.approx(expected, rel=1e-5)


def test_empty_state_gives_nan_and_state_stays_out_of_state_dict():
    task = build_head("avs", dim=8, mask_size=8, stage_dims=[4], channels=8, tpavi_stages=[0],
                      projection_dilations=[1])
    assert math.isnan(task.compute_metrics()["mIoU"])
    logits, masks, valid = _clips(count=2)
    task.update_metrics({"mask_logits": logits}, {"masks": masks, "mask_valid": valid})
    assert task.metric_state and not any("iou" in key or "f_" in key for key in task.state_dict())
    task.reset_metrics()
    assert task.metric_state == {}
