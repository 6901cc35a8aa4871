"""Pictures of AVSBench results: predicted and true masks over the frames.

Part of molt-av (Apache-2.0). matplotlib is imported on use (the ``[train]`` extra).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .metrics import frame_iou

__all__ = ["plot_masks"]


def plot_masks(frames: torch.Tensor, predicted: torch.Tensor, truth: torch.Tensor, video_ids: Sequence[str],
               path: str | os.PathLike, *, valid: torch.Tensor | None = None, max_clips: int = 4) -> Path:
    """Write a PNG grid: one row per clip (the first ``max_clips``), one column per frame, each frame with its true
    mask tinted green and the predicted one red (overlap yellow); the title gives the frame's IoU, or "not
    annotated". Rendered with matplotlib's Agg canvas.

    Args:
        frames: uint8 ``(N, T, 3, S, S)``.
        predicted, truth: binary masks ``(N, T, M, M)``.
        video_ids: ``N`` clip names.
        path: output file (parent directories are created).
        valid: optional ``(N, T)``: which frames are annotated.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frames = torch.as_tensor(frames)
    predicted, truth = torch.as_tensor(predicted).float(), torch.as_tensor(truth).float()
    if frames.ndim != 5 or predicted.ndim != 4 or predicted.shape != truth.shape or \
            frames.shape[:2] != predicted.shape[:2]:
        raise ValueError(f"expected frames (N, T, 3, S, S) and masks (N, T, M, M) with the same N and T, got "
                         f"{tuple(frames.shape)}, {tuple(predicted.shape)} and {tuple(truth.shape)}")
    if len(video_ids) != frames.shape[0] or frames.shape[0] == 0:
        raise ValueError(f"expected {frames.shape[0]} (>= 1) video ids, got {len(video_ids)}")
    count, segments = min(max_clips, frames.shape[0]), frames.shape[1]
    size = predicted.shape[-1]
    images = F.interpolate(frames[:count].flatten(0, 1).float() / 255.0, size=(size, size), mode="bilinear",
                           align_corners=False).reshape(count, segments, 3, size, size).clamp(0, 1)
    figure = Figure(figsize=(1.9 * segments, 2.1 * count + 0.3))
    FigureCanvasAgg(figure)
    axes = figure.subplots(count, segments, squeeze=False)
    for row in range(count):
        for t in range(segments):
            image = images[row, t].permute(1, 2, 0).clone()
            true_mask, pred_mask = truth[row, t] > 0.5, predicted[row, t] > 0.5
            image[true_mask] = 0.5 * image[true_mask] + 0.5 * torch.tensor([0.0, 1.0, 0.0])
            image[pred_mask] = 0.5 * image[pred_mask] + 0.5 * torch.tensor([1.0, 0.0, 0.0])
            axis = axes[row, t]
            axis.imshow(image.numpy(), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            annotated = valid is None or bool(valid[row, t] > 0)
            if annotated:
                iou = float(frame_iou(torch.where(pred_mask, 10.0, -10.0)[None], truth[row, t][None])[0])
                label = f"IoU {100 * iou:.0f} %"
            else:
                label = "not annotated"
            axis.set_title(f"{video_ids[row][:18]} t={t}\n{label}" if t == 0 else label, fontsize=7)
    figure.suptitle("true mask: green, predicted: red", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
