"""LLP (AVVP) metrics: the official segment- and event-level F1 of audio, visual and audio-visual events.

Part of molt-av (Apache-2.0).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["METRIC_KINDS", "EPS", "segment_level_f1", "event_level_f1", "avvp_scores", "segment_counts"]

#: per-clip F1 kinds of :func:`segment_level_f1` / :func:`event_level_f1` (Type@AV is derived from three of them).
METRIC_KINDS = ("audio", "visual", "av", "event_av")
EPS = 1e-7


def _check_rasters(*rasters: Any) -> list[torch.Tensor]:
    tensors = [torch.as_tensor(r).detach().cpu() for r in rasters]
    tensors = [t > 0.5 if t.is_floating_point() else t.bool() for t in tensors]
    shape = tensors[0].shape
    if len(shape) != 3 or any(t.shape != shape for t in tensors):
        raise ValueError(f"expected prediction and target rasters of one shape (B, T, C), got "
                         f"{[tuple(t.shape) for t in tensors]}")
    return tensors


def _clip_f1(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` counts -> ``(B,)`` mean F1 over the classes with any count (1.0 where none has)."""
    tp, fp, fn = tp.double(), fp.double(), fn.double()
    active = (tp + fp + fn) > 0
    f1 = torch.where(active, 2 * tp / (2 * tp + fp + fn).clamp_min(1.0), torch.zeros_like(tp))
    classes = active.sum(dim=-1)
    return torch.where(classes > 0, f1.sum(dim=-1) / classes.clamp_min(1), torch.ones_like(f1[:, 0]))


def _scores(counts: Mapping[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    pooled = tuple(a + v for a, v in zip(counts["audio"], counts["visual"]))
    return {"audio": _clip_f1(*counts["audio"]), "visual": _clip_f1(*counts["visual"]),
            "av": _clip_f1(*counts["av"]), "event_av": _clip_f1(*pooled)}


def segment_counts(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return ((pred & target).sum(dim=1), (pred & ~target).sum(dim=1), (~pred & target).sum(dim=1))


def segment_level_f1(pred_audio: Any, pred_visual: Any, target_audio: Any,
                     target_visual: Any) -> dict[str, torch.Tensor]:
    """Per-clip segment-level F1 ``(B,)`` float64 for ``audio``, ``visual``, ``av`` and ``event_av``.

    Args:
        pred_audio, pred_visual, target_audio, target_visual: rasters ``(B, T, C)`` (bool, integers, or floats
            thresholded at 0.5): class ``c`` heard / seen in segment ``t``.
    """
    pa, pv, ta, tv = _check_rasters(pred_audio, pred_visual, target_audio, target_visual)
    return _scores({"audio": segment_counts(pa, ta), "visual": segment_counts(pv, tv),
                    "av": segment_counts(pa & pv, ta & tv)})


def _runs(rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Start and (exclusive) end of every run of ``True`` in each row of ``rows (N, T)``."""
    edges = np.diff(np.pad(rows.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    return [(np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)) for edge in edges]


def _event_counts(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, _, classes = pred.shape
    counts = np.zeros((3, batch, classes), dtype=np.int64)
    p = pred.permute(0, 2, 1).reshape(batch * classes, -1).numpy()
    g = target.permute(0, 2, 1).reshape(batch * classes, -1).numpy()
    busy = np.flatnonzero(p.any(axis=1) | g.any(axis=1))
    for row, (p_runs, g_runs) in zip(busy, zip(_runs(p[busy]), _runs(g[busy]))):
        (p_start, p_end), (g_start, g_end) = p_runs, g_runs
        overlap = np.clip(np.minimum(p_end[:, None], g_end[None]) - np.maximum(p_start[:, None], g_start[None]),
                          0, None)
        union = (p_end - p_start)[:, None] + (g_end - g_start)[None] - overlap
        match = overlap >= 0.5 * union                            # (predicted events, true events)
        tp = int(match.any(axis=1).sum())
        counts[:, row // classes, row % classes] = (tp, len(p_start) - tp, int((~match.any(axis=0)).sum()))
    tp, fp, fn = torch.from_numpy(counts)
    return tp, fp, fn


def event_level_f1(pred_audio: Any, pred_visual: Any, target_audio: Any,
                   target_visual: Any) -> dict[str, torch.Tensor]:
    """Per-clip event-level F1 ``(B,)`` float64 for ``audio``, ``visual``, ``av`` and ``event_av`` (events = runs
    of consecutive positive segments, matched at IoU >= 0.5; see the module docstring).

    Args: as :func:`segment_level_f1`.
    """
    pa, pv, ta, tv = _check_rasters(pred_audio, pred_visual, target_audio, target_visual)
    return _scores({"audio": _event_counts(pa, ta), "visual": _event_counts(pv, tv),
                    "av": _event_counts(pa & pv, ta & tv)})


def avvp_scores(pred_audio: Any, pred_visual: Any, target_audio: Any, target_visual: Any) -> dict[str, float]:
    """The ten data-set figures ``{segment,event}_{audio,visual,av,type_av,event_av}_f1`` (means over clips) of
    rasters ``(B, T, C)``; see :func:`segment_level_f1`."""
    rasters = (pred_audio, pred_visual, target_audio, target_visual)
    result = {}
    for level, function in (("segment", segment_level_f1), ("event", event_level_f1)):
        means = {kind: float(values.mean()) for kind, values in function(*rasters).items()}
        result.update({f"{level}_{kind}_f1": value for kind, value in means.items()})
        result[f"{level}_type_av_f1"] = (means["audio"] + means["visual"] + means["av"]) / 3
    return result
