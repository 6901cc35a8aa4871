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
counts come from the data (the scripts hard-code 93 words and 42 answers); both scripts initialise ``fc_a1``,
``fc_a2``, ``fc_gl`` (our ``visual_segment``) and ``fc1``-``fc4`` (our ``match``) from an audio-visual grounding
checkpoint (``grounding_gen/models_grounding_gen/lavish_grounding_gen_best.pt``: DG-SCT ``main_avst.py`` l.252-262,
AVMoE ``main_avst_v2.py`` l.339-351), a file the repositories do not hold, so here they start at random. Parts
the repository builds and counts but never calls are not built: ``fc_a1_pure``, ``fc_a2_pure``, ``norm3``
(:meth:`AVSTAVQAHead.script_only_parameters`). Its script also counts every Swin parameter named ``norm`` as
trainable while it stays frozen (``--is_vit_ln 0``): :meth:`AVSTAVQAHead.script_trainable_frozen`.

**LAVisH** (:class:`LAVisHAVQAHead`): ``GenjiB/LAVISH`` @97722b0, ``AVQA/net_grd_avst/net_avst.py``
(``AVQA_Fusion_Net``, l.204-489) with its loss and counts in ``AVQA/net_grd_avst/main_avst.py`` (``train`` l.74-97,
``main`` l.246-286) and the options of ``AVQA/net_grd_avst/base_options.py`` (``AVQA/train.sh`` sets none of the
model's). One Swin-V2-L reads the frames and the audio fbank, so ``D_a = D_v = 1536``; the head is the one above at
``C = 512`` with one layer more:

0. every final visual token is projected, ``Linear(D_v, 512)`` (``yb_fc_v``, l.263, applied l.361), and the
   grounding of step 3 reads the projected ``(B*T, N, 512)`` grid; the negatives' tokens (the frozen Swin without
   adapters, under ``no_grad``, l.365-368) pass the same projection *with* gradient (l.373);
1. question: ``QstEncoder(93, 512, 512, 1, 512)`` (l.244): the LSTM of step 1 at 512;
2. audio: ``Linear(relu(Linear(D_a, 512)(a)))``: the script projects each final audio token with ``yb_fc_a``
   (``Linear(1536, 512)``, l.264, l.362), averages them (l.379), then ``fc_a2(relu(.))`` (l.389-390; the call of
   ``fc_a1`` is commented out): the same two linears as DG-SCT's ``fc_a1`` / ``fc_a2`` (the mean commutes with the
   linear, so the method's mean-pooled audio gives the same vector);
3.-6. grounding (l.396-418), audio-visual match (``fc1`` ``1024 -> 512``, l.420-455), question-guided temporal
   attention (l.462-478), fusion and answer (l.480-487): DG-SCT's steps at ``C = 512``.

