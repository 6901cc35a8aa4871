"""AVSBench metrics: the official mIoU (M_J) and F-score (M_F) of predicted masks.

Part of molt-av (Apache-2.0).
"""
from __future__ import annotations

import torch

__all__ = ["F_BETA2", "F_NUM_THRESHOLDS", "METRIC_VARIANTS", "frame_iou", "mask_iou", "f_thresholds", "f_curves",
           "f_measure"]

F_BETA2 = 0.3
F_NUM_THRESHOLDS = 255
IOU_EPS = 1e-7
METRIC_VARIANTS = ("official", "per_image")


def _check_pair(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits, target = torch.as_tensor(logits), torch.as_tensor(target)
    if logits.ndim != 3 or logits.shape != target.shape:
        raise ValueError(f"expected mask logits and targets of the same shape (N, H, W), got {tuple(logits.shape)} "
                         f"and {tuple(target.shape)}")
    return logits.detach().float(), (target.detach() > 0.5).float()


def frame_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """AVSBench IoU of each frame, ``(N,)`` float64.

    Args:
        logits: mask logits ``(N, H, W)`` (a pixel is predicted foreground when ``sigmoid(logit) > 0.5``).
        target: ground truth ``(N, H, W)`` in {0, 1}.

    A frame with an all-black ground truth scores ``(true negatives) / (H * W)``.
    """
    logits, target = _check_pair(logits, target)
    predicted = (torch.sigmoid(logits) > 0.5).float()
    intersection = (predicted * target).sum(dim=(1, 2)).double()
    union = torch.maximum(predicted, target).sum(dim=(1, 2)).double()
    empty = target.sum(dim=(1, 2)) == 0
    negatives = ((1 - predicted) * (1 - target)).sum(dim=(1, 2)).double()
    intersection = torch.where(empty, negatives, intersection)
    union = torch.where(empty, torch.full_like(union, float(target.shape[1] * target.shape[2])), union)
    return intersection / (union + IOU_EPS)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> float:
    """AVSBench ``mask_iou`` of one batch of frames: the mean of :func:`frame_iou`."""
    ious = frame_iou(logits, target)
    if ious.numel() == 0:
        raise ValueError("mask_iou needs at least one frame")
    return float(ious.mean())


def f_thresholds(num: int = F_NUM_THRESHOLDS) -> torch.Tensor:
    """The F-measure thresholds of AVSBench: ``torch.linspace(0, 1 - 1e-10, num)`` in float32 (the last is 1.0)."""
    return torch.linspace(0, 1 - 1e-10, num)


def f_curves(logits: torch.Tensor, target: torch.Tensor, *, num_thresholds: int = F_NUM_THRESHOLDS,
             beta2: float = F_BETA2) -> tuple[torch.Tensor, torch.Tensor]:
    """F-measure of each frame at each threshold, and which frames have an object.

    Args:
        logits: mask logits ``(N, H, W)``; probabilities are ``sigmoid(logits)`` in float32.
        target: ground truth ``(N, H, W)`` in {0, 1}.
        num_thresholds: thresholds of :func:`f_thresholds`.
        beta2: ``beta^2`` of the F-measure (AVSBench: 0.3).

    Returns:
        ``curves (N, num_thresholds)`` float64 (0 where precision and recall are both 0) and ``has_object (N,)``
        bool (false for an all-black ground truth, which the F-measure skips).
    """
    logits, target = _check_pair(logits, target)
    count = logits.shape[0]
    probabilities = torch.sigmoid(logits).reshape(count, -1)
    truth = target.reshape(count, -1)
    thresholds = f_thresholds(num_thresholds)
    # a pixel is positive at threshold i iff thresholds[i] <= p iff i < (number of thresholds <= p)
    buckets = torch.searchsorted(thresholds, probabilities.contiguous(), right=True)
    offsets = buckets + torch.arange(count).unsqueeze(1) * (num_thresholds + 1)
    size = count * (num_thresholds + 1)
    histogram = torch.bincount(offsets.reshape(-1), minlength=size).reshape(count, -1).double()
    true_histogram = torch.bincount(offsets.reshape(-1), weights=truth.reshape(-1).double(),
                                    minlength=size).reshape(count, -1)
    positives = histogram.flip(1).cumsum(1).flip(1)[:, 1:]        # pixels with bucket > i
    true_positives = true_histogram.flip(1).cumsum(1).flip(1)[:, 1:]
    ground_truth = truth.sum(dim=1, keepdim=True).double()
    precision = true_positives / (positives + 1e-20)
    recall = true_positives / (ground_truth + 1e-20)
    curves = (1 + beta2) * precision * recall / (beta2 * precision + recall)
    curves = torch.nan_to_num(curves, nan=0.0)
    return curves, ground_truth.squeeze(1) > 0


def f_measure(logits: torch.Tensor, target: torch.Tensor, *, num_thresholds: int = F_NUM_THRESHOLDS,
              beta2: float = F_BETA2) -> float:
    """AVSBench ``Eval_Fmeasure`` of one batch of frames: max over thresholds of the F curve averaged over the
    frames with an object; 0 when every frame's ground truth is all black."""
    curves, has_object = f_curves(logits, target, num_thresholds=num_thresholds, beta2=beta2)
    if not bool(has_object.any()):
        return 0.0
    return float(curves[has_object].mean(dim=0).max())
