"""``molt predict avqa``: the answer to a typed question about one user video.

Part of molt-av (Apache-2.0). The video is decoded as ``molt prepare avqa`` decodes MUSIC-AVQA clips (ten
one-second segments spread evenly over the whole clip, 16-bit audio); the question is split into words as the
release's questions are and encoded with the model's own vocabulary (its training questions' words). Words
outside it become ``<unk>``; the answer is still given, with the words named in a warning and the result.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ...data.media import MediaError
from ...data.prepared import media_tensors
from ..base import batch_to
from ..predicting import model_input, require_video
from .prepared import decode_spread_seconds
from .reader import encode_question, tokenize
from .templates import recognise_question

__all__ = ["predict_video"]

_logger = logging.getLogger(__name__)
_TOP = 5


@torch.no_grad()
def predict_video(model: nn.Module, task_options: Mapping[str, Any], video: str | os.PathLike, *,
                  out_dir: str | os.PathLike, question: str) -> dict[str, Any]:
    """``model``'s (in eval mode) answer to ``question`` about one video, with its top-5 probabilities, the
    question's family and sub-type when it follows a MUSIC-AVQA template, and the question-guided temporal
    attention over the sampled seconds (``attention.png`` in ``out_dir``).

    Raises:
        ValueError: an empty question (no word).
        molt.data.media.MediaError: the video cannot be used.
    """
    require_video(video, "avqa")
    words = tokenize(question)
    if not words:
        raise ValueError(f"--question {question!r} has no word; type a question about the video")
    vocabulary = list(task_options["question_vocab"])
    known = set(vocabulary)
    unknown = list(dict.fromkeys(word for word in words if word not in known))
    if unknown:
        _logger.warning("words outside the model's vocabulary of %d words, read as <unk>: %s", len(vocabulary),
                        ", ".join(unknown))
    segments = model.task.num_segments
    (_, _, frames, pcm, status, detail), seconds = decode_spread_seconds(
        (0, str(video), str(video), {**model_input(model), "num_segments": segments}))
    if frames is None:
        raise MediaError(video, status, detail)
    batch = {key: value[None] for key, value in media_tensors(frames, pcm).items()}
    batch["question"] = torch.tensor([encode_question(words, vocabulary, len(words))])
    batch["question_length"] = torch.tensor([len(words)])
    outputs = batch_to(model(batch).predictions, "cpu")
    probabilities = torch.softmax(outputs["answer_logits"][0].float(), dim=-1)
    answers = list(task_options["answers"])
    top = torch.topk(probabilities, k=min(_TOP, len(answers)))
    ranked = [{"answer": answers[i], "probability": round(float(p), 4)} for p, i in zip(top.values, top.indices)]
    attention = {modality: [round(float(w), 4) for w in outputs[f"temporal_attention_{modality}"][0]]
                 for modality in ("audio", "visual") if f"temporal_attention_{modality}" in outputs}
    kind = recognise_question(question)
    picture = _plot(question, ranked[0]["answer"], attention, seconds, Path(out_dir) / "attention.png")
    summary = [f"{video}: {question}", f"  answer: {ranked[0]['answer']} (p={ranked[0]['probability']:.2f}); then "
               + ", ".join(f"{r['answer']} ({r['probability']:.2f})" for r in ranked[1:]),
               "  question type: " + (f"{kind['family']}/{kind['subtype']}" if kind else "not a MUSIC-AVQA template")]
    if unknown:
        summary.append(f"  words outside the vocabulary (read as <unk>): {', '.join(unknown)}")
    return {"video": str(video), "question": question, "words": words, "unknown_words": unknown,
            "answer": ranked[0]["answer"], "top": ranked, "question_type": kind, "segment_seconds": seconds,
            "temporal_attention": attention, "summary": summary, "files": [str(picture)]}


def _plot(question: str, answer: str, attention: Mapping[str, list[float]], seconds: list[int], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 0.5 * len(attention) + 1.3))
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    names = list(attention)
    axis.imshow(torch.tensor([attention[m] for m in names]).numpy(), aspect="auto", cmap="viridis", vmin=0.0,
                vmax=1.0)
    axis.set_yticks(range(len(names)), names, fontsize=8)
    axis.set_xticks(range(len(seconds)), [f"{s}" for s in seconds], fontsize=7)
    axis.set_xlabel("second of the clip; colour: question-guided attention, 0 (dark) to 1 (bright)", fontsize=7)
    axis.set_title(f"{question}  ->  {answer}", fontsize=8, loc="left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
