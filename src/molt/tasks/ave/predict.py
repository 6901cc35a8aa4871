"""``molt predict ave``: per-second event predictions for one user video.

Part of molt-av (Apache-2.0). The video is decoded with PyAV like ``molt prepare`` decodes AVE clips (one frame
and one second of audio per segment) and run through a trained :class:`~molt.model.AudioVisualModel`.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import nn

from ...data.media import read_clip

__all__ = ["predict_video"]


@torch.no_grad()
def predict_video(model: nn.Module, task_options: Mapping[str, Any], video: str | os.PathLike) -> dict[str, Any]:
    """Per-second AVE predictions of ``model`` (in eval mode) for one video file.

    Returns the video path, the clip's most likely event category with its probability, and per segment the
    predicted label and the event probability ``sigmoid(is_event)``.
    """
    image_size = model.visual.input_size[0] if model.visual is not None else 192
    sample_rate = model.audio.sample_rate if model.audio is not None else 32000
    clip = read_clip(video, num_segments=model.task.num_segments, image_size=image_size, sample_rate=sample_rate)
    batch = {"frames": torch.from_numpy(clip.frames).permute(0, 3, 1, 2)[None],
             "audio": torch.from_numpy(clip.audio)[None]}
    predictions = model(batch).predictions
    labels = model.task.predict(predictions)[0].tolist()
    names = list(task_options.get("class_names") or range(task_options["num_classes"])) + ["background"]
    event_probability = torch.sigmoid(predictions["event_logits"][0]).tolist()
    class_probability = torch.softmax(predictions["class_logits"][0], dim=-1)
    best = int(class_probability.argmax())
    return {
        "video": str(video),
        "clip_category": str(names[best]),
        "clip_category_probability": round(float(class_probability[best]), 4),
        "segments": [{"second": t, "label": str(names[label]), "event_probability": round(p, 4)}
                     for t, (label, p) in enumerate(zip(labels, event_probability))],
    }
