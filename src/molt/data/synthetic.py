"""The procedural generator's shared primitives: event classes (a look and a sound), shapes, motions, class
sounds, ids and splits.

Part of molt-av (Apache-2.0). Every task's generator (``molt.tasks.<task>.synthetic``) draws its clips from these
pieces, so an event class looks and sounds the same in every task's synthetic data:

* :data:`CLASS_SPECS`: what each event class looks like (shape, colour, motion) and sounds like (pitch, timbre,
  rhythm);
* :func:`shape_mask`, :func:`object_track`: a class's pattern and where it moves within a segment;
* :func:`class_sound`, :func:`chirp`: a class's sound and a neutral distractor sound;
* :func:`video_ids`, :func:`split_sizes`, :func:`write_text`: YouTube-like ids, train/val/test sizes and atomic
  text files;
* :func:`check_generator_options`, :func:`check_plan_sizes`, :func:`output_folder`: the opening checks of every
  generator and its output folder;
* :func:`claim_output`: a generator writes only into a new or empty folder, or one it wrote itself with the same
  options (recorded in :data:`SYNTH_MARKER`), so that it never replaces a real data set's files.

Everything takes a ``numpy.random.Generator``, so what a generator writes depends only on its seed.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .files import atomic_json
from .prepared import GROUND_TRUTH_FILE, INDEX_FILE

__all__ = ["ClassSpec", "CLASS_SPECS", "NONE", "GROUND_TRUTH_FILE", "video_ids", "split_sizes", "shape_mask",
           "object_track", "class_sound", "chirp", "write_text", "check_generator_options", "check_plan_sizes",
           "output_folder", "claim_output", "SYNTH_MARKER"]

_logger = logging.getLogger(__name__)

# what a generator records in the folder it writes (generator, seed, size, options) before writing anything
SYNTH_MARKER = "molt_synth.json"

_ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


@dataclass(frozen=True)
class ClassSpec:
    """What an event class looks and sounds like."""

    name: str
    shape: str          # circle, square, triangle, ring, cross, diamond, stripes, ellipse, checker, bar
    colour: tuple[int, int, int]
    motion: str         # drift, bounce, orbit, pulse
    pitch_hz: float
    timbre: str         # sine, odd (square-like), rich (saw-like)
    rhythm: str         # steady, beeps (4 Hz), bell (2 Hz decaying), tremolo (6 Hz)


CLASS_SPECS: tuple[ClassSpec, ...] = (
    ClassSpec("Red circle, low hum", "circle", (220, 40, 40), "drift", 220.0, "sine", "steady"),
    ClassSpec("Green square, buzz", "square", (40, 200, 60), "bounce", 330.0, "odd", "beeps"),
    ClassSpec("Blue triangle, bell", "triangle", (50, 80, 230), "orbit", 480.0, "rich", "bell"),
    ClassSpec("Yellow ring, tremolo", "ring", (230, 210, 40), "pulse", 700.0, "sine", "tremolo"),
    ClassSpec("Magenta cross, beeper", "cross", (210, 50, 200), "drift", 1000.0, "odd", "beeps"),
    ClassSpec("Cyan diamond, chime", "diamond", (40, 210, 220), "bounce", 1450.0, "sine", "bell"),
    ClassSpec("Orange stripes, whistle", "stripes", (240, 140, 30), "orbit", 2100.0, "sine", "steady"),
    ClassSpec("White ellipse, drone", "ellipse", (235, 235, 235), "pulse", 150.0, "rich", "steady"),
    ClassSpec("Purple checker, trill", "checker", (130, 50, 170), "drift", 2900.0, "odd", "tremolo"),
    ClassSpec("Brown bar, knock", "bar", (150, 90, 40), "bounce", 100.0, "rich", "beeps"),
)

NONE = -1  # "no class pattern / sound" in the per-segment ground truth


def video_ids(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct 11-character YouTube-like ids."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        candidate = "".join(rng.choice(_ID_ALPHABET, size=11))
        if candidate not in seen:
            seen.add(candidate)
            ids.append(candidate)
    return ids


def split_sizes(count: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Train, val and test sizes of ``count`` videos for ``fractions`` (at least one val and test video from 3 on)."""
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(f"expected three non-negative split fractions (train, val, test), got {fractions}")
    total = float(sum(fractions))
    n_val = int(round(count * fractions[1] / total))
    n_test = int(round(count * fractions[2] / total))
    if count >= 3:
        n_val = max(n_val, 1) if fractions[1] > 0 else 0
        n_test = max(n_test, 1) if fractions[2] > 0 else 0
    n_train = count - n_val - n_test
    if n_train < 1:
        raise ValueError(f"{count} videos are too few for the split fractions {fractions}")
    return n_train, n_val, n_test


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of ``shape`` of size ``radius`` at offsets ``(dx, dy)`` from its centre."""
    d = np.sqrt(dx * dx + dy * dy)
    if shape == "circle":
        return d < radius
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) < 0.85 * radius
    if shape == "triangle":
        return (dy < 0.8 * radius) & (dy > -radius) & (np.abs(dx) < (dy + radius) * 0.6)
    if shape == "ring":
        return (d < radius) & (d > 0.55 * radius)
    if shape == "cross":
        arm = radius / 3.0
        return ((np.abs(dx) < arm) & (np.abs(dy) < radius)) | ((np.abs(dy) < arm) & (np.abs(dx) < radius))
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) < radius
    if shape == "stripes":
        inside = np.maximum(np.abs(dx), np.abs(dy)) < 0.85 * radius
        return inside & (np.floor((dy + radius) / (radius / 2.5)) % 2 == 0)
    if shape == "ellipse":
        return (dx / radius) ** 2 + (dy / (0.5 * radius)) ** 2 < 1.0
    if shape == "checker":
        inside = np.maximum(np.abs(dx), np.abs(dy)) < 0.85 * radius
        cell = radius / 2.0
        return inside & ((np.floor((dx + radius) / cell) + np.floor((dy + radius) / cell)) % 2 == 0)
    if shape == "bar":
        return (np.abs(dx) < radius) & (np.abs(dy) < 0.3 * radius)
    if shape == "blob":
        return (dx / radius) ** 2 + (dy / (0.7 * radius)) ** 2 < 1.0
    raise ValueError(f"unknown shape {shape!r}")


def object_track(rng: np.random.Generator, motion: str, size: int, times: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre x, centre y and radius of an object for each frame time in ``times`` (seconds within a segment)."""
    radius = size * rng.uniform(0.16, 0.24)
    margin = radius + 1
    x0, y0 = rng.uniform(margin, size - margin, size=2)
    phase = rng.uniform(0, 2 * np.pi)
    if motion == "drift":
        angle = rng.uniform(0, 2 * np.pi)
        speed = size * rng.uniform(0.15, 0.3)
        xs = x0 + np.cos(angle) * speed * (times - 0.5)
        ys = y0 + np.sin(angle) * speed * (times - 0.5)
        radii = np.full_like(times, radius)
    elif motion == "bounce":
        xs = np.full_like(times, x0)
        ys = y0 + 0.12 * size * np.sin(2 * np.pi * 2.0 * times + phase)
        radii = np.full_like(times, radius)
    elif motion == "orbit":
        xs = x0 + 0.1 * size * np.cos(2 * np.pi * times + phase)
        ys = y0 + 0.1 * size * np.sin(2 * np.pi * times + phase)
        radii = np.full_like(times, radius)
    elif motion == "pulse":
        xs = np.full_like(times, x0)
        ys = np.full_like(times, y0)
        radii = radius * (1.0 + 0.25 * np.sin(2 * np.pi * 2.0 * times + phase))
    else:
        raise ValueError(f"unknown motion {motion!r}")
    return np.clip(xs, 0, size - 1), np.clip(ys, 0, size - 1), radii


