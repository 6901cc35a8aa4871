"""Pictures of AVE results: predicted vs true event timelines, one row per clip.

Part of molt-av (Apache-2.0). matplotlib is imported on use (the ``[train]`` extra).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch

__all__ = ["plot_timelines", "plot_predicted_timeline"]

_logger = logging.getLogger(__name__)

_LEGEND_COLUMNS = 4


def _class_colour(index: int) -> tuple[float, ...]:
    """A distinct colour per event class: tab20 without its two greys (kept for background), then tab20b."""
    from matplotlib import colormaps

    palette = [colormaps["tab20"](i) for i in range(20) if i not in (14, 15)]
    palette += [colormaps["tab20b"](i) for i in range(20)]
    return palette[index % len(palette)]


def plot_timelines(predictions: Any, targets: Any, video_ids: Sequence[str], class_names: Sequence[str] | None,
                   path: str | os.PathLike, max_clips: int = 8, background_index: int | None = None) -> Path:
    """Write a PNG of true vs predicted event timelines, one panel per clip (the first ``max_clips`` clips).

    Each panel has two rows of ``T`` one-second cells, "true" above "predicted", coloured by class (background
    grey); wrongly predicted cells are marked with a cross. Rendered with matplotlib's Agg canvas (no display and
    no global backend change needed).

    Args:
        predictions, targets: segment class indices ``(N, T)``.
        video_ids: ``N`` clip names (panel titles).
        class_names: names of the ``C`` event classes; background is class ``C``. When ``None``, classes are
            called ``class i`` and background is ``background_index`` (default: the largest index seen).
        path: output file (parent directories are created).
        max_clips: how many clips to draw.
        background_index: background class index when ``class_names`` is ``None``.

    Returns:
        the written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    predictions = torch.as_tensor(predictions).long().cpu()
    targets = torch.as_tensor(targets).long().cpu()
    if predictions.ndim != 2 or predictions.shape != targets.shape:
        raise ValueError(f"expected predictions and targets of the same shape (N, T), got "
                         f"{tuple(predictions.shape)} and {tuple(targets.shape)}")
    if len(video_ids) != predictions.shape[0]:
        raise ValueError(f"expected {predictions.shape[0]} video ids, got {len(video_ids)}")
    if predictions.shape[0] == 0:
        raise ValueError("plot_timelines needs at least one clip")
    if max_clips < 1:
        raise ValueError(f"max_clips must be >= 1, got {max_clips}")
    if class_names is not None:
        background = len(class_names)
        names = list(class_names)
    else:
        seen = int(max(predictions.max(), targets.max())) if predictions.numel() else 0
        background = seen if background_index is None else background_index
        names = [f"class {i}" for i in range(background)]
        if background_index is None:
            _logger.warning("plot_timelines: no class names given; taking class %d as background", background)
    if predictions.numel() and int(max(predictions.max(), targets.max())) > background:
        raise ValueError(f"labels exceed the background index {background}")

    count = min(max_clips, predictions.shape[0])
    segments = predictions.shape[1]
    shown = set(predictions[:count].flatten().tolist()) | set(targets[:count].flatten().tolist())
    legend_rows = math.ceil(len(shown) / _LEGEND_COLUMNS)
    legend_height = 0.3 + 0.22 * legend_rows
    height = 1.05 * count + 0.4 + legend_height
    figure = Figure(figsize=(max(6.0, 0.6 * segments + 2.5), height))
    FigureCanvasAgg(figure)
    axes = figure.subplots(count, 1, squeeze=False)[:, 0]
    grey = (0.82, 0.82, 0.82, 1.0)
    used: set[int] = set()
    for row, axis in enumerate(axes):
        for lane, (label, values) in enumerate((("true", targets[row]), ("pred", predictions[row]))):
            y = 1 - lane
            for t, value in enumerate(values.tolist()):
                colour = grey if value == background else _class_colour(value)
                used.add(value)
                axis.broken_barh([(t, 1)], (y + 0.08, 0.84), facecolors=colour, edgecolors="white", linewidth=1)
                if lane == 1 and value != int(targets[row, t]):
                    axis.plot(t + 0.5, y + 0.5, marker="x", color="black", markersize=7)
        accuracy = float((predictions[row] == targets[row]).float().mean())
        axis.set_title(f"{video_ids[row]}  (segment accuracy {100 * accuracy:.0f} %)", fontsize=8, loc="left")
        axis.set_xlim(0, segments)
        axis.set_ylim(0, 2)
        axis.set_yticks([1.5, 0.5], ["true", "pred"], fontsize=8)
        axis.set_xticks(range(segments + 1))
        axis.tick_params(axis="x", labelsize=7)
    axes[-1].set_xlabel("time (s)")
    handles = [Patch(facecolor=grey if value == background else _class_colour(value),
                     label="background" if value == background else names[value])
               for value in sorted(used)]
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=min(_LEGEND_COLUMNS, len(handles)), fontsize=7,
                      frameon=False)
    figure.tight_layout(rect=(0, legend_height / height, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def plot_predicted_timeline(labels: Sequence[int], event_probability: Sequence[float], names: Sequence[str],
                            path: str | os.PathLike, title: str = "") -> Path:
    """Write a PNG of one video's predicted timeline: a row of one-second cells coloured by the predicted class
    (background grey, the last of ``names``) under the curve of the event probability.

    Args:
        labels: predicted class index per second (``len(names) - 1`` is background).
        event_probability: ``P(event)`` per second.
        names: class names, background last.
        path: output file (parent directories are created).
        title: figure title.

    Returns:
        the written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if len(labels) != len(event_probability) or not labels:
        raise ValueError(f"expected one label and one probability per second (at least one), got {len(labels)} "
                         f"and {len(event_probability)}")
    background = len(names) - 1
    seconds = len(labels)
    shown = sorted(set(labels))
    figure = Figure(figsize=(min(max(6.0, 0.35 * seconds + 2.0), 30.0), 2.9))
    FigureCanvasAgg(figure)
    curve, cells = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    curve.step(range(seconds + 1), list(event_probability) + [event_probability[-1]], where="post", color="black")
    curve.axhline(0.5, color="grey", linewidth=0.6, linestyle="--")
    curve.set_ylim(0, 1)
    curve.set_ylabel("P(event)", fontsize=8)
    curve.set_title(title, fontsize=9, loc="left")
    grey = (0.82, 0.82, 0.82, 1.0)
    for t, label in enumerate(labels):
        colour = grey if label == background else _class_colour(label)
        cells.broken_barh([(t, 1)], (0.08, 0.84), facecolors=colour, edgecolors="white", linewidth=1)
    cells.set_xlim(0, seconds)
    cells.set_ylim(0, 1)
    cells.set_yticks([0.5], ["pred"], fontsize=8)
    cells.set_xlabel("time (s)")
    cells.tick_params(axis="x", labelsize=7)
    handles = [Patch(facecolor=grey if label == background else _class_colour(label), label=names[label])
               for label in shown]
    figure.legend(handles=handles, loc="lower center", ncol=min(_LEGEND_COLUMNS, len(handles)), fontsize=7,
                  frameon=False)
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
