"""Procedural clips in the LLP on-disk layout: audio-visual video parsing with events heard, seen, or both.

Part of molt-av (Apache-2.0). LLP (see :mod:`molt.tasks.avvp.reader`) cannot be downloaded in a sandbox, so
:func:`generate_llp` writes real mp4 files (H.264 + AAC) and the LLP csv files; the real pipeline (read,
prepare, train, evaluate) then runs on them unchanged.

Design
------
* An **event class** ``k`` is the visual pattern *and* the sound of :data:`molt.data.synthetic.CLASS_SPECS`
  ``[k]`` (shape, colour and motion; pitch, timbre and rhythm), named in LLP style (``Red_circle_low_hum``).
* A clip holds 1 to 3 events of distinct classes. Each event is **audio only** (the sound plays, the pattern
  is never shown), **visual only**, or **audio-visual**; each modality of an event has its own window
  ``[onset, offset)`` of whole seconds (2 to 8 s by default). An audio-visual event reuses its audio window for
  the picture half of the time and draws another window otherwise, so its audio-visual part (the overlap of
  the two, as in the LLP evaluation) may be shorter than either, or empty.
* The first event of every clip is audio-visual with one window for both modalities, so every clip has
  something heard, seen, and both. (This keeps the metrics honest: in the official evaluation a clip where
  nothing is true and nothing is predicted scores 1.0, so on clips without, say, an audio-visual event an
  empty prediction would be perfect.) The kinds of the other events follow ``event_kinds``.
* Several events may overlap in time: a segment can show several patterns and mix several sounds. The weak
  label of a clip is the set of its event classes; the segment labels (eval csv files, written for val and
  test only, as in LLP) say which class is heard and which is seen in each second.
* Nuisances: random background colours and gradient, per-frame pixel noise, a neutral grey object in some
  segments, colour and pitch jitter (from the shared helpers), background noise of random level and neutral
  chirps in some seconds.
* Determinism: the plan is drawn from ``numpy.random.default_rng(seed)``, each clip's pixels and samples from
  ``(seed, clip index)``, so the files do not depend on the number of worker processes.

Layout written under ``out_dir`` (the layout of the authors' ``data/`` directory)::

    AVVP_train.csv, AVVP_val_pd.csv, AVVP_test_pd.csv   filename \\t event_labels (comma-separated)
    AVVP_eval_audio.csv, AVVP_eval_visual.csv           filename \\t onset \\t offset \\t event_labels (val + test)
    AVVP_dataset_full.csv                               every clip (filename \\t event_labels)
    categories.txt                                      class names, one per line
    synthetic_ground_truth.json                         generator options and every clip's plan
    molt_synth.json                                     generator, seed and options (written first, see
                                                        molt.data.synthetic.claim_output)
    LLP_dataset/video/{YouTube-like id}.mp4             one 10-s clip per line

``AVVP_train.csv`` is written last, so its presence means the set is complete.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ...data.media import parallel_map, write_clip
from ...data.synthetic import (CLASS_SPECS, GROUND_TRUTH_FILE, check_generator_options, check_plan_sizes, chirp,
                               claim_output, class_sound, object_track, output_folder, shape_mask, split_sizes,
                               video_ids)
from .reader import CATEGORIES_FILE, EVAL_FILES, SPLIT_FILES, VIDEO_SUBDIR
from ...progress import progress_bar

__all__ = ["EVENT_KINDS", "generate_llp", "plan_llp_videos", "render_llp_video", "llp_class_names",
           "FULL_FILE"]

_logger = logging.getLogger(__name__)

#: Default probabilities of the event kinds.
EVENT_KINDS: dict[str, float] = {"audio_visual": 0.4, "audio": 0.3, "visual": 0.3}
FULL_FILE = "AVVP_dataset_full.csv"
FORMAT_VERSION = 1


def llp_class_names(num_classes: int) -> list[str]:
    """LLP-style names (no spaces or commas) of the first ``num_classes`` synthetic classes."""
    return [spec.name.replace(",", "").replace(" ", "_") for spec in CLASS_SPECS[:num_classes]]


def _window(rng: np.random.Generator, length: tuple[int, int], num_segments: int) -> list[int]:
    size = int(rng.integers(length[0], length[1] + 1))
    onset = int(rng.integers(0, num_segments - size + 1))
    return [onset, onset + size]


def plan_llp_videos(num_videos: int, seed: int, *, num_classes: int = 6, num_segments: int = 10,
                    events_per_video: tuple[int, int] = (1, 3), event_length: tuple[int, int] = (2, 8),
                    event_kinds: dict[str, float] | None = None,
                    split_fractions: Sequence[float] = (0.7, 0.15, 0.15)) -> list[dict[str, Any]]:
    """Decide everything about every clip except its pixels and samples (the first event of a clip is
    audio-visual with one window for both modalities, the others follow ``event_kinds``).

    Returns one dict per clip: ``video_id``, ``filename``, ``index``, ``split``, ``labels`` (class names of the
    weak label), ``events`` (``class_index``, ``label``, ``kind``, ``audio`` / ``visual`` window
    ``[onset, offset)`` or ``None``) and per segment ``audio`` / ``visual``: the class indices heard / seen.
    """
    check_plan_sizes(num_videos, num_classes)
    low, high = events_per_video
    if not 1 <= low <= high <= num_classes:
        raise ValueError(f"expected 1 <= events_per_video[0] <= events_per_video[1] <= num_classes "
                         f"({num_classes}), got {events_per_video}")
    if not 1 <= event_length[0] <= event_length[1] <= num_segments:
        raise ValueError(f"expected 1 <= event_length[0] <= event_length[1] <= {num_segments}, got {event_length}")
    mixture = dict(EVENT_KINDS if event_kinds is None else event_kinds)
    if set(mixture) - set(EVENT_KINDS) or sum(mixture.values()) <= 0 or min(mixture.values()) < 0:
        raise ValueError(f"event_kinds must give non-negative weights to some of {sorted(EVENT_KINDS)}, "
                         f"got {mixture}")
    kinds = list(mixture)
    weights = np.array([mixture[kind] for kind in kinds], dtype=np.float64) / sum(mixture.values())
    names = llp_class_names(num_classes)

    rng = np.random.default_rng(seed)
    ids = video_ids(rng, num_videos)
    _, n_val, n_test = split_sizes(num_videos, split_fractions)
    order = rng.permutation(num_videos)
    split_of = {int(index): "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
                for rank, index in enumerate(order)}
    plans = []
    for index in range(num_videos):
        classes = rng.choice(num_classes, size=int(rng.integers(low, high + 1)), replace=False)
        events = []
        for position, cls in enumerate(classes):
            kind = "audio_visual" if position == 0 else kinds[int(rng.choice(len(kinds), p=weights))]
            audio = _window(rng, event_length, num_segments) if kind != "visual" else None
            visual = _window(rng, event_length, num_segments) if kind != "audio" else None
            if position == 0 or (kind == "audio_visual" and rng.random() < 0.5):
                visual = list(audio)
            events.append({"class_index": int(cls), "label": names[cls], "kind": kind, "audio": audio,
                           "visual": visual})
        per_segment = {modality: [[e["class_index"] for e in events
                                   if e[modality] is not None and e[modality][0] <= t < e[modality][1]]
                                  for t in range(num_segments)] for modality in ("audio", "visual")}
        start = int(rng.integers(0, 60)) * 10
        plans.append({"video_id": ids[index], "filename": f"{ids[index]}_{start}_{start + 10}", "index": index,
                      "split": split_of[index], "labels": [e["label"] for e in events], "events": events,
                      **per_segment})
    return plans


def render_llp_video(plan: dict[str, Any], seed: int, *, image_size: int = 64, fps: int = 8,
                     sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and samples of one planned clip: frames ``uint8 (T*fps, S, S, 3)``, audio ``float32 (T*sr,)``.

    Segment ``t`` shows the pattern of every class in ``plan["visual"][t]`` and mixes the sound of every class in
    ``plan["audio"][t]`` (1-s segments).
    """
    rng = np.random.default_rng([seed, plan["index"], 7])
    segments = len(plan["visual"])
    size = image_size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.clip(0.5 + (np.cos(angle) * (xx - size / 2) + np.sin(angle) * (yy - size / 2)) / size, 0, 1)
    low_colour, high_colour = rng.uniform(15, 115, size=(2, 3))
    background = low_colour + (high_colour - low_colour) * ramp[..., None]
    pixel_noise = rng.uniform(3.0, 9.0)
    noise_level = rng.uniform(0.004, 0.025)
    frame_times = (np.arange(fps) + 0.5) / fps
    t = np.arange(sample_rate) / sample_rate
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)

    frames = []
    waves = []
    for segment in range(segments):
        objects = [(CLASS_SPECS[k].shape, CLASS_SPECS[k].motion,
                    np.clip(np.array(CLASS_SPECS[k].colour) + rng.uniform(-20, 20, size=3), 0, 255))
                   for k in plan["visual"][segment]]
        if rng.random() < 0.4:
            objects.insert(0, ("blob", "drift", np.clip(rng.uniform(90, 160) + rng.uniform(-12, 12, 3), 0, 255)))
        tracks = [(shape, colour, object_track(rng, motion, size, frame_times))
                  for shape, motion, colour in objects]
        block = background[None] + rng.normal(0.0, pixel_noise, size=(fps, size, size, 3))
        for shape, colour, (xs, ys, radii) in tracks:
            for k, image in enumerate(block):
                inside = shape_mask(shape, xx - xs[k], yy - ys[k], radii[k])
                image[inside] = colour + rng.normal(0.0, pixel_noise / 2, size=(int(inside.sum()), 3))
        frames.append(np.clip(block, 0, 255).astype(np.uint8))

        sound = rng.normal(0.0, noise_level, size=sample_rate)
        for k in plan["audio"][segment]:
            sound += rng.uniform(0.15, 0.3) * fade * class_sound(CLASS_SPECS[k], rng, t)
        if rng.random() < 0.3:
            sound += rng.uniform(0.03, 0.1) * fade * chirp(rng, t)
        peak = float(np.abs(sound).max())
        waves.append(sound * (0.9 / peak if peak > 0.9 else 1.0))
    return np.concatenate(frames), np.concatenate(waves).astype(np.float32)


