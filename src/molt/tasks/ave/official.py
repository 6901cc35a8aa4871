"""The peers' own AVE heads (``head: official`` of an in-block method's config), beside our common :class:`AVEHead`.

Part of molt-av (Apache-2.0). Re-implemented from the facts of the public repositories, no code copied:

* :class:`DGSCTAVEHead`: ``haoyi-duan/DG-SCT`` @211fc57, ``DG-SCT/AVE/nets/net_trans.py`` (``TemporalAttention``,
  ``CMBS`` and the modules they are built of; the transformer layers in ``DG-SCT/AVE/nets/models.py``) and its
  loss in ``DG-SCT/AVE/main_trans.py`` (``train``).
* :class:`AVMoEAVEHead`: ``yingchengy/AVMOE`` @edd2383, ``AVMOE/AVE/nets/net_trans_v3.py`` (the same temporal
  attention and CMBS, built with ``--is_inter_in_cmbs 0``) and ``AVMOE/AVE/main_trans_v3.py`` (its loss drops the
  gate term).
* :class:`LAVisHAVEHead`: ``GenjiB/LAVISH``, ``AVE/nets/net_trans.py`` (``mlp_class``, ``mlp_class_2``) and
  ``AVE/main_trans.py`` (``nn.BCELoss`` on the softmax): LAVisH's head in the setting its repository ships (one
  Swin reading both modalities); with two backbones LAVisH gets DG-SCT's head (:data:`OFFICIAL_AVE_HEADS`).

Every head reads one pooled vector per segment and modality, ``visual (B*T, 1, D_v)`` and ``audio (B*T, 1, D_a)``
(the in-block method pools its final tokens as the peer does, :meth:`~molt.methods.inblock.InBlockMethod.pool_final`;
``K > 1`` tokens are averaged), with the peer's widths (``D_v`` 1536 for Swin-V2-L, ``D_a`` 768 for HTS-AT).

**Temporal attention + CMBS** (DG-SCT, AVMoE; ``d = 256``, 4 attention heads, dropout 0.1 in the transformer layers):

1. ``v = dropout_0.2(relu(Linear(D_v, 512)(v)))``, ``a = Linear(D_a, 128)(a)``, both ``(B, T, .)``;
2. one bidirectional LSTM per modality: ``v -> (B, T, 512)`` (hidden 256), ``a -> (B, T, 256)`` (hidden 128);
3. ``kv_v = Enc_v(v)``, ``kv_a = Enc_a(a)``: a linear to ``d`` then two post-norm self-attention layers (FFN 1024);
4. ``q_a = Dec_a(a, kv_v)``, ``q_v = Dec_v(v, kv_a)``: a linear to ``d`` then one post-norm layer whose query
   attends over the memory *and itself* (``[memory, query]`` on the time axis), FFN 1024;
5. gates ``g_a = sigmoid(Linear(d, 1)(kv_a))``, ``g_v = sigmoid(Linear(d, 1)(kv_v))`` ``(B, T, 1)``;
   ``q_v <- q_v (1 + 0.1 g_a)``, ``q_a <- q_a (1 + 0.1 g_v)``; ``gate = g_a g_v`` ``(B, T)``;
6. CMBS: class scores per segment ``Linear(d, C)`` of each modality, the mean of each class's top 4 over ``T``,
   averaged over the modalities: ``av_score (B, C)``; ``f = (q_v + q_a) / 2``;
   ``event_logits = Linear(d, 1)(f)`` ``(B, T)``; ``class_logits = Linear(d, C)(max_T f) + 0.3 av_score``.

Loss (``main_trans.py``): ``BCEWithLogits(event_logits, is_event) + CE(class_logits, c) + CE(av_score, c)`` with
``c`` the clip's event class, plus, for DG-SCT only, ``BCEWithLogits(gate, is_event)`` -- applied, as there, to the
gate *probability* (a sigmoid of a product of sigmoids: the term never reaches zero). Clips whose segments are all
background have no class target and are left out of the two cross-entropies (the script would use class 0; real
AVE has no such clip). Prediction and metric: as :class:`~molt.tasks.ave.head.AVEHead` (class where
``sigmoid(event_logits) > 0.5``, background elsewhere; segment accuracy).

Parts the repositories build and count but never use are not built here (``molt params --heads`` lists them with
the counts of the published totals): DG-SCT's ``CMBS.AVInter`` / ``VAInter`` (their outputs are discarded),
``CMBS.video_norm`` / ``audio_norm`` and the ``self_attn`` of each ``DecoderLayer`` (never called); AVMoE's
``DecoderLayer.self_attn`` likewise.

**LAVisH** (per segment, no temporal model): ``p = softmax(Linear(512, C + 1)(Linear(D_v + D_a, 512)([v, a])))``
``(B, T, C + 1)`` (no activation between the linears), loss ``BCE(p, one_hot(y))``, prediction ``argmax p``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..base import segments_per_clip
from ..peer_layers import (TEMPORAL_FEEDFORWARD, TEMPORAL_HEADS, TEMPORAL_WIDTH, MemoryDecoderLayer, TemporalDecoder,
                           TemporalEncoder, parameter_count)
from .head import AVEHeadConfig, AVESegmentHead, clip_targets, segment_targets

__all__ = ["TemporalAttentionCMBS", "DGSCTAVEHead", "AVMoEAVEHead", "LAVisHAVEHead", "OFFICIAL_AVE_HEADS"]

_TOP_K = 4
_GATE_SCALE = 0.1
_SCORE_SCALE = 0.3


class TemporalAttentionCMBS(nn.Module):
    """DG-SCT's ``TemporalAttention`` followed by its ``CMBS`` (steps 1-6 of the module docstring).

    ``forward(visual (B, T, D_v), audio (B, T, D_a))`` -> ``event_logits (B, T)``, ``class_logits (B, C)``,
    ``av_score (B, C)``, ``gate (B, T)``.
    """

    def __init__(self, visual_dim: int, audio_dim: int, num_classes: int) -> None:
        super().__init__()
        self.visual_in = nn.Linear(visual_dim, 512)
        self.audio_in = nn.Linear(audio_dim, 128)
        self.input_dropout = nn.Dropout(0.2)
        self.visual_rnn = nn.LSTM(512, TEMPORAL_WIDTH, batch_first=True, bidirectional=True)
        self.audio_rnn = nn.LSTM(128, TEMPORAL_WIDTH // 2, batch_first=True, bidirectional=True)
        self.visual_encoder = TemporalEncoder(2 * TEMPORAL_WIDTH)
        self.audio_encoder = TemporalEncoder(TEMPORAL_WIDTH)
        self.visual_decoder = TemporalDecoder(2 * TEMPORAL_WIDTH)
        self.audio_decoder = TemporalDecoder(TEMPORAL_WIDTH)
        self.audio_gate = nn.Linear(TEMPORAL_WIDTH, 1)
        self.visual_gate = nn.Linear(TEMPORAL_WIDTH, 1)
        self.visual_scores = nn.Linear(TEMPORAL_WIDTH, num_classes)
        self.audio_scores = nn.Linear(TEMPORAL_WIDTH, num_classes)
        self.event = nn.Linear(TEMPORAL_WIDTH, 1)
        self.category = nn.Linear(TEMPORAL_WIDTH, num_classes)

    @staticmethod
    def _top_mean(scores: torch.Tensor) -> torch.Tensor:
        """``(B, T, C)`` -> ``(B, C)``: mean of each class's ``min(4, T)`` highest scores over the segments."""
        return scores.topk(min(_TOP_K, scores.shape[1]), dim=1).values.mean(dim=1)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        visual = self.input_dropout(F.relu(self.visual_in(visual)))
        audio = self.audio_in(audio)
        visual, _ = self.visual_rnn(visual)
        audio, _ = self.audio_rnn(audio)
        visual_memory, audio_memory = self.visual_encoder(visual), self.audio_encoder(audio)
        audio_query = self.audio_decoder(audio, visual_memory)
        visual_query = self.visual_decoder(visual, audio_memory)
        audio_gate = torch.sigmoid(self.audio_gate(audio_memory))
        visual_gate = torch.sigmoid(self.visual_gate(visual_memory))
        visual_query = visual_query + _GATE_SCALE * audio_gate * visual_query
        audio_query = audio_query + _GATE_SCALE * visual_gate * audio_query
        av_score = (self._top_mean(self.visual_scores(visual_query))
                    + self._top_mean(self.audio_scores(audio_query))) / 2
        fused = (visual_query + audio_query) / 2
        return {"event_logits": self.event(fused).squeeze(-1),
                "class_logits": self.category(fused.amax(dim=1)) + _SCORE_SCALE * av_score,
                "av_score": av_score, "gate": (audio_gate * visual_gate).squeeze(-1)}


