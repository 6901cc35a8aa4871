"""AVE metrics and baselines: the majority-class baseline the official segment accuracy is compared with.

Part of molt-av (Apache-2.0). The segment accuracy itself is summed by :class:`~molt.tasks.ave.head.AVEHead`.
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["majority_class", "majority_accuracy"]


def _as_segment_labels(labels: Any) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim == 3:
        labels = labels.argmax(-1)
    if labels.is_floating_point() or labels.ndim < 1:
        raise ValueError(f"expected integer segment labels (N, T) or one-hot (N, T, C + 1), "
                         f"got {labels.dtype} {tuple(labels.shape)}")
    return labels.long().reshape(-1)


def majority_class(train_labels: Any) -> int:
    """Most frequent segment label of the training split (ties: lowest index).

    Args:
        train_labels: segment class indices ``(N, T)`` or one-hot ``(N, T, C + 1)``.
    """
    labels = _as_segment_labels(train_labels)
    if labels.numel() == 0:
        raise ValueError("majority_class needs at least one training segment")
    return int(torch.bincount(labels).argmax())


def majority_accuracy(train_labels: Any, eval_labels: Any) -> float:
    """Segment accuracy on ``eval_labels`` of always predicting the most frequent training-segment label.

    Args:
        train_labels, eval_labels: segment class indices ``(N, T)`` or one-hot ``(N, T, C + 1)``.
    """
    labels = _as_segment_labels(eval_labels)
    if labels.numel() == 0:
        raise ValueError("majority_accuracy needs at least one evaluation segment")
    return float((labels == majority_class(train_labels)).float().mean())
