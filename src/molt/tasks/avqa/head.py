"""Audio-visual question answering (MUSIC-AVQA): the head and its loss (per-type accuracy, majority baseline and
table in :mod:`.metrics`, pictures in :mod:`.figures`).

MUSIC-AVQA (Li et al., CVPR 2022): a question about a clip of ``T = 10`` one-second segments is answered with one
of ``A`` answers (42 in the real data set). Questions come in three families, audio (AQ), visual (VQ) and
audio-visual (AVQ), split into the sub-types of :data:`molt.tasks.avqa.reader.QUESTION_TYPES`; the metric is answer
accuracy overall, per family and per sub-type.

The head follows the spatio-temporal grounding network that the setups MoLT reports against use on MUSIC-AVQA
(AVST of Li et al., as used by LAVisH, DG-SCT and AVMoE), on MoLT's fused tokens ``visual (B*T, K, D)`` and
``audio (B*T, K, D)``; it is the common head of every method (DG-SCT's and AVMoE's own, ``method_config.head:
official``, is in :mod:`.official` and shares :class:`AVQAAnswerHead` with it):

1. **question encoder**: word embedding (``<pad>`` = 0) -> tanh -> LSTM over the real words (packed by
   ``question_length``) -> ``[h_n, c_n]`` of the last layer -> tanh -> Linear to ``q (B, H)``;
2. per segment, feature standardisation (BatchNorm over all tokens, see below) + Linear ``D -> H`` of every token;
   the audio tokens are averaged into one vector ``a_t (B, T, H)``;
3. **audio-guided spatial grounding**: softmax over the ``K`` visual tokens of ``s * cos(v_tk, a_t)`` (``s`` a
   learned scale, starting at 10), weighted sum ``g_t``; ``v_t = tanh(Linear([g_t, mean_k v_tk]))``;
4. **audio-visual matching** (auxiliary): a two-layer MLP on ``[a_t, v_t]`` -> 2 logits (matched / not matched)
   per segment, for the clip's own visual tokens (positive) and for those of another clip of the batch grounded
   with this clip's audio (negative);
5. **question-guided temporal attention**: per modality, multi-head attention (``num_heads``) with query ``q`` over
   the ``T`` segment vectors, then a residual feed-forward block and LayerNorm, plus the mean over ``T``;
6. **fusion and answer**: ``f = tanh(Linear([a, v]))``, ``tanh(f * q)`` -> Dropout -> Linear to ``A`` logits.

Loss: ``CE(answer) + match_weight * CE(match)`` (``match_weight`` 0.5 as in the peers), the match term over the
positive and negative pairs of every clip that has a negative (balanced, one of each per segment).

Departures from the peers (documented choices):

* **Spatial set.** The peers ground the audio over a 6x6 grid of Swin-V2 patch features (14x14 ResNet features in
  AVST). MoLT hands the head ``K`` fused latent tokens per segment and no grid, so the grounding attends over the
  ``K`` visual tokens. A learned scale ``s`` sharpens the cosine softmax, which over a handful of tokens would stay
  almost uniform.
* **Negatives.** The peers' dataloader draws a frame of another video per segment (``visual_nega``), an extra
  backbone pass. Here the negative of clip ``b`` pairs its audio with the visual tokens of the next clip of the
  same batch from *another* video (cyclically); several questions of one video in a batch are never paired with
  each other, and a batch holding a single video has no negative (match term 0). The negatives cost nothing and
  only change the auxiliary loss: in evaluation, predictions and metrics never depend on the batch composition.
* **Segment order.** A learned position embedding per segment is added before the temporal attention (the peers
  have none; MoLT's per-segment tokens carry no time information, and "which instrument sounds first" needs it).
  ``temporal_layers`` (default 0 = the peers' design) adds pre-norm Transformer encoder layers over the segments
  of each modality.
* **Input standardisation.** Each token feature is standardised with BatchNorm statistics (over all tokens of
  the batch; running statistics in evaluation) before the projection; ``input_norm="layer"`` uses a LayerNorm per
  token instead. Frozen-backbone tokens share a large common component across clips, and a per-token LayerNorm
  keeps it: trained alone on the tiny backbones' taps of the synthetic MUSIC-AVQA set, the head with LayerNorm
  stayed at the per-type answer prior for 12 epochs and with BatchNorm reached 62 % validation accuracy in 8
  (the AVST head reads ResNet/VGGish features through plain linear layers).
* Single-modality heads (``modalities="audio"`` / ``"visual"``) skip the grounding (visual: mean of the tokens)
  and the matching term and never read the other modality's tokens.

Metrics (:meth:`AVQAHead.compute_metrics`), from counts summed over the whole split (any batch size gives the same
figures): ``accuracy`` (overall), ``AQ/accuracy``, ``VQ/accuracy``, ``AVQ/accuracy`` (summed correct / summed
count of the family) and ``AQ/Counting/accuracy``-style keys per sub-type, for the families and sub-types seen.
:func:`format_avqa_table` prints them like the paper's Tab. 1 (with the sub-type columns of the MUSIC-AVQA paper).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from ...typed_config import ranged
from ..base import HeadConfig, TaskHead
from .figures import plot_attention, plot_type_accuracy
from .metrics import avqa_metrics, cell_counts, format_avqa_table, metrics_from_counts
from .reader import FAMILIES, QUESTION_TYPES, SUBTYPES, question_type_name

__all__ = ["AVQAHead", "AVQAHeadConfig", "AVQAAnswerHead", "negative_partners", "bench_targets", "float32_lstm"]

_logger = logging.getLogger(__name__)


def negative_partners(video_ids: Sequence[str] | None, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each clip of a batch, the next clip (cyclically) from another video, and whether one exists.

    Returns:
        ``partner (B,)`` int64 (the clip itself when there is none) and ``valid (B,)`` bool.
    """
    ids = list(video_ids) if video_ids is not None else [str(i) for i in range(batch_size)]
    if len(ids) != batch_size:
        raise ValueError(f"got {len(ids)} video ids for a batch of {batch_size}")
    partner, valid = list(range(batch_size)), [False] * batch_size
    for b in range(batch_size):
        for step in range(1, batch_size):
            other = (b + step) % batch_size
            if ids[other] != ids[b]:
                partner[b], valid[b] = other, True
                break
    return torch.tensor(partner, dtype=torch.long), torch.tensor(valid, dtype=torch.bool)


