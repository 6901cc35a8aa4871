"""``molt predict avs``: masks of the sounding objects in a user's 5-s clip.

Part of molt-av (Apache-2.0). AVSBench clips are five frames, one per second, and five seconds of audio. The
input is either a video file (its first five seconds, decoded as AVE clips are: the frame nearest each second's
centre) or, in the AVSBench layout, a folder of frames (the first five images in name order) and a WAV file,
decoded exactly as ``molt prepare avs`` decodes the release. Writes ``mask_<i>.png`` (the binary mask of frame
``i`` at the model's mask size, 0 / 255), ``overlay.png`` (the five frames above the same frames with their masks
tinted) and, when asked, ``overlay.mp4`` (the tinted frames at 1 fps with the clip's audio).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ...data.media import MediaError, write_clip
from ...data.prepared import media_tensors
from ..base import batch_to
from ..predicting import decode_video, model_input
from .reader import NUM_FRAMES, decode_avs_clip

__all__ = ["predict_video", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_TINT = np.array([255, 235, 0], dtype=np.float32)


def _from_frames(model: nn.Module, task_options: Mapping[str, Any], frames: str | os.PathLike,
                 audio: str | os.PathLike) -> dict[str, torch.Tensor]:
    folder = Path(frames)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: --frames must be a folder of frame images (AVSBench: frames/0.jpg ... "
                                f"4.jpg)")
    images = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                    key=lambda p: (len(p.stem), p.stem))
    if len(images) < NUM_FRAMES:
        raise ValueError(f"{folder}: {len(images)} frame image(s), AVSBench clips need {NUM_FRAMES} (one per "
                         f"second, {', '.join(IMAGE_SUFFIXES)})")
    options = {**model_input(model), "mask_size": task_options["mask_size"]}
    _, _, decoded, pcm, _, status, detail = decode_avs_clip((0, folder.name, [str(p) for p in images[:NUM_FRAMES]],
                                                             [None] * NUM_FRAMES, str(audio), options))
    if decoded is None:
        raise MediaError(audio if "audio" in status or status == "too short" else folder, status, detail)
    return media_tensors(decoded, pcm)


def _overlay(frames: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    """uint8 ``(T, S, S, 3)``: each frame with its mask (nearest-upsampled) tinted yellow."""
    pictures = frames.permute(0, 2, 3, 1).numpy().astype(np.float32)
    size = pictures.shape[1]
    upsampled = torch.nn.functional.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")
    alpha = 0.55 * upsampled[:, 0, :, :, None].numpy()
    return (pictures * (1 - alpha) + _TINT * alpha).clip(0, 255).astype(np.uint8)


def _picture(frames: np.ndarray, overlay: np.ndarray, size: int = 192):
    """The frames (top row) above the frames with their masks (bottom row), each enlarged to ``size`` pixels."""
    from PIL import Image

    rows = [np.concatenate([np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.NEAREST))
                            for image in images], axis=1) for images in (frames, overlay)]
    gap = np.full((4, rows[0].shape[1], 3), 255, dtype=np.uint8)
    return Image.fromarray(np.concatenate([rows[0], gap, rows[1]], axis=0))


@torch.no_grad()
def predict_video(model: nn.Module, task_options: Mapping[str, Any], video: str | os.PathLike | None, *,
                  out_dir: str | os.PathLike, frames: str | None = None, audio: str | None = None,
                  overlay_video: bool = False) -> dict[str, Any]:
    """Masks of ``model`` (in eval mode) for one clip: ``video``, or ``frames`` (folder) with ``audio`` (WAV).

    Returns the input, per frame its foreground fraction and mask file, and ``files`` (masks, ``overlay.png``,
    ``overlay.mp4`` when ``overlay_video``).

    Raises:
        ValueError: neither or both inputs given, fewer than 5 frame images.
        molt.data.media.MediaError: the video, a frame or the audio cannot be used.
    """
    if (video is None) == (frames is None):
        raise ValueError("molt predict avs takes either --video FILE or --frames DIR with --audio WAV")
    if frames is not None and audio is None:
        raise ValueError(f"--frames {frames} needs --audio WAV, the clip's sound track")
    if video is not None and audio is not None:
        raise ValueError("--audio goes with --frames; a --video brings its own sound track")
    media = (decode_video(model, video, NUM_FRAMES) if video is not None
             else _from_frames(model, task_options, frames, audio))
    outputs = batch_to(model({key: value[None] for key, value in media.items()}).predictions, "cpu")
    masks = model.task.predict(outputs)[0]                                   # (T, M, M) 0/1
    probabilities = torch.sigmoid(outputs["mask_logits"][0].float())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    files, rows = [], []
    for index, mask in enumerate(masks):
        path = out / f"mask_{index}.png"
        Image.fromarray((mask.numpy() * 255).astype(np.uint8)).save(path)
        files.append(path)
        rows.append({"frame": index, "second": index, "foreground": round(float(mask.float().mean()), 4),
                     "mean_probability": round(float(probabilities[index].mean()), 4), "mask": str(path)})
    overlay = _overlay(media["frames"], masks)
    picture = out / "overlay.png"
    _picture(media["frames"].permute(0, 2, 3, 1).numpy(), overlay).save(picture)
    files.append(picture)
    if overlay_video:
        movie = out / "overlay.mp4"
        sample_rate = model_input(model)["sample_rate"]
        write_clip(movie, overlay, media["audio"].reshape(-1).numpy(), fps=1, sample_rate=sample_rate)
        files.append(movie)
    source = str(video) if video is not None else f"{frames} + {audio}"
    summary = [f"{source}: {task_options.get('setting') or 'AVS'} masks at {masks.shape[-1]} px"]
    summary += [f"  frame {row['frame']}: {100 * row['foreground']:.1f} % sounding" for row in rows]
    return {"video": str(video) if video is not None else None, "frames_dir": frames, "audio": audio,
            "mask_size": int(masks.shape[-1]), "frames": rows, "summary": summary, "files": [str(f) for f in files]}
