"""Audio-visual video parsing (AVVP, LLP): weakly supervised head, HAN-style MMIL pooling (the official F1 metrics
in :mod:`.metrics`, the picture in :mod:`.figures`).

AVVP (Tian, Li and Xu, ECCV 2020): for each of the ``T = 10`` one-second segments of a clip, say which of the
``C`` event classes (25 in LLP) are **heard** and which are **seen**, after training on video-level labels only
(see :mod:`molt.tasks.avvp.reader` for the data).

Head (input: fused tokens ``visual (B*T, K_v, D)`` and ``audio (B*T, K_a, D)`` from the method), after the hybrid
attention network + attentive multimodal multiple-instance-learning (MMIL) pooling of the paper:

1. per modality and segment, pooling of the ``K`` tokens to one vector (``"attention"``: softmax over ``K`` of a
   learned score that starts at zero, i.e. as the mean; or ``"mean"``), LayerNorm + Linear ``D -> H``; a learned
   position embedding over segments and a learned embedding per stream are added. Two streams, *audio* and
   *visual*, ``(B, T, H)`` each; with ``modalities="audio"`` (or ``"visual"``) both streams are built from that
   modality's tokens (the other is never read) and differ only by the stream embedding;
2. ``han_layers`` hybrid attention layers (shared by the two streams, as in HAN): each stream adds
   self-attention over its segments and cross-modal attention to the other stream's segments, then a
   feed-forward block (post-norm residuals, ``num_heads`` heads, FFN ``2H``);
3. ``segment_logits (B, T, 2, C)`` = Linear ``H -> C`` (shared by the streams; stream 0 = audio, 1 = visual);
   probabilities ``P = sigmoid(segment_logits)``;
4. attentive MMIL pooling: per class, a temporal attention (softmax over ``T`` of Linear ``H -> C``) and a
   modality attention (softmax over the two streams of another Linear ``H -> C``);
   ``audio_prob (B, C)`` / ``visual_prob (B, C)`` = sum over ``T`` of temporal attention x ``P`` of the stream,
   ``video_prob (B, C)`` = sum over ``T`` and streams of temporal attention x modality attention x ``P``,
   with those products renormalised to sum to 1 over segments and streams. (Departure from HAN: there the
   temporal attention is normalised per stream, so the sum can exceed 1 and is clamped before the loss, which
   stops the gradient of a negative class once it reaches 1; here ``video_prob`` is a weighted mean of ``P``.)

Loss (:meth:`AVVPHead.loss_terms`), with the weak labels ``y = batch["labels"] (B, C)`` and binary
cross-entropy on probabilities clamped to ``[1e-7, 1 - 1e-7]`` (computed in float32, autocast off):

* ``video``: BCE(``video_prob``, ``y``);
* ``audio`` / ``visual`` (HAN's "individual guided learning"): BCE(``audio_prob``, ``s_a y + (1 - s_a) / 2``) and
  BCE(``visual_prob``, ``s_v y + (1 - s_v) / 2``) with HAN's smoothing ``s_a = 1.0``, ``s_v = 0.9``;

``loss = video + guided_weight * (audio + visual)`` (``guided_weight = 1`` is HAN's loss).

Prediction (:meth:`AVVPHead.predict`), as in the official evaluation: class ``c`` is heard (seen) in segment ``t``
when ``P >= threshold`` for the audio (visual) stream *and* ``video_prob[c] >= threshold`` (segment predictions
are filtered by the predicted weak labels); ``threshold = 0.5``.

Metrics (:func:`segment_level_f1`, :func:`event_level_f1`), exactly as ``utils/eval_metrics.py`` of the authors'
repository (YapengTian/AVVP-ECCV20) computes them, on the segment labels of val/test clips:

* per clip, per class ``c`` and per modality, binary rasters over the 10 segments of prediction and truth;
  *audio-visual* rasters are the products (heard and seen) of the audio and visual rasters, for prediction and
  truth alike;
* **segment level**: ``TP``, ``FP``, ``FN`` counted over segments per class;
* **event level**: an event is a maximal run of consecutive positive segments of one class; a predicted event is
  a ``TP`` when some true event of the class overlaps it with IoU ``>= 0.5`` (intersection ``>= 0.5 x union`` in
  segments), else an ``FP``; a true event matched by no predicted event (same criterion) is an ``FN``. (A
  predicted event counts once however many true events it matches, and matches are not exclusive.);
* per clip and modality, ``F1_c = 2 TP / (2 TP + FP + FN)`` for every class with ``TP + FP > 0`` or
  ``TP + FN > 0``; the clip's F1 is the **mean over those classes** (a macro average), and **1.0** when there is
  none (nothing predicted, nothing true);
* **Event@AV** (``event_av``): the same per clip, with per-class counts ``TP_a + TP_v``, ``FP_a + FP_v``,
  ``FN_a + FN_v`` (audio and visual events pooled);
* the data-set figure is the **mean over clips** of the clip F1s; **Type@AV** (``type_av``) is the mean of the
  audio, visual and audio-visual data-set figures (the official script prints these as "Audio / Visual /
  Audio-Visual Event Detection", "Type@Avg." and "Event@Avg.", segment- and event-level).

A consequence worth knowing: on a clip where nothing of a kind is true (say, nothing both heard and seen),
predicting nothing of that kind scores 1.0, so on a set where many clips have no audio-visual event an empty
prediction gets a high audio-visual F1 by itself; Type@AV, which also needs the audio and visual figures, is
harder to game that way.

:meth:`AVVPHead.compute_metrics` gives ``{segment,event}_{audio,visual,av,type_av,event_av}_f1`` from per-clip
sums (``nan`` when no clip with segment labels was seen) and ``video_f1``: the mean over all clips (segment labels
or not) of the F1 of the predicted weak labels (``video_prob >= threshold``) against ``labels`` (1.0 for a clip
with nothing predicted and nothing true). HAN selects its checkpoint on segment-level Type@AV; molt-av's
registry monitors ``segment_av_f1``.
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
from .figures import plot_parsing
from .metrics import EPS, METRIC_KINDS, event_level_f1, segment_counts, segment_level_f1

__all__ = ["AVVPHead", "AVVPHeadConfig", "AVVP_NUM_SEGMENTS"]

_logger = logging.getLogger(__name__)

AVVP_NUM_SEGMENTS = 10


# ----------------------------------------------------------------------------------------------------------------
# head

class _HybridAttentionLayer(nn.Module):
    """HAN layer: ``x + SelfAttn(x) + CrossAttn(x, other)`` -> norm -> ``+ FFN`` -> norm, over segments."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.self_attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.cross_attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Dropout(dropout),
                                          nn.Linear(2 * dim, dim))
        self.norm_attention = nn.LayerNorm(dim)
        self.norm_output = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        own = self.self_attention(query, query, query, need_weights=False)[0]
        cross = self.cross_attention(query, other, other, need_weights=False)[0]
        hidden = self.norm_attention(query + self.dropout(own) + self.dropout(cross))
        return self.norm_output(hidden + self.dropout(self.feed_forward(hidden)))


