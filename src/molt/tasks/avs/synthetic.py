"""Procedural audio-visual segmentation clips in the AVSBench-object v1 layout (S4 or MS3).

Part of molt-av (Apache-2.0), an implementation of "Mixture of Layer-Wise Tokens for Efficient Audio-Visual
Learning" (MoLT). AVSBench is handed out on request only, so :func:`generate_avs` writes clips with the release's
files (PNG frames, PNG masks, one wav per clip, the meta csv) and the whole real pipeline (prepare, train,
evaluate) runs on them unchanged.

Design
------
* Every clip shows 2 or 3 objects of **distinct** classes of :data:`molt.data.synthetic.CLASS_SPECS` (shape and
  colour) on a random gradient background with pixel noise; each object drifts slowly over the five frames.
* **S4**: exactly one of the visible objects sounds; **MS3**: one to all of them (at most 3) sound together. A
  class's sound is its AVE-generator sound (pitch, timbre, rhythm), so the audio says *which* objects sound and
  only the sounding ones are in the ground-truth mask: the task cannot be solved from the frames alone (the
  non-sounding objects look just as salient), nor from the audio alone (it does not say where).
* Masks are exact: the visible pixels (later objects occlude earlier ones) of the sounding objects.
* Determinism: the plan is drawn from ``numpy.random.default_rng(seed)`` and each clip's pixels and samples from
  ``default_rng([seed, index])``, so the output does not depend on the number of workers.

Layout written under ``out_dir`` (that of the release, see :mod:`molt.tasks.avs.reader`)::

    Single-source/s4_meta_data.csv              name,start_time,category,split (written last)
    Single-source/s4_data/visual_frames/{split}/{category}/{name}/{name}_{1..5}.png
    Single-source/s4_data/gt_masks/{split}/{category}/{name}/{name}_{i}.png   (train: i = 1 only)
    Single-source/s4_data/audio_wav/{split}/{category}/{name}.wav             (16-bit mono, 5 s)
    Single-source/synthetic_ground_truth.json   options and per-clip objects / sounding objects
    Single-source/molt_synth.json              generator, seed and options (written first, see
                                               molt.data.synthetic.claim_output)

or, for MS3, ``Multi-sources/ms3_meta_data.csv`` (``name,split``) and ``Multi-sources/ms3_data/`` with
``visual_frames/{name}/{name}.mp4_{1..5}.png``, ``gt_masks/{split}/{name}/{name}_{1..5}.png`` and
``audio_wav/{split}/{name}.wav``. The S4 category of a clip is the name of its sounding class made path-safe
(lower case, ``_`` for other characters); the header name of the S4 csv's second column (the clip's start
second) is not used by any reader.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
import wave
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...data.media import parallel_map
from ...data.synthetic import (CLASS_SPECS, GROUND_TRUTH_FILE, check_generator_options, check_plan_sizes, claim_output,
                               class_sound, output_folder, shape_mask, split_sizes, video_ids, write_text)
from ...progress import progress_bar
from .reader import NUM_FRAMES, OBJECT_META_FILES, OBJECT_SUBSETS, SETTINGS

__all__ = ["generate_avs", "plan_avs_videos", "render_avs_clip", "category_slug"]

_logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_MAX_SOUNDING_MS3 = 3


def category_slug(name: str) -> str:
    """A class name made path-safe: ``"Red circle, low hum"`` -> ``"red_circle_low_hum"``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def plan_avs_videos(num_videos: int, seed: int, *, setting: str = "s4", num_classes: int = 6,
                    objects_per_clip: tuple[int, int] = (2, 3),
                    split_fractions: Sequence[float] = (0.7, 0.15, 0.15)) -> list[dict[str, Any]]:
    """Decide everything about every clip except its pixels and samples.

    Returns one dict per clip: ``name``, ``index``, ``split``, ``classes`` (class index of each object, in drawing
    order), ``sounding`` (positions in ``classes`` of the sounding objects), ``category`` (S4: slug of the
    sounding class; MS3: ``None``) and ``start`` (a start second for the meta csv).
    """
    if setting not in SETTINGS:
        raise ValueError(f"unknown AVSBench setting {setting!r}: expected one of {', '.join(SETTINGS)}")
    check_plan_sizes(num_videos, num_classes)
    low, high = objects_per_clip
    if not 1 <= low <= high <= num_classes:
        raise ValueError(f"expected 1 <= objects_per_clip[0] <= objects_per_clip[1] <= num_classes "
                         f"({num_classes}), got {objects_per_clip}")
    rng = np.random.default_rng(seed)
    ids = video_ids(rng, num_videos)
    n_train, n_val, _ = split_sizes(num_videos, split_fractions)
    order = rng.permutation(num_videos)
    split_of = {int(i): "train" if p < n_train else "val" if p < n_train + n_val else "test"
                for p, i in enumerate(order)}
    plans = []
    for index in range(num_videos):
        count = int(rng.integers(low, high + 1))
        classes = [int(c) for c in rng.choice(num_classes, size=count, replace=False)]
        if setting == "s4":
            sounding = [int(rng.integers(count))]
        else:
            k = int(rng.integers(1, min(count, _MAX_SOUNDING_MS3) + 1))
            sounding = sorted(int(s) for s in rng.choice(count, size=k, replace=False))
        start = int(rng.integers(0, 6))
        name = f"{ids[index]}_{start * 1000}_{start * 1000 + 5000}" if setting == "s4" else f"{ids[index]}_0"
        category = category_slug(CLASS_SPECS[classes[sounding[0]]].name) if setting == "s4" else None
        plans.append({"name": name, "index": index, "split": split_of[index], "classes": classes,
                      "sounding": sounding, "category": category, "start": start})
    return plans


