"""The peers' own MUSIC-AVQA head (``head: official`` of an in-block method's config), beside our common
:class:`~molt.tasks.avqa.head.AVQAHead`.

Part of molt-av (Apache-2.0). Re-implemented from the facts of the public repositories, no code copied:
``haoyi-duan/DG-SCT`` @211fc57, ``DG-SCT/AVQA/net_grd_avst/net_avst.py`` (``AVQA_Fusion_Net``: ``QstEncoder`` and
the layers after the backbones) with its loss in ``DG-SCT/AVQA/net_grd_avst/main_avst.py`` (``train``), and
``yingchengy/AVMOE`` @edd2383, ``AVMOE/AVQA/net_grd_avst/net_avst_v2.py``, which builds the same head (its audio is
the mean of the final tokens instead of DG-SCT's spatial-map pooling; the method pools, see
:meth:`~molt.methods.inblock.InBlockMethod.pool_final`). ``C = 1536`` at paper scale (the widths below are the
visual width ``D_v``).

Inputs: the visual final tokens *unpooled*, ``visual (B*T, N, D_v)`` (the 6x6 grid of Swin-V2-L), and the audio
pooled per segment, ``audio (B*T, 1, D_a)``. With ``T`` segments per question:

1. question: word embedding (``D_v``) -> tanh -> a one-layer LSTM (hidden ``D_v``) over the whole padded question
   -> tanh of ``[h, c]`` -> Linear ``2 D_v -> D_v``: ``q (B, C)``;
2. audio: ``a = Linear(relu(Linear(D_a, C)(a)))`` ``(B, T, C)``;
3. audio-guided grounding over the ``N`` visual tokens: ``w = softmax_N(<v_n / |v_n|, a / |a|>)``,
   ``g = sum_n w_n v_n / |v_n|`` (the *normalised* tokens are summed), ``v = Linear(tanh([mean_n v_n, g]))``;
4. audio-visual match: ``Linear(128, 2)(relu(Linear(relu(Linear(relu(Linear([a, v], 512)), 256)), 128)))`` per
   segment, for the clip's own visual tokens and, as negatives, for another clip's;
5. question-guided temporal attention per modality: multi-head attention (4 heads, dropout 0.1) with query ``q``
   over the ``T`` segment vectors, ``x + Dropout(Linear(Dropout(relu(Linear(x)))))`` then LayerNorm;
6. ``f = Linear(tanh([att_a + mean_T a, att_v + mean_T v]))``, answer logits ``Linear(C, A)(tanh(f * q))``.

Loss (``main_avst.py``): ``CE(answer) + 0.5 CE(match)`` over the positive and negative pairs
(:meth:`~molt.tasks.avqa.head.AVQAAnswerHead.loss_terms`, with ``match_weight`` from the head's config).

Departures: the negatives are the visual tokens of another clip of the same batch from another video (detached,
as :class:`~molt.tasks.avqa.head.AVQAHead` draws them), where the scripts run the frozen Swin-V2-L without adapters
on frames of another video; the frozen final LayerNorm of Swin-V2-L is not applied; the vocabulary and answer
counts come from the data (the scripts hard-code 93 words and 42 answers). Parts the repository builds and counts
but never calls are not built: ``fc_a1_pure``, ``fc_a2_pure``, ``norm3`` (:meth:`AVSTAVQAHead.script_only_parameters`).
Its script also counts every Swin parameter named ``norm`` as trainable while it stays frozen
(``--is_vit_ln 0``): :meth:`AVSTAVQAHead.script_trainable_frozen`.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .head import AVQAAnswerHead, AVQAHeadConfig, negative_partners

__all__ = ["AVSTAVQAHead", "OFFICIAL_AVQA_HEADS"]

_HEADS = 4


class _QuestionLSTM(nn.Module):
    """``(B, L)`` token ids -> ``(B, C)`` (step 1 of the module docstring)."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.lstm = nn.LSTM(dim, dim, num_layers=1, batch_first=True)
        self.out = nn.Linear(2 * dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, (hidden, cell) = self.lstm(torch.tanh(self.embed(tokens)))
        return self.out(torch.tanh(torch.cat([hidden[-1], cell[-1]], dim=-1)))


class _QuestionGuidedAttention(nn.Module):
    """Step 5: the question ``(B, C)`` attends over a modality's segments ``(B, T, C)`` -> ``(B, C)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, _HEADS, dropout=0.1, batch_first=True)
        self.linear1 = nn.Linear(dim, dim)
        self.linear2 = nn.Linear(dim, dim)
        self.dropout1 = nn.Dropout(0.1)
        self.dropout2 = nn.Dropout(0.1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, question: torch.Tensor, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.attention(question[:, None], segments, segments)
        attended = attended[:, 0]
        attended = self.norm(attended + self.dropout2(self.linear2(self.dropout1(F.relu(self.linear1(attended))))))
        return attended, weights[:, 0]


class AVSTAVQAHead(AVQAAnswerHead):
    """DG-SCT's (and AVMoE's) MUSIC-AVQA head and loss; see the module docstring.

    Args:
        config: the AVQA head's options (``modalities`` must be ``"both"``; ``num_segments`` and ``match_weight``
            are read).
        visual_dim, audio_dim: widths of the visual final tokens and of the pooled audio (1536 and 768 at paper
            scale); the head works at ``C = visual_dim``.
        question_vocab, answers, question_types: as for :class:`~molt.tasks.avqa.head.AVQAHead`.

    Outputs of :meth:`forward`: ``answer_logits (B, A)``, ``match_logits`` and ``negative_match_logits (B, T, 2)``
    (class 1 = matched), ``negative_valid (B,)``, ``spatial_attention (B, T, N)`` and
    ``temporal_attention_audio`` / ``temporal_attention_visual (B, T)``.
    """

    #: the modalities whose final tokens the in-block method pools for this head: the audio only (the grounding
    #: reads the visual grid)
    pooled_modalities = ("audio",)

    def __init__(self, config: AVQAHeadConfig | None = None, *, visual_dim: int, audio_dim: int,
                 question_vocab: Sequence[str], answers: Sequence[str],
                 question_types: Sequence[str] | None = None) -> None:
        super().__init__()
        config = config or AVQAHeadConfig()
        if config.modalities != "both":
            raise ValueError(f"the {type(self).__name__} reads both modalities, got modalities={config.modalities!r}")
        if visual_dim % _HEADS:
            raise ValueError(f"visual_dim ({visual_dim}) must be a multiple of {_HEADS} attention heads")
        self._setup_answers(config, question_vocab, answers, question_types)
        width = visual_dim
        self.dims = {"visual": visual_dim, "audio": audio_dim}
        self.question = _QuestionLSTM(len(self.question_vocab), width)
        self.audio_in = nn.Sequential(nn.Linear(audio_dim, width), nn.ReLU(), nn.Linear(width, width))
        self.visual_segment = nn.Linear(2 * width, width)
        self.match = nn.Sequential(nn.Linear(2 * width, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                                   nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 2))
        self.attend = nn.ModuleDict({name: _QuestionGuidedAttention(width) for name in ("audio", "visual")})
        self.fuse = nn.Linear(2 * width, width)
        self.classifier = nn.Linear(width, len(self.answers))

    @classmethod
    def script_only_parameters(cls, visual_dim: int = 1536, audio_dim: int = 768) -> dict[str, int]:
        """Parameters the repository's head registers (and its script counts as trainable) but never calls:
        ``fc_a1_pure`` (``audio_dim -> C``), ``fc_a2_pure`` (``C -> C``) and ``norm3`` (LayerNorm ``C``)."""
        width = visual_dim
        return {"fc_a1_pure + fc_a2_pure (never called)": (audio_dim + 1) * width + (width + 1) * width,
                "norm3 (never called)": 2 * width}

    @staticmethod
    def script_trainable_frozen(visual: nn.Module) -> dict[str, int]:
        """Frozen visual-backbone parameters the repository's script counts as *trainable*: every Swin parameter
        whose name holds ``norm`` (``main_avst.py``; they keep ``requires_grad=False`` with ``--is_vit_ln 0``)."""
        return {"Swin norm weights counted as trainable (frozen)":
                sum(p.numel() for name, p in visual.named_parameters() if "norm" in name)}

    def _check(self, name: str, tokens: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        if tokens is None or tokens.ndim != 3 or tokens.shape[-1] != self.dims[name] or tokens.shape[0] % batch_size:
            shape = None if tokens is None else tuple(tokens.shape)
            raise ValueError(f"expected {name} tokens (B*T, N, {self.dims[name]}) for B = {batch_size} questions, "
                             f"got {shape}")
        segments = tokens.shape[0] // batch_size
        if segments > self.num_segments:
            raise ValueError(f"clips have {segments} segments, more than the head's num_segments "
                             f"({self.num_segments})")
        return tokens.reshape(batch_size, segments, *tokens.shape[1:])

    def _ground(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``audio (B, T, C)``, ``visual (B, T, N, C)`` -> segment vectors ``(B, T, C)``, weights ``(B, T, N)``."""
        normalised = F.normalize(visual, dim=-1)
        weights = torch.einsum("btnc,btc->btn", normalised, F.normalize(audio, dim=-1)).softmax(dim=-1)
        grounded = torch.einsum("btn,btnc->btc", weights, normalised)
        return self.visual_segment(torch.tanh(torch.cat([visual.mean(dim=2), grounded], dim=-1))), weights

    def forward(self, visual: torch.Tensor | None, audio: torch.Tensor | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``visual (B*T, N, D_v)``, ``audio (B*T, K, D_a)`` (``K`` pooled tokens, averaged) and the batch's
        ``question (B, L)`` -> the outputs listed in the class docstring."""
        tokens = torch.as_tensor(batch["question"]).long()
        batch_size = tokens.shape[0]
        visual = self._check("visual", visual, batch_size)
        audio = self.audio_in(self._check("audio", audio, batch_size).mean(dim=2))
        question = self.question(tokens.to(audio.device))
        visual_segments, spatial = self._ground(audio, visual)
        partner, valid = negative_partners(batch.get("video_id"), batch_size)
        negative_segments, _ = self._ground(audio, visual[partner.to(visual.device)].detach())
        match = self.match(torch.cat([audio, visual_segments], dim=-1))
        negative_match = self.match(torch.cat([audio, negative_segments], dim=-1))
        attended_audio, audio_weights = self.attend["audio"](question, audio)
        attended_visual, visual_weights = self.attend["visual"](question, visual_segments)
        fused = self.fuse(torch.tanh(torch.cat([attended_audio + audio.mean(dim=1),
                                                attended_visual + visual_segments.mean(dim=1)], dim=-1)))
        return {"answer_logits": self.classifier(torch.tanh(fused * question)), "match_logits": match,
                "negative_match_logits": negative_match, "negative_valid": valid.to(match.device),
                "spatial_attention": spatial, "temporal_attention_audio": audio_weights,
                "temporal_attention_visual": visual_weights}


#: method name -> its own AVQA head per setting (registered with :func:`molt.tasks.spec.register_official_heads`);
#: DG-SCT and AVMoE ship the same head (LAVisH's own AVQA head is not built here)
OFFICIAL_AVQA_HEADS = {"dgsct": {"shared": AVSTAVQAHead, "separate": AVSTAVQAHead},
                       "avmoe": {"shared": AVSTAVQAHead, "separate": AVSTAVQAHead}}
