"""Pictures of LLP (AVVP) results: per-second audio and visual events, hits, misses and false alarms.

Part of molt-av (Apache-2.0). matplotlib is imported on use (the ``[train]`` extra).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["plot_parsing", "plot_predicted_events"]

_CELL_COLOURS = {"hit": (0.20, 0.63, 0.17), "missed": (0.99, 0.55, 0.15), "false alarm": (0.12, 0.47, 0.71),
                 "absent": (0.93, 0.93, 0.93)}


def plot_parsing(predictions: Any, targets: Any, video_ids: Sequence[str], class_names: Sequence[str] | None,
                 path: str | os.PathLike, max_clips: int = 4) -> Path:
    """Write a PNG of per-second predictions against the truth, one row of two panels (heard, seen) per clip.

    Each panel is a raster of the classes that are true or predicted in the clip (rows) over the ``T`` segments
    (columns); a cell is a hit, a miss, a false alarm or absent. Rendered with matplotlib's Agg canvas.

    Args:
        predictions, targets: ``(N, T, 2, C)`` 0/1 (stream 0 audio, 1 visual).
        video_ids: ``N`` clip names.
        class_names: names of the ``C`` classes (``None``: ``class i``).
        path: output file (parent directories are created).
        max_clips: how many clips to draw.

    Returns:
        the written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    predictions = torch.as_tensor(predictions).cpu() > 0
    targets = torch.as_tensor(targets).cpu() > 0.5
    if predictions.ndim != 4 or predictions.shape[2] != 2 or predictions.shape != targets.shape:
        raise ValueError(f"expected predictions and targets of one shape (N, T, 2, C), got "
                         f"{tuple(predictions.shape)} and {tuple(targets.shape)}")
    if len(video_ids) != predictions.shape[0] or predictions.shape[0] == 0:
        raise ValueError(f"expected one video id per clip (at least one clip), got {len(video_ids)} ids for "
                         f"{predictions.shape[0]} clips")
    if max_clips < 1:
        raise ValueError(f"max_clips must be >= 1, got {max_clips}")
    classes = predictions.shape[-1]
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(classes)]
    count = min(max_clips, predictions.shape[0])
    shown = [torch.nonzero((predictions[i] | targets[i]).any(dim=0).any(dim=0)).flatten().tolist() or [0]
             for i in range(count)]
    heights = [len(rows) + 1.2 for rows in shown]
    figure = Figure(figsize=(11.0, 0.32 * sum(heights) + 1.0))
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(count, 2, height_ratios=heights, hspace=0.9, wspace=0.45)
    palette = {name: np.array(colour) for name, colour in _CELL_COLOURS.items()}
    for i, rows in enumerate(shown):
        for stream, title in enumerate(("heard (audio)", "seen (visual)")):
            pred = predictions[i, :, stream][:, rows].T.numpy()
            true = targets[i, :, stream][:, rows].T.numpy()
            image = np.empty(pred.shape + (3,))
            image[:] = palette["absent"]
            image[pred & true] = palette["hit"]
            image[~pred & true] = palette["missed"]
            image[pred & ~true] = palette["false alarm"]
            axis = figure.add_subplot(grid[i, stream])
            axis.imshow(image, aspect="auto", interpolation="nearest")
            axis.set_yticks(range(len(rows)), [names[r] for r in rows], fontsize=7)
            axis.set_xticks(range(pred.shape[1]), [str(t) for t in range(pred.shape[1])], fontsize=7)
            axis.set_xticks(np.arange(pred.shape[1] + 1) - 0.5, minor=True)
            axis.grid(which="minor", axis="x", color="white", linewidth=1.0)
            axis.tick_params(which="minor", length=0)
            axis.set_title(f"{video_ids[i]}: {title}", fontsize=8)
    figure.legend(handles=[Patch(color=colour, label=name) for name, colour in _CELL_COLOURS.items()],
                  loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=8, frameon=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_predicted_events(probabilities: Any, predicted: Any, class_names: Sequence[str], path: str | os.PathLike,
                          title: str = "", max_rows: int = 12) -> Path:
    """Write a PNG of one video's predicted events: two panels (heard, seen) of classes (rows) over seconds
    (columns), each cell shaded by its segment probability, predicted cells outlined.

    Args:
        probabilities: ``(T, 2, C)`` segment probabilities (stream 0 audio, 1 visual).
        predicted: ``(T, 2, C)`` 0/1 predictions.
        class_names: the ``C`` class names.
        path: output file (parent directories are created).
        title: figure title.
        max_rows: at most this many classes: the predicted ones, then the most probable others.

    Returns:
        the written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    probabilities = torch.as_tensor(probabilities).float().cpu()
    predicted = torch.as_tensor(predicted).cpu() > 0
    if probabilities.ndim != 3 or probabilities.shape[1] != 2 or probabilities.shape != predicted.shape:
        raise ValueError(f"expected probabilities and predictions of one shape (T, 2, C), got "
                         f"{tuple(probabilities.shape)} and {tuple(predicted.shape)}")
    seconds, _, classes = probabilities.shape
    order = sorted(range(classes), key=lambda c: (not bool(predicted[:, :, c].any()),
                                                  -float(probabilities[:, :, c].max())))
    rows = order[:max_rows]
    figure = Figure(figsize=(min(max(7.0, 0.3 * seconds + 3.5), 30.0), 0.28 * len(rows) * 2 + 1.6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 1, sharex=True)
    for s, (axis, stream) in enumerate(zip(axes, ("heard (audio)", "seen (visual)"))):
        image = probabilities[:, s, rows].T.numpy()
        axis.imshow(image, aspect="auto", cmap="Greens", vmin=0.0, vmax=1.0, extent=(0, seconds, len(rows), 0),
                    interpolation="nearest")
        for r, c in enumerate(rows):
            for t in torch.nonzero(predicted[:, s, c]).flatten().tolist():
                axis.add_patch(Rectangle((t, r), 1, 1, fill=False, edgecolor="black", linewidth=1.2))
        axis.set_yticks(np.arange(len(rows)) + 0.5, [class_names[c] for c in rows], fontsize=7)
        axis.set_title(stream, fontsize=8, loc="left")
    axes[0].set_title(title, fontsize=9, loc="right")
    axes[-1].set_xlabel("time (s); shade: segment probability, outlined: predicted")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