@dataclass
class AVVPHeadConfig(SegmentHeadConfig):
    """Options of the AVVP head (the ``head:`` section; shared ones in :class:`~molt.tasks.base.SegmentHeadConfig`).

    Attributes:
        num_segments: maximal number of segments per clip ``T`` (LLP: 10).
        han_layers: hybrid attention layers (0: none).
        threshold: probability threshold of segment and video predictions.
        guided_weight: weight of the per-stream ("individual guided") loss terms.
        audio_smoothing, visual_smoothing: label smoothing ``s`` of those terms (target ``s y + (1 - s) / 2``).
    """

    num_segments: int = ranged(AVVP_NUM_SEGMENTS, at_least=1, meaning="segments per clip")
    han_layers: int = ranged(1, at_least=0, meaning="hybrid attention layers, 0: none")
    threshold: float = ranged(0.5, above=0, below=1, meaning="probability threshold of the predictions")
    guided_weight: float = ranged(1.0, at_least=0, meaning="weight of the per-stream loss terms")
    audio_smoothing: float = ranged(1.0, at_least=0, at_most=1, meaning="label smoothing of the audio term")
    visual_smoothing: float = ranged(0.9, at_least=0, at_most=1, meaning="label smoothing of the visual term")


class AVVPHead(TaskHead):
    """AVVP head (HAN-style streams + attentive MMIL pooling), weak-label loss and the official F1 metrics.

    See the module docstring for the architecture, the loss, the prediction rule and the metrics.

    Args:
        config: the head's options (:class:`AVVPHeadConfig`; default: its defaults).
        dim: width ``D`` of the method's fused tokens.
        num_classes: event classes ``C`` (25 in LLP); may be left out when ``class_names`` is given.
        class_names: names of the ``C`` classes (from the data's ``task_options``).

    Outputs of :meth:`forward`: ``segment_logits (B, T, 2, C)`` (stream 0 audio, 1 visual), ``video_prob``,
    ``audio_prob``, ``visual_prob`` ``(B, C)``.
    """

    name = "avvp"
    config_class = AVVPHeadConfig

    def __init__(self, config: AVVPHeadConfig | None = None, *, dim: int, num_classes: int | None = None,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        config = config or AVVPHeadConfig()
        if num_classes is None:
            if class_names is None:
                raise ValueError("AVVPHead needs num_classes or class_names (the data's task_options)")
            num_classes = len(class_names)
        hidden_dim = config.hidden_width(dim, config.han_layers)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names must name the {num_classes} classes, got {len(class_names)} names")
        self.config = config
        num_segments, modalities = config.num_segments, config.modalities
        self.dim = dim
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.hidden_dim = hidden_dim
        self.num_segments = num_segments
        self.modalities = modalities
        self.threshold = config.threshold
        self.guided_weight = config.guided_weight
        self.smoothing = {"audio": config.audio_smoothing, "visual": config.visual_smoothing}

        self.active = ["audio", "visual"] if modalities == "both" else [modalities]
        self.pool = nn.ModuleDict({m: TokenPool(dim, config.pooling) for m in self.active})
        self.project = nn.ModuleDict({m: nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim))
                                      for m in self.active})
        self.position = nn.Parameter(torch.zeros(1, num_segments, hidden_dim))
        self.stream = nn.Parameter(torch.zeros(2, hidden_dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        nn.init.trunc_normal_(self.stream, std=0.02)
        self.layers = nn.ModuleList(_HybridAttentionLayer(hidden_dim, config.num_heads, config.dropout)
                                    for _ in range(config.han_layers))
        self.classifier = nn.Linear(hidden_dim, num_classes)
        self.time_attention = nn.Linear(hidden_dim, num_classes)
        self.modality_attention = nn.Linear(hidden_dim, num_classes)
        self.reset_metrics()

    def _pooled(self, modality: str, tokens: torch.Tensor | None) -> torch.Tensor:
        if tokens is None or tokens.ndim != 3 or tokens.shape[-1] != self.dim:
            shape = None if tokens is None else tuple(tokens.shape)
            raise ValueError(f"expected {modality} tokens (B*T, K, {self.dim}), got {shape}")
        return self.project[modality](self.pool[modality](tokens))

    def forward(self, visual: torch.Tensor | None, audio: torch.Tensor | None,
                batch: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        """Segment logits and MMIL-pooled probabilities for fused tokens ``visual (B*T, K_v, D)`` and
        ``audio (B*T, K_a, D)``.

        Only the tokens of :attr:`modalities` are read (the other may be ``None``). ``T`` is read from the batch
        (``audio_labels``, ``frames`` or ``audio`` ``(B, T, ...)``) when it has one, else ``num_segments``.

        Returns:
            ``segment_logits (B, T, 2, C)``, ``video_prob``, ``audio_prob``, ``visual_prob`` ``(B, C)``.
        """
        tokens = {"visual": visual, "audio": audio}
        pooled = {m: self._pooled(m, tokens[m]) for m in self.active}
        rows = {m: p.shape[0] for m, p in pooled.items()}
        if len(set(rows.values())) > 1:
            raise ValueError(f"visual and audio tokens must have the same number of rows (B*T), got {rows}")
        segments = segments_per_clip(next(iter(rows.values())), batch, self.num_segments,
                                     ("audio_labels", "visual_labels", "frames", "audio"))
        sources = [pooled["audio" if "audio" in pooled else self.active[0]],
                   pooled["visual" if "visual" in pooled else self.active[0]]]
        streams = [source.reshape(-1, segments, self.hidden_dim) + self.position[:, :segments] + self.stream[i]
                   for i, source in enumerate(sources)]
        for layer in self.layers:
            streams = [layer(streams[0], streams[1]), layer(streams[1], streams[0])]
        hidden = torch.stack(streams, dim=2)                                       # (B, T, 2, H)
        segment_logits = self.classifier(hidden)
        probabilities = torch.sigmoid(segment_logits)
        time_weights = self.time_attention(hidden).softmax(dim=1)
        weighted = time_weights * probabilities
        mixture = time_weights * self.modality_attention(hidden).softmax(dim=2)
        mixture = mixture / mixture.sum(dim=(1, 2), keepdim=True)
        video_prob = (mixture * probabilities).sum(dim=(1, 2))
        return {"segment_logits": segment_logits, "video_prob": video_prob,
                "audio_prob": weighted[:, :, 0].sum(dim=1), "visual_prob": weighted[:, :, 1].sum(dim=1)}

    def loss_terms(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Unweighted ``video``, ``audio`` and ``visual`` BCE terms against the weak labels (see the module
        docstring)."""
        video_prob = outputs["video_prob"]
        labels = torch.as_tensor(batch["labels"]).to(video_prob.device, torch.float32)
        if labels.shape != video_prob.shape:
            raise ValueError(f"expected weak labels (B, C) = {tuple(video_prob.shape)}, got {tuple(labels.shape)}")
        with torch.autocast(device_type=video_prob.device.type, enabled=False):
            def bce(probabilities: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                return F.binary_cross_entropy(probabilities.float().clamp(EPS, 1 - EPS), target)

            terms = {"video": bce(video_prob, labels)}
            for stream in ("audio", "visual"):
                smoothing = self.smoothing[stream]
                terms[stream] = bce(outputs[f"{stream}_prob"], smoothing * labels + (1 - smoothing) * 0.5)
        return terms

    def loss(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> torch.Tensor:
        """``video + guided_weight * (audio + visual)`` (see :meth:`loss_terms`)."""
        terms = self.loss_terms(outputs, batch)
        return terms["video"] + self.guided_weight * (terms["audio"] + terms["visual"])

    def predict(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Segment predictions ``(B, T, 2, C)`` int64 0/1 (stream 0 heard, 1 seen): ``sigmoid(segment_logits)`` and
        ``video_prob`` both at least ``threshold``."""
        segment = torch.sigmoid(outputs["segment_logits"]) >= self.threshold
        video = (outputs["video_prob"] >= self.threshold)[:, None, None, :]
        return (segment & video).long()

    @torch.no_grad()
    def update_metrics(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> None:
        """Add per-clip F1s: ``video_f1`` for every clip, the segment/event F1s for clips with ``label_valid``
        (every clip when the batch has segment labels but no ``label_valid``)."""
        labels = torch.as_tensor(batch["labels"]).detach().cpu() > 0.5
        predicted_labels = outputs["video_prob"].detach().cpu() >= self.threshold
        if labels.shape != predicted_labels.shape:
            raise ValueError(f"expected weak labels (B, C) = {tuple(predicted_labels.shape)}, got "
                             f"{tuple(labels.shape)}")
        tp, fp, fn = (counts.sum(dim=-1).double() for counts in segment_counts(predicted_labels[:, None],
                                                                                 labels[:, None]))
        video_f1 = torch.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1.0), torch.ones_like(tp))
        self.accumulate("video_f1_sum", video_f1.sum())
        self.accumulate("videos", labels.shape[0])
        valid = self._label_valid(batch, labels.shape[0])
        sums = {f"{level}_{kind}_f1_sum": 0.0 for level in ("segment", "event") for kind in METRIC_KINDS}
        if bool(valid.any()):
            predictions = self.predict(outputs).detach().cpu().bool()[valid]
            rasters = (predictions[:, :, 0], predictions[:, :, 1],
                       torch.as_tensor(batch["audio_labels"]).detach().cpu()[valid],
                       torch.as_tensor(batch["visual_labels"]).detach().cpu()[valid])
            for level, function in (("segment", segment_level_f1), ("event", event_level_f1)):
                sums.update({f"{level}_{kind}_f1_sum": values.sum() for kind, values in function(*rasters).items()})
        # every key in every call, so that DDP processes hold the same state keys to add up
        for name, value in sums.items():
            self.accumulate(name, value)
        self.accumulate("parsed_videos", int(valid.sum()))

    @staticmethod
    def _label_valid(batch: Mapping[str, Any], clips: int) -> torch.Tensor:
        """``(B,)`` bool: clips whose segment labels count (``label_valid``; all clips of a batch that has
        segment labels but no ``label_valid``; none without segment labels)."""
        if batch.get("audio_labels") is None or batch.get("visual_labels") is None:
            return torch.zeros(clips, dtype=torch.bool)
        valid = batch.get("label_valid")
        if valid is None:
            return torch.ones(clips, dtype=torch.bool)
        return torch.as_tensor(valid).detach().cpu().reshape(-1) > 0.5

    def compute_metrics(self) -> dict[str, float]:
        """``video_f1`` and ``{segment,event}_{audio,visual,av,type_av,event_av}_f1`` (``nan`` where no clip was
        counted)."""
        state = self.metric_state
        videos = float(state.get("videos", 0.0))
        parsed = float(state.get("parsed_videos", 0.0))
        if videos == 0:
            _logger.warning("AVVP metrics computed before any batch was added; returning nan")
        elif parsed == 0:
            _logger.info("AVVP: no clip with segment labels (label_valid) was evaluated; the segment and event F1s "
                         "are nan")
        metrics = {"video_f1": float(state["video_f1_sum"]) / videos if videos else float("nan")}
        for level in ("segment", "event"):
            for kind in METRIC_KINDS:
                key = f"{level}_{kind}_f1"
                metrics[key] = float(state[f"{key}_sum"]) / parsed if parsed else float("nan")
            metrics[f"{level}_type_av_f1"] = sum(metrics[f"{level}_{k}_f1"] for k in ("audio", "visual", "av")) / 3
        return metrics

    def save_figures(self, samples: list[tuple[dict[str, torch.Tensor], dict[str, Any]]], out_dir: Path,
                     task_options: Mapping[str, Any]) -> list[Path]:
        """``parsing.png``: per-second audio and visual predictions against the truth for the first clips with
        segment labels (see :func:`plot_parsing`)."""
        predictions, targets, names = [], [], []
        for outputs, batch in samples:
            valid = self._label_valid(batch, len(batch["video_id"]))
            if not bool(valid.any()):
                continue
            predictions.append(self.predict(outputs).cpu()[valid])
            targets.append(torch.stack([torch.as_tensor(batch["audio_labels"]).cpu(),
                                        torch.as_tensor(batch["visual_labels"]).cpu()], dim=2)[valid])
            names += [name for name, keep in zip(batch["video_id"], valid.tolist()) if keep]
        if not names:
            _logger.info("AVVP: no evaluated clip has segment labels; no parsing picture written")
            return []
        class_names = task_options.get("class_names") or self.class_names
        return [plot_parsing(torch.cat(predictions), torch.cat(targets), names, class_names,
                             Path(out_dir) / "parsing.png")]

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, modalities={self.modalities!r}, threshold={self.threshold}, "
                f"guided_weight={self.guided_weight}")
