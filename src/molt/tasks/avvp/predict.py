"""``molt predict avvp``: the events heard and the events seen, second by second, in one user video.

Part of molt-av (Apache-2.0). The video is decoded as ``molt prepare avvp`` decodes LLP clips (one frame and one
second of audio per segment, 16-bit audio) and read by the trained model in windows of ``T = 10`` segments, the
LLP clip length (a shorter clip is one window of the seconds it has, a longer one consecutive windows). A class is
predicted in a second and stream when both its segment probability and its window's video-level probability
reach the head's threshold, the rule ``molt eval`` scores.
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
from .figures import plot_predicted_events

__all__ = ["predict_video", "MIN_SECONDS"]

MIN_SECONDS = 1.0
_STREAMS = ("audio", "visual")


@torch.no_grad()
def predict_video(model: nn.Module, task_options: Mapping[str, Any], video: str | os.PathLike, *,
                  out_dir: str | os.PathLike) -> dict[str, Any]:
    """Per-second audio and visual events of ``model`` (in eval mode) for one video file, and their picture.

    Returns the video path, its length in whole seconds, the video-level labels (classes predicted in some second)
    with their probabilities, and per second the ``audio`` and ``visual`` events, each with its segment
    probability; ``files`` lists ``events.png`` in ``out_dir``.

    Raises:
        molt.data.media.MediaError: unreadable file, a missing track, or shorter than :data:`MIN_SECONDS`.
    """
    seconds = whole_segments(require_video(video, "avvp"), minimum_seconds=MIN_SECONDS)
    media = decode_video(model, video, seconds)
    names = [str(name) for name in task_options.get("class_names") or range(task_options["num_classes"])]
    probabilities, predicted, video_probability = [], [], torch.zeros(len(names))
    for start, end in windows(seconds, model.task.num_segments):
        outputs = batch_to(model({key: value[None, start:end] for key, value in media.items()}).predictions,
                           "cpu")
        probabilities.append(torch.sigmoid(outputs["segment_logits"][0]))          # (t, 2, C)
        predicted.append(model.task.predict(outputs)[0].bool())
        video_probability = torch.maximum(video_probability, outputs["video_prob"][0])
    probabilities, predicted = torch.cat(probabilities), torch.cat(predicted)
    segments = []
    for t in range(seconds):
        row: dict[str, Any] = {"second": t}
        for s, stream in enumerate(_STREAMS):
            row[stream] = [{"event": names[c], "probability": round(float(probabilities[t, s, c]), 4)}
                           for c in torch.nonzero(predicted[t, s]).flatten().tolist()]
        segments.append(row)
    present = predicted.any(dim=1).any(dim=0)
    labels = [{"event": names[c], "probability": round(float(video_probability[c]), 4)}
              for c in torch.nonzero(present).flatten().tolist()]
    picture = plot_predicted_events(probabilities, predicted, names, Path(out_dir) / "events.png",
                                    title=Path(video).name)
    summary = [f"{video}: {seconds} s; events: {', '.join(label['event'] for label in labels) or 'none'}"]
    for row in segments:
        heard = ", ".join(event["event"] for event in row["audio"]) or "-"
        seen = ", ".join(event["event"] for event in row["visual"]) or "-"
        summary.append(f"  {row['second']:3d}-{row['second'] + 1:3d} s  heard: {heard:<30s} seen: {seen}")
    return {"video": str(video), "seconds": seconds, "labels": labels, "segments": segments, "summary": summary,
            "files": [str(picture)]}