class _PooledSegmentsHead(AVESegmentHead):
    """Shared input handling of the official heads: one vector per segment and modality, reshaped to ``(B, T, D)``."""

    #: the modalities whose final tokens the in-block method pools for this head (both)
    pooled_modalities = ("visual", "audio")

    def __init__(self, config: AVEHeadConfig | None, *, visual_dim: int, audio_dim: int, num_classes: int,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        config = config or AVEHeadConfig()
        if config.modalities != "both":
            raise ValueError(f"the {type(self).__name__} reads both modalities, got modalities={config.modalities!r}")
        self._setup_classes(config, num_classes, class_names)
        self.dims = {"visual": visual_dim, "audio": audio_dim}

    def _segments(self, visual: torch.Tensor | None, audio: torch.Tensor | None,
                  batch: Mapping[str, Any] | None) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = {}
        for name, tokens in (("visual", visual), ("audio", audio)):
            if tokens is None or tokens.ndim != 3 or tokens.shape[-1] != self.dims[name]:
                shape = None if tokens is None else tuple(tokens.shape)
                raise ValueError(f"expected pooled {name} tokens (B*T, K, {self.dims[name]}), got {shape}")
            pooled[name] = tokens.mean(dim=1)
        if pooled["visual"].shape[0] != pooled["audio"].shape[0]:
            raise ValueError(f"visual and audio tokens must have the same number of rows (B*T), got "
                             f"{pooled['visual'].shape[0]} and {pooled['audio'].shape[0]}")
        segments = segments_per_clip(pooled["visual"].shape[0], batch, self.num_segments,
                                     ("labels", "frames", "audio"))
        return (pooled["visual"].reshape(-1, segments, self.dims["visual"]),
                pooled["audio"].reshape(-1, segments, self.dims["audio"]))

    def _targets(self, batch: Mapping[str, Any], like: torch.Tensor) -> torch.Tensor:
        targets = segment_targets(batch["labels"], self.num_classes).to(like.device)
        if targets.shape != like.shape[:2]:
            raise ValueError(f"labels give {tuple(targets.shape)} segments but the head predicted "
                             f"{tuple(like.shape[:2])}")
        return targets


def _uncalled_temporal_parts() -> dict[str, int]:
    """What the repositories' ``TemporalAttention`` registers but never calls (counted on the meta device): the
    template layer each encoder and decoder module keeps beside its clones, and the unused ``self_attn`` of the
    two called decoder layers."""
    with torch.device("meta"):
        attention = nn.MultiheadAttention(TEMPORAL_WIDTH, TEMPORAL_HEADS)
        encoder_layer = nn.TransformerEncoderLayer(TEMPORAL_WIDTH, TEMPORAL_HEADS, dim_feedforward=TEMPORAL_FEEDFORWARD)
        decoder_layer = MemoryDecoderLayer(TEMPORAL_WIDTH)
        return {"template encoder/decoder layers kept beside their clones":
                2 * parameter_count(encoder_layer) + 2 * (parameter_count(decoder_layer) + parameter_count(attention)),
                "self_attn of the two decoder layers (never called)": 2 * parameter_count(attention)}


class DGSCTAVEHead(_PooledSegmentsHead):
    """DG-SCT's AVE head (temporal attention + CMBS) and loss; see the module docstring.

    Args:
        config: the AVE head's options (only ``modalities``, which must be ``"both"``, ``num_segments`` and
            ``event_threshold`` are read).
        visual_dim, audio_dim: widths of the pooled final tokens (1536 and 768 at paper scale).
        num_classes: event classes ``C`` (28 in AVE; background is ``C``).
        class_names: optional names of the ``C`` classes.

    Outputs of :meth:`forward`: ``event_logits (B, T)``, ``class_logits (B, C)``, ``av_score (B, C)``,
    ``gate (B, T)``.
    """

    #: the gate term of the loss (DG-SCT's ``main_trans.py`` has it, AVMoE's ``main_trans_v3.py`` not)
    gate_loss = True

    @classmethod
    def script_only_parameters(cls) -> dict[str, int]:
        """Parameters the repository's script counts as trainable but its forward never uses, by part (not built
        here; independent of the input widths and class count): what turns this head's count into the
        published one."""
        parts = _uncalled_temporal_parts()
        with torch.device("meta"):
            inter = nn.MultiheadAttention(TEMPORAL_WIDTH, TEMPORAL_HEADS)
            norm = nn.LayerNorm(TEMPORAL_WIDTH)
            parts["CMBS.AVInter + VAInter (outputs discarded)"] = 2 * (parameter_count(inter) + parameter_count(norm))
            parts["CMBS.video_norm + audio_norm (never called)"] = 2 * parameter_count(norm)
        return parts

    def __init__(self, config: AVEHeadConfig | None = None, *, visual_dim: int, audio_dim: int, num_classes: int,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__(config, visual_dim=visual_dim, audio_dim=audio_dim, num_classes=num_classes,
                         class_names=class_names)
        self.temporal = TemporalAttentionCMBS(visual_dim, audio_dim, num_classes)

    def forward(self, visual: torch.Tensor | None, audio: torch.Tensor | None,
                batch: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        """Pooled tokens ``visual (B*T, K, D_v)``, ``audio (B*T, K, D_a)`` -> the four outputs (class docstring)."""
        return self.temporal(*self._segments(visual, audio, batch))

    def loss_terms(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Unweighted ``event``, ``category``, ``av_score`` (and, with :attr:`gate_loss`, ``gate``) terms."""
        event_logits = outputs["event_logits"]
        targets = self._targets(batch, event_logits)
        is_event = (targets != self.background_index).to(event_logits.dtype)
        terms = {"event": F.binary_cross_entropy_with_logits(event_logits, is_event)}
        if self.gate_loss:
            terms["gate"] = F.binary_cross_entropy_with_logits(outputs["gate"], is_event)
        categories = clip_targets(targets, self.num_classes)
        has_category = categories >= 0
        for name, logits in (("category", outputs["class_logits"]), ("av_score", outputs["av_score"])):
            terms[name] = (F.cross_entropy(logits[has_category], categories[has_category])
                           if bool(has_category.any()) else logits.sum() * 0.0)
        return terms

    def loss(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> torch.Tensor:
        """The sum of :meth:`loss_terms` (all weights 1, as in the script)."""
        return torch.stack(list(self.loss_terms(outputs, batch).values())).sum()


class AVMoEAVEHead(DGSCTAVEHead):
    """AVMoE's AVE head: DG-SCT's temporal attention + CMBS (``--is_temporal_att 1 --is_inter_in_cmbs 0``), trained
    without the gate term (``AVMOE/AVE/main_trans_v3.py``). AVMoE's script starts it from DG-SCT's trained
    checkpoint; here it starts from scratch."""

    gate_loss = False

    @classmethod
    def script_only_parameters(cls) -> dict[str, int]:
        """As :meth:`DGSCTAVEHead.script_only_parameters`; AVMoE's CMBS has no ``AVInter`` / ``VAInter`` or norms
        with ``--is_inter_in_cmbs 0``."""
        return _uncalled_temporal_parts()


class LAVisHAVEHead(_PooledSegmentsHead):
    """LAVisH's AVE head: two linears on the concatenated pooled tokens, one softmax over ``C + 1`` classes per
    segment, BCE against the one-hot labels (module docstring).

    Arguments as :class:`DGSCTAVEHead` (``event_threshold`` is not read). Output of :meth:`forward`:
    ``segment_logits (B, T, C + 1)``.
    """

    def __init__(self, config: AVEHeadConfig | None = None, *, visual_dim: int, audio_dim: int, num_classes: int,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__(config, visual_dim=visual_dim, audio_dim=audio_dim, num_classes=num_classes,
                         class_names=class_names)
        self.hidden = nn.Linear(visual_dim + audio_dim, 512)
        self.classify = nn.Linear(512, num_classes + 1)

    def forward(self, visual: torch.Tensor | None, audio: torch.Tensor | None,
                batch: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        visual, audio = self._segments(visual, audio, batch)
        return {"segment_logits": self.classify(self.hidden(torch.cat([visual, audio], dim=-1)))}

    def loss(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> torch.Tensor:
        """``BCE(softmax(segment_logits), one_hot(labels))``, mean over ``B * T * (C + 1)`` entries."""
        logits = outputs["segment_logits"]
        targets = self._targets(batch, logits)
        one_hot = F.one_hot(targets, self.num_classes + 1).to(logits.dtype)
        return F.binary_cross_entropy(logits.softmax(dim=-1), one_hot)

    @classmethod
    def script_only_parameters(cls) -> dict[str, int]:
        """None: the repository's two linears are all used."""
        return {}

    def predict(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Segment classes ``(B, T)``: the argmax over the ``C + 1`` classes."""
        return outputs["segment_logits"].argmax(dim=-1)


#: method name -> its own AVE head, per setting (registered with :func:`molt.tasks.spec.register_official_heads`):
#: ``"shared"`` when one backbone reads both modalities, ``"separate"`` for two backbones. LAVisH's repository
#: ships only the shared setting; the MoLT paper's "LAVisH (Swin-V2-L + HTS-AT)" rows match, by arithmetic, DG-SCT's
#: two-backbone code without its attention layers and with DG-SCT's head (3.7 M adapters + 98.4 M bridges + 12.6 M
#: head), so with two backbones LAVisH gets DG-SCT's head (on the mean of the final tokens).
OFFICIAL_AVE_HEADS = {"lavish": {"shared": LAVisHAVEHead, "separate": DGSCTAVEHead},
                      "dgsct": {"shared": DGSCTAVEHead, "separate": DGSCTAVEHead},
                      "avmoe": {"shared": AVMoEAVEHead, "separate": AVMoEAVEHead}}