def _render_and_write(job: tuple[dict[str, Any], int, dict[str, Any], str]) -> str:
    plan, seed, options, directory = job
    frames, audio = render_llp_video(plan, seed, **options)
    write_clip(Path(directory) / f"{plan['video_id']}.mp4", frames, audio, fps=options["fps"],
               sample_rate=options["sample_rate"])
    return plan["video_id"]


def _write_tsv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    lines = ["\t".join(header)] + ["\t".join(str(value) for value in row) for row in rows]
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def generate_llp(out_dir: str | os.PathLike, num_videos: int = 200, seed: int = 0, *, image_size: int = 64,
                 workers: int = 2, setting: str | None = None, fps: int = 8, sample_rate: int = 16000,
                 num_classes: int = 6, events_per_video: tuple[int, int] = (1, 3),
                 event_length: tuple[int, int] = (2, 8), event_kinds: dict[str, float] | None = None,
                 split_fractions: Sequence[float] = (0.7, 0.15, 0.15), show_progress: bool = True,
                 overwrite: bool = False) -> dict[str, Any]:
    """Write a synthetic LLP-format data set (mp4 files + csv files) into ``out_dir``.

    Args:
        out_dir: output directory (created).
        num_videos: number of 10-s clips.
        seed: seed of everything (same seed, same files).
        image_size: frame width and height (even).
        workers: encoder processes (``<= 1``: in this process).
        setting: LLP has no settings; must be ``None``.
        fps, sample_rate: frame rate and audio rate of the files (readers resample).
        num_classes: event classes, 2 to ``len(CLASS_SPECS)``.
        events_per_video: fewest and most events (distinct classes) per clip.
        event_length: shortest and longest window of one modality of an event, in seconds.
        event_kinds: weights of ``"audio_visual"``, ``"audio"`` and ``"visual"`` events (default
            :data:`EVENT_KINDS`).
        split_fractions: train / val / test fractions.
        show_progress: tqdm progress bar.
        overwrite: write into ``out_dir`` even when it holds a data set not written by this generator with
            these options (see :func:`molt.data.synthetic.claim_output`; the same run again needs no flag).

    Returns:
        a summary: output directory, clips per split, categories, events per kind, wall time.
    """
    check_generator_options(image_size=image_size, sample_rate=sample_rate, fps=fps, dataset_name="LLP (task avvp)",
                            setting=setting)
    start_time = time.time()
    out = Path(out_dir)
    claim_output(out, {"generator": "molt.tasks.avvp.synthetic.generate_llp", "seed": seed, "num_videos": num_videos,
                       "options": {"image_size": image_size, "fps": fps, "sample_rate": sample_rate,
                                   "num_classes": num_classes, "events_per_video": events_per_video,
                                   "event_length": event_length, "event_kinds": event_kinds,
                                   "split_fractions": split_fractions}},
                 overwrite=overwrite, prepared=[out / "prepared"])
    video_dir = output_folder(out, VIDEO_SUBDIR)
    (out / SPLIT_FILES["train"]).unlink(missing_ok=True)
    plans = plan_llp_videos(num_videos, seed, num_classes=num_classes, events_per_video=events_per_video,
                            event_length=event_length, event_kinds=event_kinds, split_fractions=split_fractions)
    options = {"image_size": image_size, "fps": fps, "sample_rate": sample_rate}
    jobs = [(plan, seed, options, str(video_dir)) for plan in plans]


    for _ in progress_bar(parallel_map(_render_and_write, jobs, workers), total=len(jobs), desc="synth avvp",
                          unit="clip", show=show_progress):
        pass

    categories = llp_class_names(num_classes)
    ground_truth = {"format_version": FORMAT_VERSION, "generator": "molt.tasks.avvp.synthetic.generate_llp",
                    "seed": seed, "num_videos": num_videos, "categories": categories, "options": options,
                    "events_per_video": list(events_per_video), "event_length": list(event_length),
                    "event_kinds": event_kinds or EVENT_KINDS, "videos": plans}
    gt_path = out / GROUND_TRUTH_FILE
    gt_tmp = gt_path.with_name(f".{gt_path.name}.tmp")
    gt_tmp.write_text(json.dumps(ground_truth, indent=1))
    os.replace(gt_tmp, gt_path)
    (out / CATEGORIES_FILE).write_text("".join(name + "\n" for name in categories), encoding="utf-8")

    def weak(split: str | None) -> list[tuple[str, str]]:
        return [(p["filename"], ",".join(p["labels"])) for p in plans if split is None or p["split"] == split]

    evaluated = [p for split in ("val", "test") for p in plans if p["split"] == split]
    for modality, name in EVAL_FILES.items():
        _write_tsv(out / name, ("filename", "onset", "offset", "event_labels"),
                   [(p["filename"], *e[modality], e["label"]) for p in evaluated for e in p["events"]
                    if e[modality] is not None])
    _write_tsv(out / FULL_FILE, ("filename", "event_labels"), weak(None))
    for split in ("val", "test", "train"):
        _write_tsv(out / SPLIT_FILES[split], ("filename", "event_labels"), weak(split))

    kinds = [e["kind"] for p in plans for e in p["events"]]
    summary = {"out_dir": str(out), "videos": num_videos, "seed": seed, "categories": categories,
               "splits": {s: sum(p["split"] == s for p in plans) for s in SPLIT_FILES},
               "events": {kind: kinds.count(kind) for kind in EVENT_KINDS},
               "seconds": round(time.time() - start_time, 2)}
    _logger.info("wrote %d synthetic LLP clips to %s in %.1f s", num_videos, out, summary["seconds"])
    return summary
