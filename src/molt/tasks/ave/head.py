"""Audio-Visual Event localisation (AVE): the head, its loss and the segment accuracy it sums (baselines in
:mod:`.metrics`, the timeline picture in :mod:`.figures`).

AVE (Tian et al., ECCV 2018): 10-s clips cut into ``T = 10`` one-second segments; each segment is one of ``C``
event categories (28 in the real dataset) or background (index ``C``). The metric is segment-level accuracy.

The head follows the event-relevance + category design that the setups MoLT reports against use on AVE (DG-SCT,
AVMoE, after CMBS): per segment an *is-event* logit, per clip one *category* distribution; a segment is predicted
as the clip's category when ``sigmoid(is_event) > 0.5`` and as background otherwise. It is the common head of every
method; the peers' own heads (``method_config.head: official``) are in :mod:`.official` and share
:class:`AVESegmentHead` (prediction, metric, pictures) with it.

Head (input: fused tokens ``visual (B*T, K_v, D)`` and ``audio (B*T, K_a, D)`` from the method):

1. pooling, per modality and segment, of the ``K`` tokens to one vector ``(B*T, D)``: ``"attention"`` (default; a
   learned linear score per token, softmax over ``K``, weighted sum; the score starts at zero, i.e. as a mean) or
   ``"mean"``;
2. LayerNorm + Linear ``D -> H`` per modality;
3. fusion per segment: ``[v, a, v * a]`` (``"both"``; the product lets the head see audio-visual agreement) or the
   single modality's vector (``"audio"`` / ``"visual"``: the other modality's tokens are never read), then
   Linear -> GELU -> Dropout to ``(B, T, H)``;
4. temporal modelling across the ``T`` segments: a learned position embedding and ``temporal_layers`` (default 1)
   pre-norm Transformer encoder layers (self-attention over segments, ``num_heads`` heads, FFN ``2H``), final
   LayerNorm;
5. ``event_logits (B, T)`` = Linear ``H -> 1`` per segment; ``class_logits (B, C)`` = Linear ``H -> C`` on the
   max over the ``T`` segments.

Loss (:meth:`AVEHead.loss_terms`), with ``y (B, T)`` the segment class indices taken from ``batch["labels"]``:

* ``event``: binary cross-entropy with logits of ``event_logits`` against ``y != C`` (the segment is an event),
  mean over all ``B*T`` segments;
* ``category``: cross-entropy of ``class_logits`` against the clip's event class = the most frequent non-background
  class among its segments (ties: lowest index; a real AVE annotation line has exactly one). Clips whose segments
  are all background have no category target and are left out of the mean; a batch with no such clip gives ``0``.

``loss = event_weight * event + category_weight * category`` (both weights default to 1).

Metrics (:meth:`AVEHead.compute_metrics`), from counts accumulated over the whole split:

* ``accuracy``: correct segments / all segments, against ``batch["labels"]`` (one annotation line per clip, as in
  every published AVE evaluation);
* ``accuracy_any_label`` (only when batches carry ``valid_labels``, the multi-hot union of every annotation line of
  the same video): a segment counts as correct when the prediction is any of the video's labels for it. It
  differs from ``accuracy`` only for the few videos annotated with several events.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...typed_config import ranged
from ..base import SegmentHeadConfig, TaskHead, TokenPool, segments_per_clip
from .figures import plot_timelines

__all__ = ["AVEHead", "AVEHeadConfig", "AVESegmentHead", "AVE_NUM_SEGMENTS", "segment_targets", "clip_targets",
           "bench_targets"]

_logger = logging.getLogger(__name__)

AVE_NUM_SEGMENTS = 10
_NO_CATEGORY = -1


def segment_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class index of every segment, ``(B, T)`` int64 (background = ``num_classes``).

    Args:
        labels: one-hot label matrices ``(B, T, C + 1)`` (as the AVE reader gives them) or class indices ``(B, T)``.
        num_classes: ``C``, the number of event classes (background excluded).
    """
    labels = torch.as_tensor(labels)
    if labels.ndim == 3:
        if labels.shape[-1] != num_classes + 1:
            raise ValueError(f"expected labels (B, T, C + 1) with C + 1 = {num_classes + 1}, "
                             f"got {tuple(labels.shape)}")
        return labels.argmax(-1)
    if labels.ndim == 2 and not labels.is_floating_point():
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > num_classes):
            raise ValueError(f"segment class indices must lie in [0, {num_classes}] (background = {num_classes}), "
                             f"got values in [{int(labels.min())}, {int(labels.max())}]")
        return labels.long()
    raise ValueError(f"expected labels as one-hot (B, T, {num_classes + 1}) or integer class indices (B, T), "
                     f"got {labels.dtype} {tuple(labels.shape)}")


