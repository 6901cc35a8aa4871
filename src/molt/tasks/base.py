"""Common interface of the task heads: predictions, loss, batch-size independent metrics.

A *method* (MoLT, ...) hands a task its fused tokens per modality, ``visual (B', K_v, D)`` and ``audio (B', K_a, D)``
(``B' = B*T`` for tasks with ``T`` segments per clip). A :class:`TaskHead` is the trainable head that turns them into
predictions, together with everything the trainer must not know about: the loss and the metrics.

Metrics accumulate *sums* across calls of :meth:`TaskHead.update_metrics` (never per-batch means), so an evaluation
gives the same figures whatever the batch size. The sums live in :attr:`TaskHead.metric_state`, a dict of float64
CPU tensors filled with :meth:`TaskHead.accumulate`; :meth:`TaskHead.compute_metrics` reads nothing else, so under
DDP the trainer adds every process's state (an all-reduce of each tensor) before computing the figures. They are
not buffers: they never enter a ``state_dict`` or a checkpoint.

Contract with the data (see :class:`molt.tasks.spec.TaskSpec`): every batch holds ``frames`` uint8 ``(B, T, 3, S, S)``,
``audio`` float ``(B, T, R)`` (or cached taps instead of both) and ``video_id`` (``B`` strings), plus the task's
targets. A head whose class attribute :attr:`TaskHead.needs_visual_stages` is true also receives
``batch["visual_stages"]``: the visual backbone's output at the end of each stage, ``[(B*T, N_s, C_s), ...]``
from the finest to the coarsest grid (square grids, ``N_s = H_s * W_s``), computed without gradients.

Typical evaluation loop::

    task.reset_metrics()
    for batch in loader:
        outputs = task(visual, audio, batch)
        task.update_metrics(outputs, batch)
    metrics = task.compute_metrics()   # e.g. {"accuracy": 0.71}
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..typed_config import TypedConfig, ranged

__all__ = ["TaskHead", "HeadConfig", "SegmentHeadConfig", "TokenPool", "segments_per_clip", "HEAD_MODALITIES",
           "POOLING_MODES", "batch_to"]

#: which modality's tokens a head reads
HEAD_MODALITIES = ("both", "audio", "visual")
#: how :class:`TokenPool` pools the ``K`` tokens of a row
POOLING_MODES = ("attention", "mean")


@dataclass
class HeadConfig(TypedConfig):
    """Base of the heads' typed configs: the options a config's ``head:`` section sets (what the data decides, such
    as class names and vocabularies, and the token width ``D`` are the head's constructor arguments instead).

    Attributes:
        modalities: ``"both"``, ``"audio"`` or ``"visual"``: which modality's tokens the head reads; when the
            ``head:`` section does not set it, the model builder sets the method's modalities.
    """

    modalities: str = "both"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.modalities not in HEAD_MODALITIES:
            raise ValueError(f"modalities must be one of {', '.join(HEAD_MODALITIES)}, got {self.modalities!r}")


@dataclass
class SegmentHeadConfig(HeadConfig):
    """Options shared by the heads that pool each segment's tokens and model the ``T`` segments (AVE, AVVP).

    Attributes:
        hidden_dim: width ``H`` of the head (default: the token width ``D``).
        num_heads: attention heads of the temporal layers (must divide ``H``).
        num_segments: maximal number of segments per clip ``T`` (size of the position embedding).
        pooling: ``"attention"`` or ``"mean"`` pooling of the ``K`` tokens of a segment (:class:`TokenPool`).
        dropout: dropout of the head's layers.
    """

    hidden_dim: int | None = ranged(None, at_least=1, meaning="width of the head, null: the token width")
    num_heads: int = ranged(4, at_least=1, meaning="attention heads, dividing hidden_dim")
    num_segments: int = ranged(10, at_least=1, meaning="segments per clip")
    pooling: str = "attention"
    dropout: float = ranged(0.1, at_least=0, below=1, meaning="dropout probability")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {', '.join(POOLING_MODES)}, got {self.pooling!r}")

    def hidden_width(self, dim: int, layers: int) -> int:
        """``H`` for tokens of width ``dim`` (``hidden_dim``, or ``dim`` when unset), checked against ``num_heads``
        when the head has ``layers`` attention layers."""
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        hidden = dim if self.hidden_dim is None else self.hidden_dim
        if layers and hidden % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_dim ({hidden})")
        return hidden


class TaskHead(nn.Module):
    """Base class of a task head (plain PyTorch; the trainer wraps it).

    Subclasses set :attr:`name` and :attr:`config_class`, take their config as the first argument of
    ``__init__`` (with what the data and the model decide as keyword arguments), and implement :meth:`forward`,
    :meth:`loss`, :meth:`predict`, :meth:`update_metrics`, :meth:`compute_metrics` and :meth:`reset_metrics`.
    """

    name: str = "task"
    needs_visual_stages: bool = False
    #: the :class:`HeadConfig` subclass of the head's options (the ``head:`` section of a config)
    config_class: type[HeadConfig] = HeadConfig
    metric_state: dict[str, torch.Tensor]

    def accumulate(self, name: str, value: torch.Tensor | float) -> None:
        """Add ``value`` (a number or a tensor of fixed shape) to the running sum ``metric_state[name]``."""
        value = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
        state = self.__dict__.setdefault("metric_state", {})
        state[name] = state[name] + value if name in state else value.clone()

    def save_figures(self, samples: list[tuple[dict[str, torch.Tensor], dict[str, Any]]], out_dir: Path,
                     task_options: Mapping[str, Any]) -> list[Path]:
        """Pictures of results for ``molt eval``: ``samples`` are ``(outputs, batch)`` of the first evaluated batches
        (on the CPU). Returns the written PNG paths; the default writes none."""
        return []

    def format_metrics(self, metrics: Mapping[str, float]) -> str:
        """The metrics as ``molt eval`` prints them (one ``name: value`` line each unless a task knows better)."""
        width = max((len(name) for name in metrics), default=0)
        return "\n".join(f"{name:<{width}}  {value:.4f}" for name, value in metrics.items())

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
        """Forget the running metric sums."""
        self.__dict__["metric_state"] = {}


class TokenPool(nn.Module):
    """``(N, K, D) -> (N, D)``: one vector per row of fused tokens.

    ``mode="attention"``: softmax over ``K`` of a learned linear score per token, weighted sum; the score layer
    starts at zero, so the pool starts as the mean. ``mode="mean"``: the mean of the ``K`` tokens.
    """

    def __init__(self, dim: int, mode: str = "attention") -> None:
        super().__init__()
        if mode not in POOLING_MODES:
            raise ValueError(f"token pooling must be 'attention' or 'mean', got {mode!r}")
        self.score = nn.Linear(dim, 1) if mode == "attention" else None
        if self.score is not None:
            nn.init.zeros_(self.score.weight)
            nn.init.zeros_(self.score.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.score is None:
            return tokens.mean(dim=1)
        return (self.score(tokens).softmax(dim=1) * tokens).sum(dim=1)


def batch_to(batch: Any, device: torch.device | str) -> Any:
    """``batch`` with every tensor in it (in dicts, lists and tuples, at any depth) on ``device``; anything else
    (ids, question strings) as it is. A tensor already there is not copied."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: batch_to(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(value, (torch.Tensor, dict, list, tuple))
                                                for value in batch):
        return type(batch)(batch_to(value, device) for value in batch)
    return batch


def segments_per_clip(rows: int, batch: Mapping[str, Any] | None, max_segments: int,
                      keys: tuple[str, ...]) -> int:
    """``T`` of a batch whose token rows are ``B*T``: the second dimension of the first tensor among ``keys`` in
    ``batch`` (``max_segments`` when none is there), checked against ``rows`` and the head's ``max_segments``."""
    segments = None
    for key in keys:
        value = batch.get(key) if batch is not None else None
        if isinstance(value, torch.Tensor) and value.ndim >= 2:
            segments = value.shape[1]
            break
    segments = max_segments if segments is None else segments
    if segments > max_segments:
        raise ValueError(f"clips have {segments} segments, more than the head's num_segments ({max_segments})")
    if rows % segments:
        raise ValueError(f"expected B*T token rows with T = {segments} segments per clip, got {rows} rows")
    return segments
