"""Pictures of MUSIC-AVQA results: accuracy per question type and the temporal attention per question.

Part of molt-av (Apache-2.0). matplotlib is imported on use (the ``[train]`` extra).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .metrics import TABLE_COLUMNS, TYPE_SHORT_NAMES
from .reader import FAMILY_ABBREVIATIONS

__all__ = ["plot_type_accuracy", "plot_attention"]


def _family_colour(family: str) -> str:
    return {"Audio": "#4c72b0", "Visual": "#55a868", "Audio-Visual": "#c44e52"}[family]


def plot_type_accuracy(metrics: Mapping[str, float], path: str | Path) -> Path:
    """PNG bar chart of the accuracy per sub-type (coloured by family), with the family averages and the overall
    accuracy as horizontal lines. Rendered with matplotlib's Agg canvas. Returns the written path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bars = [(family, subtype, metrics[f"{FAMILY_ABBREVIATIONS[family]}/{subtype}/accuracy"])
            for family, subtypes in TABLE_COLUMNS for subtype in subtypes
            if f"{FAMILY_ABBREVIATIONS[family]}/{subtype}/accuracy" in metrics]
    if not bars:
        raise ValueError("plot_type_accuracy needs at least one per-sub-type accuracy (e.g. 'AQ/Counting/accuracy')")
    figure = Figure(figsize=(max(5.0, 0.75 * len(bars) + 2.0), 3.6))
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    positions = range(len(bars))
    axis.bar(positions, [100 * value for _, _, value in bars], color=[_family_colour(f) for f, _, _ in bars])
    for x, (family, _, value) in zip(positions, bars):
        axis.text(x, 100 * value + 1, f"{100 * value:.1f}", ha="center", fontsize=7)
    axis.set_xticks(list(positions), [f"{FAMILY_ABBREVIATIONS[f]}\n{TYPE_SHORT_NAMES[s]}" for f, s, _ in bars],
                    fontsize=8)
    for family, _ in TABLE_COLUMNS:
        key = f"{FAMILY_ABBREVIATIONS[family]}/accuracy"
        if key in metrics:
            axis.axhline(100 * metrics[key], color=_family_colour(family), linestyle=":", linewidth=1,
                         label=f"{FAMILY_ABBREVIATIONS[family]} {100 * metrics[key]:.1f}")
    if not math.isnan(metrics.get("accuracy", float("nan"))):
        axis.axhline(100 * metrics["accuracy"], color="black", linestyle="--", linewidth=1,
                     label=f"all {100 * metrics['accuracy']:.1f}")
    axis.set_ylim(0, 105)
    axis.set_ylabel("accuracy (%)")
    axis.legend(fontsize=7, loc="lower right", ncol=2)
    axis.set_title("MUSIC-AVQA accuracy per question type", fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def plot_attention(samples: list[tuple[dict[str, torch.Tensor], dict[str, Any]]], vocab: Sequence[str],
                    answers: Sequence[str], path: Path, max_questions: int = 6) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = []
    for outputs, batch in samples:
        predicted = outputs["answer_logits"].argmax(dim=-1)
        for b in range(predicted.shape[0]):
            if len(rows) == max_questions:
                break
            ids = torch.as_tensor(batch["question"])[b].tolist()
            words = [vocab[i] if 0 <= i < len(vocab) else "?" for i in ids if i != 0]
            truth = int(torch.as_tensor(batch["answer"]).reshape(-1)[b])
            maps = {m: outputs[f"temporal_attention_{m}"][b].detach().float().cpu() for m in ("audio", "visual")
                    if f"temporal_attention_{m}" in outputs}
            rows.append((" ".join(words), answers[int(predicted[b])], answers[truth] if truth >= 0 else "?", maps))
    figure = Figure(figsize=(7.0, 1.15 * len(rows) + 0.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), 1, squeeze=False)[:, 0]
    for axis, (text, predicted, truth, maps) in zip(axes, rows):
        names = list(maps)
        image = torch.stack([maps[m] for m in names]).numpy()
        axis.imshow(image, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)   # uniform = 1/T: dark
        axis.set_yticks(range(len(names)), names, fontsize=7)
        axis.set_xticks(range(image.shape[1]))
        axis.tick_params(axis="x", labelsize=6)
        mark = "ok" if predicted == truth else "wrong"
        axis.set_title(f"{text}?  predicted: {predicted}, true: {truth} ({mark})", fontsize=7, loc="left")
    axes[-1].set_xlabel("segment (s); colour: question-guided attention weight, 0 (dark) to 1 (bright)", fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
