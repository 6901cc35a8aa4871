"""Common interface of the task heads: predictions, loss, batch-size independent metrics.

A *method* (MoLT, ...) hands a task its fused tokens per modality, ``visual (B', K_v, D)`` and ``audio (B', K_a, D)``
(``B' = B*T`` for tasks with ``T`` segments per clip). A :class:`Task` is the trainable head that turns them into
predictions, together with everything the trainer must not know about: the loss and the metrics.

Metrics accumulate *counts* across calls of :meth:`Task.update_metrics` (never per-batch means), so an evaluation
gives the same figures whatever the batch size. The counters are plain Python numbers, not buffers: they never
enter a ``state_dict`` or a checkpoint.

Typical evaluation loop::

    task.reset_metrics()
    for batch in loader:
        outputs = task(visual, audio, batch)
        task.update_metrics(outputs, batch)
    metrics = task.compute_metrics()   # e.g. {"accuracy": 0.71}
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["Task"]


class Task(nn.Module):
    """Base class of a task head (plain PyTorch; the trainer wraps it).

    Subclasses set :attr:`name` and implement :meth:`forward`, :meth:`loss`, :meth:`predict`,
    :meth:`update_metrics`, :meth:`compute_metrics` and :meth:`reset_metrics`.
    """

    name: str = "task"

    def forward(self, visual: torch.Tensor | None, audio: torch.Tensor | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Raw outputs (logits) of the head for fused tokens ``(B', K, D)`` of each modality.

        ``batch`` is the data loader's batch; heads may read shape information from it (never the targets).
        """
        raise NotImplementedError

    def loss(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> torch.Tensor:
        """Scalar training loss of ``outputs`` (from :meth:`forward`) against the targets in ``batch``."""
        raise NotImplementedError

    def predict(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Final (discrete) predictions from ``outputs``."""
        raise NotImplementedError

    def update_metrics(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> None:
        """Add one batch to the running metric counts."""
        raise NotImplementedError

    def compute_metrics(self) -> dict[str, float]:
        """Metrics over everything added since the last :meth:`reset_metrics`."""
        raise NotImplementedError

    def reset_metrics(self) -> None:
        """Forget the running metric counts."""
        raise NotImplementedError