def clip_targets(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Event class of every clip, ``(B,)`` int64: the most frequent non-background class among its segments (ties:
    lowest index), or ``-1`` for a clip whose segments are all background.

    Args:
        targets: segment class indices ``(B, T)`` (see :func:`segment_targets`).
        num_classes: ``C``.
    """
    counts = F.one_hot(targets, num_classes + 1)[..., :num_classes].sum(dim=1)
    categories = counts.argmax(dim=-1)
    return torch.where(counts.sum(dim=-1) > 0, categories, torch.full_like(categories, _NO_CATEGORY))


@dataclass
class AVEHeadConfig(SegmentHeadConfig):
    """Options of the AVE head (the ``head:`` section; shared ones in :class:`~molt.tasks.base.SegmentHeadConfig`).

    Attributes:
        num_segments: maximal number of segments per clip ``T`` (AVE: 10).
        temporal_layers: Transformer encoder layers across segments (0: none).
        event_threshold: a segment is an event when ``sigmoid(event_logit) > event_threshold``.
        event_weight, category_weight: weights of the two loss terms.
    """

    num_segments: int = ranged(AVE_NUM_SEGMENTS, at_least=1, meaning="segments per clip")
    temporal_layers: int = ranged(1, at_least=0, meaning="Transformer layers across segments, 0: none")
    event_threshold: float = ranged(0.5, above=0, below=1, meaning="event probability threshold")
    event_weight: float = ranged(1.0, at_least=0, meaning="weight of the event loss")
    category_weight: float = ranged(1.0, at_least=0, meaning="weight of the category loss")


class AVESegmentHead(TaskHead):
    """What every AVE head shares (ours and the peers' own, :mod:`.official`): one label per segment from
    ``event_logits (B, T)`` and ``class_logits (B, C)`` (:meth:`predict`; a head with other outputs overrides it),
    the segment accuracy summed over a split, and the timelines picture.

    Subclasses call :meth:`_setup_classes` in ``__init__`` and implement ``forward`` and ``loss``.
    """

    name = "ave"
    config_class = AVEHeadConfig
    num_segments: int = AVE_NUM_SEGMENTS

    def _setup_classes(self, config: AVEHeadConfig, num_classes: int, class_names: Sequence[str] | None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes (event classes, background excluded) must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names must name the {num_classes} event classes, got {len(class_names)} names")
        self.config = config
        self.num_classes = num_classes
        self.num_segments = config.num_segments
        self.modalities = config.modalities
        self.event_threshold = config.event_threshold
        self.class_names = list(class_names) if class_names is not None else None
        self.reset_metrics()

    @property
    def background_index(self) -> int:
        return self.num_classes

    def predict(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Segment classes ``(B, T)`` int64: the clip's argmax category where ``sigmoid(event_logit)`` exceeds the
        threshold, background (``C``) elsewhere."""
        event_logits, class_logits = outputs["event_logits"], outputs["class_logits"]
        category = class_logits.argmax(dim=-1, keepdim=True).expand_as(event_logits)
        is_event = torch.sigmoid(event_logits) > self.event_threshold
        return torch.where(is_event, category, torch.full_like(category, self.background_index))

    @torch.no_grad()
    def update_metrics(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> None:
        predictions = self.predict(outputs).cpu()
        targets = segment_targets(batch["labels"], self.num_classes).cpu()
        if targets.shape != predictions.shape:
            raise ValueError(f"labels give {tuple(targets.shape)} segments but the head predicted "
                             f"{tuple(predictions.shape)}")
        self.accumulate("correct", (predictions == targets).sum())
        self.accumulate("segments", targets.numel())
        valid = batch.get("valid_labels") if hasattr(batch, "get") else None
        if valid is not None:
            valid = torch.as_tensor(valid).cpu()
            if valid.shape != (*predictions.shape, self.num_classes + 1):
                raise ValueError(f"expected valid_labels {(*predictions.shape, self.num_classes + 1)}, "
                                 f"got {tuple(valid.shape)}")
            self.accumulate("correct_any", (valid.gather(-1, predictions.unsqueeze(-1)).squeeze(-1) > 0).sum())
            self.accumulate("segments_any", predictions.numel())

    def compute_metrics(self) -> dict[str, float]:
        """``accuracy`` (and ``accuracy_any_label`` when seen); ``nan`` when no segment was counted."""
        state = getattr(self, "metric_state", {})
        if float(state.get("segments", 0)) == 0:
            _logger.warning("AVE metrics computed before any batch was added; returning nan")
            return {"accuracy": float("nan")}
        metrics = {"accuracy": float(state["correct"] / state["segments"])}
        if float(state.get("segments_any", 0)):
            metrics["accuracy_any_label"] = float(state["correct_any"] / state["segments_any"])
        return metrics

    def save_figures(self, samples: list[tuple[dict[str, torch.Tensor], dict[str, Any]]], out_dir: Path,
                     task_options: Mapping[str, Any]) -> list[Path]:
        """``timelines.png``: true vs predicted event timelines of the first evaluated clips."""
        if not samples:
            return []
        predictions = torch.cat([self.predict(outputs) for outputs, _ in samples])
        targets = torch.cat([segment_targets(batch["labels"], self.num_classes) for _, batch in samples])
        video_ids = [video_id for _, batch in samples for video_id in batch["video_id"]]
        return [plot_timelines(predictions, targets, video_ids, task_options.get("class_names"),
                               Path(out_dir) / "timelines.png", background_index=self.background_index)]


class AVEHead(AVESegmentHead):
    """AVE head (event relevance per segment + category per clip), loss and segment accuracy.

    See the module docstring for the architecture, the loss and the metrics.

    Args:
        config: the head's options (:class:`AVEHeadConfig`; default: its defaults).
        dim: width ``D`` of the method's fused tokens.
        num_classes: event classes ``C`` (background excluded; 28 in real AVE). Background is class ``C``.
        class_names: optional names of the ``C`` event classes (kept for pictures and reports).

    Outputs of :meth:`forward`: ``event_logits (B, T)`` and ``class_logits (B, C)``.
    """

    name = "ave"
    config_class = AVEHeadConfig

    def __init__(self, config: AVEHeadConfig | None = None, *, dim: int, num_classes: int,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        config = config or AVEHeadConfig()
        hidden_dim = config.hidden_width(dim, config.temporal_layers)
        self._setup_classes(config, num_classes, class_names)
        num_segments, modalities, dropout = config.num_segments, config.modalities, config.dropout
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.event_weight = config.event_weight
        self.category_weight = config.category_weight

        self.active = ["visual", "audio"] if modalities == "both" else [modalities]
        self.pool = nn.ModuleDict({m: TokenPool(dim, config.pooling) for m in self.active})
        self.project = nn.ModuleDict({m: nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim))
                                      for m in self.active})
        fusion_in = 3 * hidden_dim if modalities == "both" else hidden_dim
        self.fuse = nn.Sequential(nn.Linear(fusion_in, hidden_dim), nn.GELU(), nn.Dropout(dropout))
        self.position = nn.Parameter(torch.zeros(1, num_segments, hidden_dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.temporal = nn.ModuleList(
            nn.TransformerEncoderLayer(hidden_dim, config.num_heads, dim_feedforward=2 * hidden_dim, dropout=dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(config.temporal_layers))
        self.norm = nn.LayerNorm(hidden_dim)
        self.event_head = nn.Linear(hidden_dim, 1)
        self.class_head = nn.Linear(hidden_dim, num_classes)

    def _pooled(self, modality: str, tokens: torch.Tensor | None) -> torch.Tensor:
        if tokens is None or tokens.ndim != 3 or tokens.shape[-1] != self.dim:
            shape = None if tokens is None else tuple(tokens.shape)
            raise ValueError(f"expected {modality} tokens (B*T, K, {self.dim}), got {shape}")
        return self.project[modality](self.pool[modality](tokens))

    def forward(self, visual: torch.Tensor | None, audio: torch.Tensor | None,
                batch: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        """Logits for fused tokens ``visual (B*T, K_v, D)`` and ``audio (B*T, K_a, D)``.

        Only the tokens of :attr:`modalities` are read (the other may be ``None``). ``T`` is read from the batch
        (``labels``, ``frames`` or ``audio`` ``(B, T, ...)``) when it has one, else ``num_segments``.

        Returns:
            ``event_logits (B, T)`` and ``class_logits (B, C)``.
        """
        tokens = {"visual": visual, "audio": audio}
        pooled = {m: self._pooled(m, tokens[m]) for m in self.active}
        rows = {m: p.shape[0] for m, p in pooled.items()}
        if len(set(rows.values())) > 1:
            raise ValueError(f"visual and audio tokens must have the same number of rows (B*T), got {rows}")
        if self.modalities == "both":
            fused = torch.cat([pooled["visual"], pooled["audio"], pooled["visual"] * pooled["audio"]], dim=-1)
        else:
            fused = pooled[self.modalities]
        fused = self.fuse(fused)
        segments = segments_per_clip(fused.shape[0], batch, self.num_segments, ("labels", "frames", "audio"))
        hidden = fused.reshape(-1, segments, self.hidden_dim) + self.position[:, :segments]
        for layer in self.temporal:
            hidden = layer(hidden)
        hidden = self.norm(hidden)
        return {"event_logits": self.event_head(hidden).squeeze(-1),
                "class_logits": self.class_head(hidden.amax(dim=1))}

    def loss_terms(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Unweighted ``event`` (BCE per segment) and ``category`` (CE per clip with an event) losses."""
        event_logits, class_logits = outputs["event_logits"], outputs["class_logits"]
        targets = segment_targets(batch["labels"], self.num_classes).to(event_logits.device)
        if targets.shape != event_logits.shape:
            raise ValueError(f"labels give {tuple(targets.shape)} segments but the head predicted "
                             f"{tuple(event_logits.shape)}")
        is_event = (targets != self.background_index).to(event_logits.dtype)
        event = F.binary_cross_entropy_with_logits(event_logits, is_event)
        categories = clip_targets(targets, self.num_classes)
        has_category = categories != _NO_CATEGORY
        if bool(has_category.any()):
            category = F.cross_entropy(class_logits[has_category], categories[has_category])
        else:
            category = class_logits.sum() * 0.0
        return {"event": event, "category": category}

    def loss(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> torch.Tensor:
        """``event_weight * event + category_weight * category`` (see :meth:`loss_terms`)."""
        terms = self.loss_terms(outputs, batch)
        return self.event_weight * terms["event"] + self.category_weight * terms["category"]

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, modalities={self.modalities!r}, "
                f"event_threshold={self.event_threshold}")


def bench_targets(batch_clips: int, num_segments: int, task_options: dict[str, Any],
                  generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random segment labels ``(B, T)`` in ``[0, C]`` (``C`` = background) for one benchmark step."""
    return {"labels": torch.randint(0, task_options["num_classes"] + 1, (batch_clips, num_segments),
                                    generator=generator)}