def class_sound(spec: ClassSpec, rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """The sound of class ``spec`` at times ``t`` (seconds), peak about 1, with pitch and phase jitter."""
    pitch = spec.pitch_hz * rng.uniform(0.97, 1.03)
    phase = rng.uniform(0, 2 * np.pi)
    if spec.timbre == "sine":
        harmonics = [(1, 1.0)]
    elif spec.timbre == "odd":
        harmonics = [(1, 1.0), (3, 1 / 3), (5, 1 / 5), (7, 1 / 7)]
    else:
        harmonics = [(n, 1.0 / n) for n in range(1, 7)]
    wave = sum(a * np.sin(2 * np.pi * pitch * n * t + n * phase) for n, a in harmonics if pitch * n < 7500)
    wave = wave / sum(a for n, a in harmonics if pitch * n < 7500)
    offset = rng.uniform(0, 1)
    if spec.rhythm == "beeps":
        envelope = (((t * 4.0 + offset) % 1.0) < 0.6).astype(np.float64)
    elif spec.rhythm == "bell":
        envelope = np.exp(-6.0 * ((t * 2.0 + offset) % 1.0))
    elif spec.rhythm == "tremolo":
        envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 6.0 * t + 2 * np.pi * offset)
    else:
        envelope = np.ones_like(t)
    return wave * envelope