def float32_lstm(lstm: nn.LSTM, inputs: torch.Tensor | PackedSequence) -> tuple[Any, tuple[torch.Tensor, torch.Tensor]]:
    """``lstm(inputs)`` in float32 with autocast off: the question LSTMs are small, and oneDNN has no bfloat16 LSTM
    for every shape (``bf16-mixed`` on a CPU failed with "could not create a primitive descriptor")."""
    with torch.autocast(device_type=lstm.weight_ih_l0.device.type, enabled=False):
        if isinstance(inputs, PackedSequence):
            inputs = inputs._replace(data=inputs.data.float())
        else:
            inputs = inputs.float()
        return lstm(inputs)


class _QuestionEncoder(nn.Module):
    """``(B, L)`` token ids + lengths -> ``(B, H)``: embedding -> tanh -> LSTM -> ``[h_n, c_n]`` -> tanh -> Linear."""

    def __init__(self, vocab_size: int, word_dim: int, hidden_dim: int, num_layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.lstm = nn.LSTM(word_dim, hidden_dim, num_layers=num_layers, batch_first=True)
        self.out = nn.Linear(2 * hidden_dim, hidden_dim)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        words = torch.tanh(self.embed(tokens))
        packed = pack_padded_sequence(words, lengths.clamp(1, tokens.shape[1]).cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, (hidden, cell) = float32_lstm(self.lstm, packed)
        return self.out(torch.tanh(torch.cat([hidden[-1], cell[-1]], dim=-1)))


class _TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the last dimension of tokens ``(..., D)``: every feature is standardised with statistics over
    all tokens of the batch (running statistics in evaluation)."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return super().forward(tokens.reshape(-1, tokens.shape[-1])).reshape(tokens.shape)


INPUT_NORMS = ("batch", "layer")


class _QuestionAttention(nn.Module):
    """Question-guided temporal attention over ``(B, T, H)``: attention with query ``q``, residual FFN, LayerNorm,
    plus the mean over ``T``. Returns ``(B, H)`` and the attention weights ``(B, T)``."""

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(hidden_dim, num_heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden_dim, hidden_dim))
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden_dim)

    def forward(self, question: torch.Tensor, sequence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.attention(question[:, None], sequence, sequence, need_weights=True)
        attended = attended[:, 0]
        attended = self.norm(attended + self.dropout(self.ffn(attended)))
        return attended + sequence.mean(dim=1), weights[:, 0]


@dataclass
class AVQAHeadConfig(HeadConfig):
    """Options of the MUSIC-AVQA head (the ``head:`` section).

    Attributes:
        hidden_dim: width ``H`` of the head (default: the token width ``D``).
        word_dim: word embedding width (default: ``H``).
        lstm_layers: LSTM layers of the question encoder.
        num_heads: heads of the question-guided temporal attention (must divide ``H``).
        num_segments: most segments per clip ``T`` (size of the position embedding; MUSIC-AVQA: 10).
        temporal_layers: Transformer encoder layers over the segments of each modality (0: the peers' design).
        position_embedding: add a learned embedding per segment before the temporal attention.
        grounding_scale: initial scale ``s`` of the grounding cosine similarities (learned).
        dropout: dropout in the attention blocks and before the answer classifier.
        match_weight: weight of the audio-visual matching loss (0 disables it).
        input_norm: ``"batch"`` (standardise every token feature over the batch, running statistics in evaluation)
            or ``"layer"`` (LayerNorm per token) before the projection ``D -> H``.
    """

    hidden_dim: int | None = ranged(None, at_least=1, meaning="width of the head, null: the token width")
    word_dim: int | None = ranged(None, at_least=1, meaning="word embedding width, null: hidden_dim")
    lstm_layers: int = ranged(1, at_least=1, meaning="LSTM layers of the question encoder")
    num_heads: int = ranged(4, at_least=1, meaning="attention heads, dividing hidden_dim")
    num_segments: int = ranged(10, at_least=1, meaning="segments per clip")
    temporal_layers: int = ranged(0, at_least=0, meaning="Transformer layers over the segments, 0: none")
    position_embedding: bool = True
    grounding_scale: float = ranged(10.0, above=0, meaning="initial scale of the grounding similarities")
    dropout: float = ranged(0.1, at_least=0, below=1, meaning="dropout probability")
    match_weight: float = ranged(0.5, at_least=0, meaning="weight of the matching loss, 0: off")
    input_norm: str = "batch"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {', '.join(INPUT_NORMS)}, got {self.input_norm!r}")


class AVQAAnswerHead(TaskHead):
    """What every MUSIC-AVQA head shares (ours and the peers' own, :mod:`.official`): the answer vocabulary, the
    loss ``CE(answer) + match_weight * CE(match)`` on ``answer_logits (B, A)`` and, when present,
    ``match_logits`` / ``negative_match_logits (B, T, 2)`` with ``negative_valid (B,)``, the per-type accuracy
    summed over a split, its table and pictures.

    Subclasses call :meth:`_setup_answers` in ``__init__`` and implement ``forward``.
    """

    name = "avqa"
    config_class = AVQAHeadConfig

    def _setup_answers(self, config: AVQAHeadConfig, question_vocab: Sequence[str], answers: Sequence[str],
                       question_types: Sequence[str] | None) -> None:
        if len(question_vocab) < 2 or question_vocab[0] != "<pad>":
            raise ValueError(f"question_vocab must start with '<pad>' (id 0) and hold at least one more word, got "
                             f"{list(question_vocab[:3])}... ({len(question_vocab)} words); take it from the data "
                             f"(PreparedAVQA.task_options())")
        if len(answers) < 1 or len(set(answers)) != len(answers):
            raise ValueError(f"answers must be a non-empty list of distinct strings, got {len(answers)} answers")
        names = list(question_types) if question_types is not None else [question_type_name(*t)
                                                                         for t in QUESTION_TYPES]
        for name in names:
            family, _, subtype = name.partition("/")
            if family not in FAMILIES or subtype not in SUBTYPES:
                raise ValueError(f"question type {name!r} is not 'Family/Sub-type' with a family of {FAMILIES} and "
                                 f"a sub-type of {SUBTYPES}")
        self.config = config
        self.num_segments = config.num_segments
        self.modalities = config.modalities
        self.match_weight = config.match_weight
        self.question_vocab = list(question_vocab)
        self.answers = list(answers)
        self.question_types = names
        self.reset_metrics()

    @property
    def num_answers(self) -> int:
        return len(self.answers)

    def _answers(self, batch: Mapping[str, Any], device: torch.device) -> torch.Tensor:
        answers = torch.as_tensor(batch["answer"]).long().reshape(-1).to(device)
        if answers.numel() and int(answers.max()) >= self.num_answers:
            raise ValueError(f"answer index {int(answers.max())} is out of range for {self.num_answers} answers; "
                             f"the head and the data must share one answer vocabulary")
        return answers

    def loss_terms(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Unweighted ``answer`` (cross-entropy, unknown answers ignored) and ``match`` (cross-entropy over the
        positive and negative pairs of the clips that have a negative; 0 when none has) losses."""
        logits = outputs["answer_logits"]
        answers = self._answers(batch, logits.device)
        if answers.shape[0] != logits.shape[0]:
            raise ValueError(f"got {answers.shape[0]} answers for {logits.shape[0]} questions")
        known = answers >= 0
        answer = F.cross_entropy(logits[known], answers[known]) if bool(known.any()) else logits.sum() * 0.0
        terms = {"answer": answer}
        if "match_logits" in outputs:
            valid = outputs["negative_valid"]
            positive, negative = outputs["match_logits"][valid], outputs["negative_match_logits"][valid]
            if positive.numel():
                pairs = torch.cat([positive, negative]).reshape(-1, 2)
                labels = torch.cat([torch.ones(positive.shape[:2]), torch.zeros(negative.shape[:2])])
                terms["match"] = F.cross_entropy(pairs, labels.reshape(-1).long().to(pairs.device))
            else:
                terms["match"] = outputs["match_logits"].sum() * 0.0
        return terms

    def loss(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> torch.Tensor:
        """``answer + match_weight * match`` (see :meth:`loss_terms`)."""
        terms = self.loss_terms(outputs, batch)
        return terms["answer"] + self.match_weight * terms.get("match", terms["answer"] * 0.0)

    def predict(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Answer indices ``(B,)`` int64."""
        return outputs["answer_logits"].argmax(dim=-1)

    @torch.no_grad()
    def update_metrics(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> None:
        predictions = self.predict(outputs).cpu()
        answers = self._answers(batch, torch.device("cpu"))
        if answers.shape != predictions.shape:
            raise ValueError(f"got {answers.numel()} answers for {predictions.numel()} questions")
        correct, total = cell_counts(predictions == answers, torch.as_tensor(batch["family"]).cpu(),
                                 torch.as_tensor(batch["subtype"]).cpu())
        self.accumulate("correct", correct)
        self.accumulate("total", total)

    def compute_metrics(self) -> dict[str, float]:
        """``accuracy`` and the per-family and per-sub-type accuracies (see the module docstring)."""
        state = self.__dict__.get("metric_state", {})
        if "total" not in state or not float(state["total"].sum()):
            _logger.warning("AVQA metrics computed before any question was added; returning nan")
            return {"accuracy": float("nan")}
        return metrics_from_counts(state["correct"], state["total"])

    def extra_repr(self) -> str:
        return (f"answers={self.num_answers}, question_vocab={len(self.question_vocab)}, "
                f"modalities={self.modalities!r}")

    # ------------------------------------------------------------------------------------------------------------
    # pictures

    def format_metrics(self, metrics: Mapping[str, float]) -> str:
        """Accuracy per question family and type, shaped like the paper's Tab. 1."""
        return format_avqa_table(metrics)

    def save_figures(self, samples: list[tuple[dict[str, torch.Tensor], dict[str, Any]]], out_dir: Path,
                     task_options: Mapping[str, Any]) -> list[Path]:
        """``avqa_accuracy_by_type.png`` (accuracy per sub-type, from the evaluated split's counts when there are
        any, else from ``samples``) and ``avqa_temporal_attention.png`` (question-guided attention over the
        segments for the first sample questions)."""
        out_dir = Path(out_dir)
        state = self.__dict__.get("metric_state", {})
        if "total" in state and float(state["total"].sum()):
            metrics = metrics_from_counts(state["correct"], state["total"])
        elif samples:
            metrics = avqa_metrics(torch.cat([self.predict(o).cpu() for o, _ in samples]),
                                   *(torch.cat([torch.as_tensor(b[k]).reshape(-1) for _, b in samples])
                                     for k in ("answer", "family", "subtype")))
        else:
            return []
        paths = [plot_type_accuracy(metrics, out_dir / "avqa_accuracy_by_type.png")]
        if samples and any(key.startswith("temporal_attention_") for key in samples[0][0]):
            vocab = list(task_options.get("question_vocab", self.question_vocab))
            answers = list(task_options.get("answers", self.answers))
            paths.append(plot_attention(samples, vocab, answers, out_dir / "avqa_temporal_attention.png"))
        return paths


class AVQAHead(AVQAAnswerHead):
    """MUSIC-AVQA head (question LSTM, audio-guided grounding, question-guided temporal attention), loss and
    per-type accuracy. See the module docstring for the architecture, the loss and the departures from the peers.

    Args:
        config: the head's options (:class:`AVQAHeadConfig`; default: its defaults).
        dim: width ``D`` of the method's fused tokens.
        question_vocab: question words (``<pad>`` first, id 0), from the training questions; its size sets the
            embedding table.
        answers: the answer vocabulary; its size ``A`` sets the classifier.
        question_types: ``"Family/Sub-type"`` names (kept for reports and pictures; default: the nine MUSIC-AVQA
            types).

    Batches hold ``question (B, L)`` int64 token ids and ``question_length (B,)`` (optional: counted from the
    non-``<pad>`` ids), and for the loss and metrics ``answer (B,)`` (``-1``: unknown answer, ignored by the loss
    and counted as wrong), ``family (B,)`` and ``subtype (B,)``; ``video_id`` picks the negatives.

    Outputs of :meth:`forward`: ``answer_logits (B, A)``; with both modalities also ``match_logits (B, T, 2)`` and
    ``negative_match_logits (B, T, 2)`` (class 1 = matched), ``negative_valid (B,)`` and ``spatial_attention
    (B, T, K)``; ``temporal_attention_audio`` / ``temporal_attention_visual (B, T)`` for the modalities read.
    """

    name = "avqa"
    config_class = AVQAHeadConfig

    def __init__(self, config: AVQAHeadConfig | None = None, *, dim: int, question_vocab: Sequence[str],
                 answers: Sequence[str], question_types: Sequence[str] | None = None) -> None:
        super().__init__()
        config = config or AVQAHeadConfig()
        hidden_dim = dim if config.hidden_dim is None else config.hidden_dim
        word_dim = hidden_dim if config.word_dim is None else config.word_dim
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if hidden_dim % config.num_heads:
            raise ValueError(f"num_heads ({config.num_heads}) must divide hidden_dim ({hidden_dim})")
        self._setup_answers(config, question_vocab, answers, question_types)
        modalities, num_heads, dropout = config.modalities, config.num_heads, config.dropout
        num_segments = config.num_segments
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.active = ["audio", "visual"] if modalities == "both" else [modalities]

        self.question = _QuestionEncoder(len(question_vocab), word_dim, hidden_dim, config.lstm_layers)
        norm = _TokenBatchNorm if config.input_norm == "batch" else nn.LayerNorm
        self.project = nn.ModuleDict({m: nn.Sequential(norm(dim), nn.Linear(dim, hidden_dim)) for m in self.active})
        if "visual" in self.active:
            self.visual_segment = nn.Linear(2 * hidden_dim, hidden_dim)
        if modalities == "both":
            self.log_scale = nn.Parameter(torch.tensor(math.log(config.grounding_scale)))
            self.match = nn.Sequential(nn.Linear(2 * hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 2))
        self.position = nn.Parameter(torch.zeros(1, num_segments, hidden_dim)) if config.position_embedding else None
        if self.position is not None:
            nn.init.trunc_normal_(self.position, std=0.02)
        self.temporal = nn.ModuleDict({m: nn.ModuleList(
            nn.TransformerEncoderLayer(hidden_dim, num_heads, dim_feedforward=2 * hidden_dim, dropout=dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(config.temporal_layers)) for m in self.active})
        self.attend = nn.ModuleDict({m: _QuestionAttention(hidden_dim, num_heads, dropout) for m in self.active})
        self.fuse = nn.Linear(len(self.active) * hidden_dim, hidden_dim)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_dim, len(answers)))

    # ------------------------------------------------------------------------------------------------------------
    # forward

    def _tokens(self, modality: str, tokens: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """``(B*T, K, D)`` -> projected ``(B, T, K, H)``."""
        if tokens is None or tokens.ndim != 3 or tokens.shape[-1] != self.dim:
            shape = None if tokens is None else tuple(tokens.shape)
            raise ValueError(f"expected {modality} tokens (B*T, K, {self.dim}), got {shape}")
        if tokens.shape[0] % batch_size:
            raise ValueError(f"expected B*T {modality} token rows for B = {batch_size} questions, got "
                             f"{tokens.shape[0]} rows")
        segments = tokens.shape[0] // batch_size
        if segments > self.num_segments:
            raise ValueError(f"clips have {segments} segments, more than the head's num_segments "
                             f"({self.num_segments})")
        return self.project[modality](tokens).reshape(batch_size, segments, tokens.shape[1], self.hidden_dim)

    def _ground(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio-guided spatial grounding: ``audio (B, T, H)``, ``visual (B, T, K, H)`` -> segment vectors
        ``(B, T, H)`` and the attention over the ``K`` tokens ``(B, T, K)``."""
        similarity = torch.einsum("btkh,bth->btk", F.normalize(visual, dim=-1), F.normalize(audio, dim=-1))
        weights = (self.log_scale.exp() * similarity).softmax(dim=-1)
        grounded = torch.einsum("btk,btkh->bth", weights, visual)
        return torch.tanh(self.visual_segment(torch.cat([grounded, visual.mean(dim=2)], dim=-1))), weights

    def _sequence(self, modality: str, sequence: torch.Tensor) -> torch.Tensor:
        if self.position is not None:
            sequence = sequence + self.position[:, :sequence.shape[1]]
        for layer in self.temporal[modality]:
            sequence = layer(sequence)
        return sequence

    def forward(self, visual: torch.Tensor | None, audio: torch.Tensor | None,
                batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Answer logits for fused tokens ``visual (B*T, K_v, D)`` and ``audio (B*T, K_a, D)`` and the questions of
        ``batch`` (``question (B, L)``, ``question_length (B,)``; ``video_id`` for the negatives).

        Only the tokens of :attr:`modalities` are read (the other may be ``None``).
        """
        tokens = torch.as_tensor(batch["question"]).long()
        if tokens.ndim != 2:
            raise ValueError(f"expected question token ids (B, L), got {tuple(tokens.shape)}")
        lengths = batch.get("question_length")
        lengths = (tokens != 0).sum(dim=1) if lengths is None else torch.as_tensor(lengths).long().reshape(-1)
        batch_size = tokens.shape[0]
        device = next(self.parameters()).device
        question = self.question(tokens.to(device), lengths)
        outputs: dict[str, torch.Tensor] = {}
        sequences: dict[str, torch.Tensor] = {}
        if "audio" in self.active:
            sequences["audio"] = self._tokens("audio", audio, batch_size).mean(dim=2)
        if "visual" in self.active:
            projected = self._tokens("visual", visual, batch_size)
            if self.modalities == "both":
                if projected.shape[1] != sequences["audio"].shape[1]:
                    raise ValueError(f"visual and audio tokens must have the same number of rows (B*T), got "
                                     f"{visual.shape[0]} and {audio.shape[0]}")
                sequences["visual"], outputs["spatial_attention"] = self._ground(sequences["audio"], projected)
                outputs.update(self._match(sequences["audio"], sequences["visual"], projected, batch))
            else:
                mean = projected.mean(dim=2)
                sequences["visual"] = torch.tanh(self.visual_segment(torch.cat([mean, mean], dim=-1)))
        pooled = []
        for modality in self.active:
            vector, weights = self.attend[modality](question, self._sequence(modality, sequences[modality]))
            outputs[f"temporal_attention_{modality}"] = weights
            pooled.append(vector)
        fused = torch.tanh(self.fuse(torch.cat(pooled, dim=-1)))
        outputs["answer_logits"] = self.classifier(torch.tanh(fused * question))
        return outputs

    def _match(self, audio: torch.Tensor, visual_segments: torch.Tensor, visual_tokens: torch.Tensor,
               batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        batch_size = audio.shape[0]
        video_ids = batch.get("video_id") if hasattr(batch, "get") else None
        partner, valid = negative_partners(video_ids, batch_size)
        partner = partner.to(audio.device)
        negative, _ = self._ground(audio, visual_tokens[partner])
        return {"match_logits": self.match(torch.cat([audio, visual_segments], dim=-1)),
                "negative_match_logits": self.match(torch.cat([audio, negative], dim=-1)),
                "negative_valid": valid.to(audio.device)}



def bench_targets(batch_clips: int, num_segments: int, task_options: dict[str, Any],
                  generator: torch.Generator) -> dict[str, Any]:
    """Random questions of 14 words ``(B, 14)`` from the vocabulary and answers ``(B,)`` for one benchmark step;
    one video per clip (so the audio-visual match loss pairs clips of different videos)."""
    vocabulary, answers = len(task_options["question_vocab"]), len(task_options["answers"])
    return {"question": torch.randint(2, vocabulary, (batch_clips, 14), generator=generator),
            "question_length": torch.full((batch_clips,), 14),
            "answer": torch.randint(0, answers, (batch_clips,), generator=generator),
            "video_id": [f"bench{i}" for i in range(batch_clips)]}
