"""``molt predict ave``: a per-second event timeline for one user video of any length (at least 1 s).

Part of molt-av (Apache-2.0). The video is decoded with PyAV like ``molt prepare`` decodes AVE clips (one frame
and one second of audio per segment) and run through a trained :class:`~molt.model.AudioVisualModel` in
consecutive windows of ``T = 10`` segments, the model's clip length: a clip shorter than 10 s is one window of the
seconds it has (the head reads any ``T`` up to 10), a longer one is cut into 10-s windows and a last, shorter one;
the windows' per-second predictions are stitched into one timeline. Each window also has its clip-level event
category; the video's is the one with the highest mean probability over its seconds.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ...data.media import whole_segments
from ..base import batch_to
from ..predicting import decode_video, require_video, windows
from .figures import plot_predicted_timeline

__all__ = ["predict_video", "MIN_SECONDS"]

MIN_SECONDS = 1.0


@torch.no_grad()
def _event_and_class_probabilities(predictions: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per second ``P(event)`` ``(T,)`` and the window's class distribution ``(C,)`` of the first clip: from
    ``event_logits`` / ``class_logits``, or, for a head with one distribution per segment over ``C + 1`` classes
    (LAVisH's, ``segment_logits``), ``1 - P(background)`` and the mean event distribution over the segments."""
    if "segment_logits" in predictions:
        segment = torch.softmax(predictions["segment_logits"][0], dim=-1)
        classes = segment[:, :-1].mean(dim=0)
        return 1.0 - segment[:, -1], classes / classes.sum().clamp_min(1e-12)
    return torch.sigmoid(predictions["event_logits"][0]), torch.softmax(predictions["class_logits"][0], dim=-1)


def predict_video(model: nn.Module, task_options: Mapping[str, Any], video: str | os.PathLike, *,
                  out_dir: str | os.PathLike) -> dict[str, Any]:
    """Per-second AVE predictions of ``model`` (in eval mode, on any device: the clip goes where its parameters are)
    for one video file, and their timeline picture.

    Returns the video path, its length in whole seconds, the most likely event category with its probability,
    the windows the model read (start, end, category), and per second the predicted label and the event
    probability ``sigmoid(is_event)``; ``files`` lists ``timeline.png`` in ``out_dir``.

    Raises:
        molt.data.media.MediaError: unreadable file, a missing track, or shorter than :data:`MIN_SECONDS`.
    """
    seconds = whole_segments(require_video(video, "ave"), minimum_seconds=MIN_SECONDS)
    media = decode_video(model, video, seconds)
    names = [str(name) for name in (task_options.get("class_names") or range(task_options["num_classes"]))]
    names.append("background")
    window = model.task.num_segments
    labels: list[int] = []
    event_probability: list[float] = []
    class_probability = torch.zeros(len(names) - 1)
    read = []
    for start, end in windows(seconds, window):
        predictions = batch_to(model({key: value[None, start:end] for key, value in media.items()}).predictions,
                               "cpu")
        labels += model.task.predict(predictions)[0].tolist()
        event, probabilities = (tensor.cpu() for tensor in _event_and_class_probabilities(predictions))
        event_probability += event.tolist()
        class_probability += probabilities * (end - start)
        best = int(probabilities.argmax())
        read.append({"start": start, "end": end, "category": names[best],
                        "probability": round(float(probabilities[best]), 4)})
    class_probability /= seconds
    best = int(class_probability.argmax())
    segments = [{"second": t, "label": names[label], "event_probability": round(p, 4)}
                for t, (label, p) in enumerate(zip(labels, event_probability))]
    picture = plot_predicted_timeline(labels, event_probability, names, Path(out_dir) / "timeline.png",
                                      title=f"{Path(video).name}: {names[best]}")
    summary = [f"{video}: {names[best]} (p={float(class_probability[best]):.2f}), {seconds} s in "
               f"{len(read)} window(s) of up to {window} s"]
    summary += [f"  {s['second']:3d}-{s['second'] + 1:3d} s  {s['label']:<32s} event p={s['event_probability']:.2f}"
                for s in segments]
    return {"video": str(video), "seconds": seconds, "clip_category": names[best],
            "clip_category_probability": round(float(class_probability[best]), 4), "windows": read,
            "segments": segments, "summary": summary, "files": [str(picture)]}