def chirp(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A neutral distractor sound: a sine sweep between two random frequencies over ``t``."""
    f0, f1 = np.exp(rng.uniform(np.log(250), np.log(3500), size=2))
    frequency = f0 + (f1 - f0) * t / max(t[-1], 1e-9)
    return np.sin(2 * np.pi * np.cumsum(frequency) * (t[1] - t[0]))


def write_text(path: Path, lines: list[str]) -> None:
    """Write ``lines`` to ``path`` atomically, one per line."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("".join(line + "\n" for line in lines))
    os.replace(temporary, path)


def check_generator_options(*, image_size: int, sample_rate: int, fps: int | None = None,
                            dataset_name: str | None = None, setting: str | None = None) -> None:
    """The argument checks a generator opens with (a ``ValueError`` naming the bad value).

    Args:
        image_size: frame size; with ``fps`` (H.264 mp4 clips, yuv420p) it must be even and >= 2, without (png
            frames) >= 8.
        sample_rate: audio rate of the files, >= 8000.
        fps: video frame rate of mp4 clips (>= 1); ``None`` for a generator writing frames as images.
        dataset_name: the dataset of a task without settings: ``setting`` must then be ``None``.
        setting: the setting asked for.
    """
    if dataset_name is not None and setting is not None:
        raise ValueError(f"{dataset_name} has no settings, got setting={setting!r}")
    if fps is None:
        if image_size < 8:
            raise ValueError(f"expected image_size >= 8, got {image_size}")
        if sample_rate < 8000:
            raise ValueError(f"expected sample_rate >= 8000, got {sample_rate}")
        return
    if image_size < 2 or image_size % 2:
        raise ValueError(f"expected an even image_size >= 2 (H.264 yuv420p), got {image_size}")
    if fps < 1 or sample_rate < 8000:
        raise ValueError(f"expected fps >= 1 and sample_rate >= 8000, got {fps} and {sample_rate}")


def check_plan_sizes(num_videos: int, num_classes: int | None = None) -> None:
    """A plan's sizes: ``num_videos >= 1`` and (when given) ``2 <= num_classes <= len(CLASS_SPECS)``."""
    if num_videos < 1:
        raise ValueError(f"expected num_videos >= 1, got {num_videos}")
    if num_classes is not None and not 2 <= num_classes <= len(CLASS_SPECS):
        raise ValueError(f"expected 2 <= num_classes <= {len(CLASS_SPECS)}, got {num_classes}")


def output_folder(out_dir: str | os.PathLike, *parts: str) -> Path:
    """``out_dir/parts...``, created (with its parents) if needed: where a generator writes its clips."""
    folder = Path(out_dir).joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def claim_output(folder: str | os.PathLike, record: dict, *, overwrite: bool = False,
                 prepared: Sequence[str | os.PathLike] = ()) -> Path:
    """Make ``folder`` this generator's output, or refuse it with a ``ValueError`` naming it and the fix.

    ``record`` says what is generated (``generator``, ``seed``, ``num_videos`` and every option that changes the
    files, JSON values). A new or empty folder is taken; so is one holding :data:`SYNTH_MARKER` with the same
    record: the same generator run again writes the same files (generation is deterministic), which also completes
    a killed run. A folder holding anything else (a real data set, a synthetic set of other options) is refused
    unless ``overwrite``. The record is written before any clip.

    Args:
        folder: the folder the generator owns (the data set root; an AVSBench setting's subset folder).
        record: what is generated.
        overwrite: write into ``folder`` whatever it holds.
        prepared: prepared copies of the set (``ROOT/prepared``); when the set changes (new record), their
            ``index.json`` is removed, so that they are prepared again instead of being used with old clips.
    """
    folder = Path(folder)
    record = json.loads(json.dumps(record))
    found = _read_record(folder / SYNTH_MARKER)
    if found is None:  # written before the marker existed: its ground truth names the generator, seed and size
        truth = _read_record(folder / GROUND_TRUTH_FILE)
        if truth is not None and all(truth.get(key) == record.get(key) for key in ("generator", "seed",
                                                                                    "num_videos")):
            found = record
    if not overwrite and folder.is_dir() and any(folder.iterdir()):
        if found is None:
            names = sorted(path.name for path in folder.iterdir())
            listing = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise ValueError(f"{folder} is not empty ({listing}) and was not written by `molt synth`: generating "
                             f"into it would replace its files; choose another --out, or pass --overwrite")
        if found != record:
            changes = "; ".join(f"{key} {found.get(key)!r}, now {record.get(key)!r}"
                                for key in sorted(set(found) | set(record)) if found.get(key) != record.get(key))
            raise ValueError(f"{folder} holds a synthetic set generated with other options ({changes}): choose "
                             f"another --out, or pass --overwrite to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    if found != record:
        for copy in prepared:
            index = Path(copy) / INDEX_FILE
            if index.is_file():
                index.unlink()
                _logger.warning("%s was prepared from the set now replaced: it will be prepared again", copy)
    atomic_json(folder / SYNTH_MARKER, record)
    return folder