def _place(rng: np.random.Generator, radii: list[float], size: int) -> list[np.ndarray]:
    centres: list[np.ndarray] = []
    for radius in radii:
        margin = radius + 1
        best, best_gap = None, -np.inf
        for _ in range(60):  # keep the candidate farthest from overlapping the objects placed so far
            candidate = rng.uniform(margin, size - margin, size=2)
            gap = min((np.linalg.norm(candidate - c) - radius - r for c, r in zip(centres, radii)), default=np.inf)
            if gap > best_gap:
                best, best_gap = candidate, gap
            if gap > 0:
                break
        centres.append(best)
    return centres


def _background(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A dark random colour with a linear gradient of random direction: float ``(S, S, 3)``."""
    angle = rng.uniform(0, 2 * np.pi)
    colour, slope = rng.uniform(20, 110, size=3), rng.uniform(-40, 40, size=3)
    position = np.cos(angle) * x + np.sin(angle) * y
    return colour + position[..., None] * slope


def render_avs_clip(plan: dict[str, Any], seed: int, *, image_size: int = 64, sample_rate: int = 16000
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels, masks and samples of one planned clip.

    Returns:
        frames uint8 ``(5, S, S, 3)``, masks uint8 ``(5, S, S)`` in {0, 1} (visible pixels of the sounding
        objects) and audio float32 ``(5 * sample_rate,)`` in [-1, 1].
    """
    rng = np.random.default_rng([seed, plan["index"]])
    size = image_size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    background = _background(rng, xx / size, yy / size)
    pixel_noise = rng.uniform(3.0, 8.0)

    specs = [CLASS_SPECS[c] for c in plan["classes"]]
    radii = [float(size * rng.uniform(0.13, 0.18)) for _ in specs]
    centres = _place(rng, radii, size)
    velocities = [rng.uniform(-0.03, 0.03, size=2) * size for _ in specs]
    colours = [np.clip(np.array(spec.colour) + rng.uniform(-20, 20, size=3), 0, 255) for spec in specs]
    sounding = set(plan["sounding"])

    frames = np.empty((NUM_FRAMES, size, size, 3), dtype=np.uint8)
    masks = np.zeros((NUM_FRAMES, size, size), dtype=np.uint8)
    for t in range(NUM_FRAMES):
        image = background + rng.normal(0.0, pixel_noise, size=(size, size, 3))
        owner = np.full((size, size), -1, dtype=np.int64)
        for j, (spec, radius) in enumerate(zip(specs, radii)):
            cx, cy = np.clip(centres[j] + velocities[j] * (t - 2), radius, size - 1 - radius)
            inside = shape_mask(spec.shape, xx - cx, yy - cy, radius)
            image[inside] = colours[j] + rng.normal(0.0, pixel_noise / 2, size=(int(inside.sum()), 3))
            owner[inside] = j
        frames[t] = np.clip(image, 0, 255).astype(np.uint8)
        masks[t] = np.isin(owner, list(sounding)).astype(np.uint8)

    t = np.arange(NUM_FRAMES * sample_rate) / sample_rate
    audio = rng.normal(0.0, rng.uniform(0.005, 0.02), size=t.size)
    gain = 1.0 / np.sqrt(len(sounding))
    for j in sorted(sounding):
        audio += gain * rng.uniform(0.2, 0.35) * class_sound(specs[j], rng, t)
    return frames, masks, np.clip(audio, -1.0, 1.0).astype(np.float32)


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(array).save(temporary, format="PNG")
    os.replace(temporary, path)


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(temporary), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(pcm.tobytes())
    os.replace(temporary, path)


def _clip_paths(plan: dict[str, Any], data_dir: Path, setting: str) -> tuple[list[Path], list[Path], Path]:
    name, split = plan["name"], plan["split"]
    if setting == "s4":
        sub = Path(split) / plan["category"]
        frames = [data_dir / "visual_frames" / sub / name / f"{name}_{i}.png" for i in range(1, NUM_FRAMES + 1)]
        masks = [data_dir / "gt_masks" / sub / name / f"{name}_{i}.png" for i in range(1, NUM_FRAMES + 1)]
        return frames, masks[:1] if split == "train" else masks, data_dir / "audio_wav" / sub / f"{name}.wav"
    frames = [data_dir / "visual_frames" / name / f"{name}.mp4_{i}.png" for i in range(1, NUM_FRAMES + 1)]
    masks = [data_dir / "gt_masks" / split / name / f"{name}_{i}.png" for i in range(1, NUM_FRAMES + 1)]
    return frames, masks, data_dir / "audio_wav" / split / f"{name}.wav"


def _render_and_write(job: tuple[dict[str, Any], int, dict[str, Any], str, str]) -> float:
    plan, seed, options, data_dir, setting = job
    frames, masks, audio = render_avs_clip(plan, seed, **options)
    frame_paths, mask_paths, audio_path = _clip_paths(plan, Path(data_dir), setting)
    for path, image in zip(frame_paths, frames):
        _write_png(path, image)
    for path, mask in zip(mask_paths, masks):
        _write_png(path, mask * np.uint8(255))
    _write_wav(audio_path, audio, options["sample_rate"])
    return float(masks[:len(mask_paths)].mean())


def generate_avs(out_dir: str | os.PathLike, num_videos: int = 120, seed: int = 0, *, image_size: int = 64,
                 workers: int = 2, setting: str | None = "s4", num_classes: int = 6,
                 objects_per_clip: tuple[int, int] = (2, 3), sample_rate: int = 16000,
                 split_fractions: Sequence[float] = (0.7, 0.15, 0.15), show_progress: bool = True,
                 overwrite: bool = False) -> dict[str, Any]:
    """Write a synthetic AVSBench-object set of one setting into ``out_dir`` (layout: module docstring).

    Args:
        out_dir: release root to write (``Single-source/`` or ``Multi-sources/`` is created in it; both settings
            may share one root). The meta csv is written last, so its presence means the set is complete.
        num_videos: number of 5-s clips.
        seed: seed of everything.
        image_size: frame and mask size in pixels.
        workers: writer processes (``<= 1``: in this process).
        setting: ``"s4"`` (one sounding object) or ``"ms3"`` (one to three); ``None`` means ``"s4"``.
        num_classes: object classes used (2 to ``len(CLASS_SPECS)``).
        objects_per_clip: fewest and most visible objects per clip.
        sample_rate: sample rate of the wav files (the release's are 16 kHz; readers resample).
        split_fractions: train / val / test fractions.
        show_progress: tqdm progress bar.
        overwrite: write into ``out_dir`` even when it holds a data set not written by this generator with
            these options (see :func:`molt.data.synthetic.claim_output`; the same run again needs no flag).

    Returns:
        a summary dict: output directory, meta file, counts per split, mean foreground fraction of the written
        masks, wall time.
    """
    setting = setting or "s4"
    check_generator_options(image_size=image_size, sample_rate=sample_rate)
    start_time = time.time()
    plans = plan_avs_videos(num_videos, seed, setting=setting, num_classes=num_classes,
                            objects_per_clip=objects_per_clip, split_fractions=split_fractions)
    subset_dir, data_name = OBJECT_SUBSETS[setting]
    claim_output(Path(out_dir) / subset_dir,
                 {"generator": "molt.tasks.avs.synthetic.generate_avs", "seed": seed, "num_videos": num_videos,
                  "setting": setting, "options": {"image_size": image_size, "num_classes": num_classes,
                                                  "objects_per_clip": objects_per_clip, "sample_rate": sample_rate,
                                                  "split_fractions": split_fractions}},
                 overwrite=overwrite, prepared=[Path(out_dir) / f"prepared_{setting}"])
    data_dir = output_folder(out_dir, subset_dir, data_name)
    subset = data_dir.parent
    meta_path = subset / OBJECT_META_FILES[setting]
    meta_path.unlink(missing_ok=True)
    options = {"image_size": image_size, "sample_rate": sample_rate}
    jobs = [(plan, seed, options, str(data_dir), setting) for plan in plans]


    progress = progress_bar(total=len(jobs), desc=f"synth avs {setting}", unit="clip", show=show_progress)
    foreground = []
    for fraction in parallel_map(_render_and_write, jobs, workers):
        foreground.append(fraction)
        progress.update()
    progress.close()

    class_names = [spec.name for spec in CLASS_SPECS[:num_classes]]
    ground_truth = {
        "format_version": FORMAT_VERSION, "generator": "molt.tasks.avs.synthetic.generate_avs", "seed": seed,
        "setting": setting, "num_videos": num_videos, "classes": class_names,
        "options": {**options, "objects_per_clip": list(objects_per_clip)},
        "videos": [{key: plan[key] for key in ("name", "split", "classes", "sounding", "category")}
                   for plan in plans],
    }
    gt_path = subset / GROUND_TRUTH_FILE
    gt_tmp = gt_path.with_name(f".{gt_path.name}.tmp")
    gt_tmp.write_text(json.dumps(ground_truth, indent=1))
    os.replace(gt_tmp, gt_path)
    if setting == "s4":
        lines = ["name,start_time,category,split"] + [f"{p['name']},{p['start']},{p['category']},{p['split']}"
                                                     for p in plans]
    else:
        lines = ["name,split"] + [f"{p['name']},{p['split']}" for p in plans]
    write_text(meta_path, lines)
    summary = {"out_dir": str(out_dir), "meta_file": str(meta_path), "setting": setting, "videos": num_videos,
               "seed": seed, "splits": {s: sum(p["split"] == s for p in plans) for s in ("train", "val", "test")},
               "foreground_fraction": round(float(np.mean(foreground)), 4),
               "seconds": round(time.time() - start_time, 2)}
    _logger.info("wrote %d synthetic AVSBench %s clips to %s in %.1f s", num_videos, setting.upper(), subset,
                 summary["seconds"])
    return summary