Loss: ``CE(answer) + 0.5 CE(match)`` (``main_avst.py`` l.86-88), as DG-SCT's. Built and counted but never called
(:meth:`LAVisHAVQAHead.script_only_parameters`): ``fc_a1`` and ``fc_a1_pure`` (``128 -> 512``, VGGish widths),
``fc_a2_pure``, ``fc_v`` (``2048 -> 512``, ResNet width), ``fc_st``, ``fc`` (``1024 -> 512``), ``fc_aq``, ``fc_vq``
and ``norm3``: 2,757,632 parameters (DG-SCT's uncalled parts are 3,545,088). The script counts the Swin's ``norm``
weights as trainable as DG-SCT's does (``main_avst.py`` l.258-262; ``--is_vit_ln 0``, ``base_options.py`` l.83).
Departures beyond DG-SCT's (above): the script initialises ``fc_a2``, ``fc_gl`` (our ``visual_segment``) and
``fc1``-``fc4`` (our ``match``) from its audio-visual grounding checkpoint
(``grounding_gen/models_grounding_gen/main_grounding_gen_best.pt``, ``main_avst.py`` l.228-240), here they start at
random; the final LayerNorm the script applies to both modalities (``self.swin.norm``, l.358-359) is not applied.
With two backbones (Swin-V2-L + HTS-AT, which LAVisH's repository does not ship) the same head reads the 768-wide
HTS-AT audio (``Linear(768, 512)`` in place of ``yb_fc_a``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .head import AVQAAnswerHead, AVQAHeadConfig, float32_lstm, negative_partners

__all__ = ["AVSTAVQAHead", "LAVisHAVQAHead", "OFFICIAL_AVQA_HEADS"]

_HEADS = 4
#: LAVisH's head width (``net_avst.py`` l.212-264)
_LAVISH_WIDTH = 512


class _QuestionLSTM(nn.Module):
    """``(B, L)`` token ids -> ``(B, C)`` (step 1 of the module docstring)."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.lstm = nn.LSTM(dim, dim, num_layers=1, batch_first=True)
        self.out = nn.Linear(2 * dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, (hidden, cell) = float32_lstm(self.lstm, torch.tanh(self.embed(tokens)))
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
            scale); the head works at ``C = width``.
        question_vocab, answers, question_types: as for :class:`~molt.tasks.avqa.head.AVQAHead`.
        width: the head's width ``C`` (default ``visual_dim``, DG-SCT's); a subclass whose ``C`` differs from
            ``visual_dim`` sets :attr:`visual_in` to its projection of the visual tokens.

    Outputs of :meth:`forward`: ``answer_logits (B, A)``, ``match_logits`` and ``negative_match_logits (B, T, 2)``
    (class 1 = matched), ``negative_valid (B,)``, ``spatial_attention (B, T, N)`` and
    ``temporal_attention_audio`` / ``temporal_attention_visual (B, T)``.
    """

    #: the modalities whose final tokens the in-block method pools for this head: the audio only (the grounding
    #: reads the visual grid)
    pooled_modalities = ("audio",)

    def __init__(self, config: AVQAHeadConfig | None = None, *, visual_dim: int, audio_dim: int,
                 question_vocab: Sequence[str], answers: Sequence[str],
                 question_types: Sequence[str] | None = None, width: int | None = None) -> None:
        super().__init__()
        config = config or AVQAHeadConfig()
        if config.modalities != "both":
            raise ValueError(f"the {type(self).__name__} reads both modalities, got modalities={config.modalities!r}")
        width = visual_dim if width is None else width
        if width % _HEADS:
            raise ValueError(f"the head's width ({width}) must be a multiple of {_HEADS} attention heads")
        self._setup_answers(config, question_vocab, answers, question_types)
        self.dims = {"visual": visual_dim, "audio": audio_dim}
        self.width = width
        #: ``(..., D_v) -> (..., C)`` applied to every visual token before the grounding (none for DG-SCT)
        self.visual_in: nn.Module = nn.Identity()
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
        """``visual (B*T, N, D_v)`` (projected to ``(B*T, N, C)`` by :attr:`visual_in`), ``audio (B*T, K, D_a)``
        (``K`` pooled tokens, averaged) and the batch's ``question (B, L)`` -> the outputs listed in the class
        docstring."""
        tokens = torch.as_tensor(batch["question"]).long()
        batch_size = tokens.shape[0]
        grid = self._check("visual", visual, batch_size)
        audio = self.audio_in(self._check("audio", audio, batch_size).mean(dim=2))
        question = self.question(tokens.to(audio.device))
        visual_segments, spatial = self._ground(audio, self.visual_in(grid))
        partner, valid = negative_partners(batch.get("video_id"), batch_size)
        negative_segments, _ = self._ground(audio, self.visual_in(grid[partner.to(grid.device)].detach()))
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


class LAVisHAVQAHead(AVSTAVQAHead):
    """LAVisH's MUSIC-AVQA head and loss: :class:`AVSTAVQAHead` at ``C = 512`` after a ``Linear(D_v, 512)`` on every
    visual token (``yb_fc_v``), its audio path ``Linear(D_a, 512)`` (``yb_fc_a``) -> ReLU -> ``Linear(512, 512)``
    (``fc_a2``); see the module docstring.

    Arguments and outputs as :class:`AVSTAVQAHead` (``D_v = D_a = 1536`` at paper scale with one Swin-V2-L reading
    both modalities; ``D_a = 768`` with HTS-AT).
    """

    def __init__(self, config: AVQAHeadConfig | None = None, *, visual_dim: int, audio_dim: int,
                 question_vocab: Sequence[str], answers: Sequence[str],
                 question_types: Sequence[str] | None = None) -> None:
        super().__init__(config, visual_dim=visual_dim, audio_dim=audio_dim, question_vocab=question_vocab,
                         answers=answers, question_types=question_types, width=_LAVISH_WIDTH)
        self.visual_in = nn.Linear(visual_dim, _LAVISH_WIDTH)

    @classmethod
    def script_only_parameters(cls) -> dict[str, int]:
        """Parameters LAVisH's head registers (and its script counts as trainable) but never calls, at the script's
        fixed widths (``net_avst.py`` l.212-238; independent of the backbones): ``fc_a1``, ``fc_a1_pure``
        (``128 -> 512``), ``fc_a2_pure``, ``fc_st``, ``fc_aq``, ``fc_vq`` (``512 -> 512``), ``fc_v``
        (``2048 -> 512``), ``fc`` (``1024 -> 512``) and ``norm3`` (LayerNorm 512)."""
        width = _LAVISH_WIDTH

        def linear(inputs: int) -> int:
            return (inputs + 1) * width

        return {"fc_a1 + fc_a1_pure (128 -> 512, never called)": 2 * linear(128),
                "fc_a2_pure, fc_st, fc_aq, fc_vq (512 -> 512, never called)": 4 * linear(width),
                "fc_v (2048 -> 512) + fc (1024 -> 512) (never called)": linear(2048) + linear(1024),
                "norm3 (never called)": 2 * width}


#: method name -> its own AVQA head per setting (registered with :func:`molt.tasks.spec.register_official_heads`);
#: DG-SCT and AVMoE ship the same head; LAVisH's (its repository's, one Swin reading both modalities) is used with
#: two backbones too: DG-SCT's 1536-wide head there would count 430.6 M in all, far from the MoLT paper's 367.4 M
#: for "LAVisH (Swin-V2-L + HTS-AT)", LAVisH's 512-wide one 372.0 M (``molt params avqa --heads``)
OFFICIAL_AVQA_HEADS = {"lavish": {"shared": LAVisHAVQAHead, "separate": LAVisHAVQAHead},
                       "dgsct": {"shared": AVSTAVQAHead, "separate": AVSTAVQAHead},
                       "avmoe": {"shared": AVSTAVQAHead, "separate": AVSTAVQAHead}}
