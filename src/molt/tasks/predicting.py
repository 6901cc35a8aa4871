"""What every task's ``molt predict`` shares: a user's video decoded exactly as ``molt prepare`` stores clips.

Part of molt-av (Apache-2.0). Prepared data keep frames as uint8 and audio as 16-bit PCM; a predictor that fed
the model float audio straight from the decoder would see slightly other input than ``molt eval`` does, so
:func:`decode_video` quantises the same way and returns the tensors a prepared dataset item holds
(:func:`molt.data.prepared.media_tensors`).
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..data.media import MediaError, decode_pcm16
from ..data.prepared import media_tensors

__all__ = ["model_input", "decode_video", "windows", "require_video"]


def model_input(model: nn.Module) -> dict[str, int]:
    """``image_size`` and ``sample_rate`` the model's backbones read (192 px and 32 kHz without a backbone)."""
    return {"image_size": model.visual.input_size[0] if model.visual is not None else 192,
            "sample_rate": model.audio.sample_rate if model.audio is not None else 32000}


def decode_video(model: nn.Module, video: str | os.PathLike, num_segments: int, **options: Any
                 ) -> dict[str, torch.Tensor]:
    """The first ``num_segments`` one-second segments of ``video`` as the model reads them (see
    :func:`~molt.data.prepared.media_tensors`); ``options`` go to :func:`molt.data.media.read_clip`.

    Raises:
        MediaError: the file cannot be used (missing, undecodable, a missing track, too short).
    """
    _, _, frames, pcm, status, detail = decode_pcm16((0, str(video), str(video),
                                                      {**model_input(model), "num_segments": num_segments,
                                                       **options}))
    if frames is None:
        raise MediaError(video, status, detail)
    return media_tensors(frames, pcm)


def require_video(video: str | os.PathLike | None, task: str) -> str | os.PathLike:
    """``video``, or a ``ValueError`` saying that ``molt predict TASK`` needs one."""
    if video is None:
        raise ValueError(f"molt predict {task} needs --video FILE (a video with an audio track)")
    return video


def windows(length: int, size: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, end)`` windows of at most ``size`` segments covering ``length`` segments."""
    return [(start, min(start + size, length)) for start in range(0, length, size)]
