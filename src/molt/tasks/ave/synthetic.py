"""Procedural audio-visual event clips in the AVE on-disk layout: a data set that needs both senses.

Part of molt-av (Apache-2.0), an implementation of "Mixture of Layer-Wise Tokens for Efficient Audio-Visual
Learning" (MoLT). Nobody can download AVE in a sandbox, so :func:`generate_ave` writes real mp4 files (H.264 +
AAC) and the four AVE annotation files; the whole real pipeline (decode, prepare, train, evaluate) then runs on
them unchanged.

Design
------
* An **event class** ``k`` is a visual pattern (shape, colour, motion) *together with* a sound (pitch, timbre,
  rhythm), see :data:`CLASS_SPECS`. Each video is about one class ``c`` and has one event window
  ``[start, end)`` of 2 to 7 whole seconds: inside it, every segment shows the pattern of ``c`` *and* plays
  the sound of ``c``.
* Every segment outside the window is **background**, and is a distractor built from the *same* class ``c``:
  ``visual_only`` (pattern of ``c``, no class sound), ``audio_only`` (sound of ``c``, no class pattern),
  ``mismatch`` (pattern of ``c`` with the sound of another class ``j``, or the other way round), or ``empty``.
  So a model that sees one modality finds the event's pattern (or sound) in background segments as often as in
  event segments and cannot tell them apart; only the *co-occurrence* of matching sight and sound marks an
  event. :func:`single_modality_oracle` computes the best segment accuracy reachable from one modality's
  ground truth (about 75 % with the default mixture, against 100 % with both).
* Nuisances: random background colour and gradient, per-frame pixel noise, random object position, size and
  motion direction, a neutral grey distractor object, colour and pitch jitter, background noise of random level
  and neutral chirps. Content changes at segment boundaries; sounds fade in and out over 10 ms.
* Determinism: everything is drawn from ``numpy.random.default_rng`` seeded by ``seed`` (the plan) and by
  ``(seed, video index)`` (each video's pixels and samples), so the annotation files and the decoded content do
  not depend on the number of worker processes. The mp4 bytes are deterministic too (single-threaded x264).

Layout written under ``out_dir``::

    Annotations.txt        header + one line per video, "Category&VideoID&good&Start&End" (grouped by category)
    trainSet.txt, valSet.txt, testSet.txt   the same lines, no header (stratified 80/10/10 split)
    categories.txt         class names, one per line (as in the DG-SCT copy of AVE)
    synthetic_ground_truth.json   generator parameters and per-segment visual/audio/label ground truth
    molt_synth.json        generator, seed and options, written first: the same run again may write into the
                           folder, anything else needs ``overwrite`` (:func:`molt.data.synthetic.claim_output`)
    AVE/{video_id}.mp4     one 10-s clip per video
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...data.media import parallel_map, write_clip
from ...data.synthetic import (CLASS_SPECS, GROUND_TRUTH_FILE, NONE, check_generator_options, check_plan_sizes, chirp,
                               claim_output, class_sound, object_track, output_folder, shape_mask, split_sizes,
                               video_ids, write_text)
from ...progress import progress_bar

__all__ = ["BACKGROUND_TYPES", "generate_ave", "plan_videos", "render_video", "single_modality_oracle"]

_logger = logging.getLogger(__name__)

FORMAT_VERSION = 1

#: Background segment types and their default probabilities.
BACKGROUND_TYPES: dict[str, float] = {"visual_only": 0.3, "audio_only": 0.3, "mismatch": 0.3, "empty": 0.1}


def plan_videos(num_videos: int, seed: int, *, num_classes: int = 8, num_segments: int = 10,
                event_length: tuple[int, int] = (2, 7),
                background_types: dict[str, float] | None = None,
                split_fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> list[dict[str, Any]]:
    """Decide everything about every video except its pixels and samples.

    Returns one dict per video: ``video_id``, ``index``, ``split``, ``class_index``, ``category``, ``start``,
    ``end`` (event window in whole segments), and per segment ``visual`` / ``audio`` (class index shown / heard,
    or ``-1``), ``kind`` (``"event"`` or a background type) and ``label`` (class index, ``num_classes`` =
    background).
    """
    check_plan_sizes(num_videos, num_classes)
    low, high = event_length
    if not 1 <= low <= high <= num_segments:
        raise ValueError(f"expected 1 <= event_length[0] <= event_length[1] <= {num_segments}, got {event_length}")
    mixture = dict(BACKGROUND_TYPES if background_types is None else background_types)
    unknown = set(mixture) - set(BACKGROUND_TYPES)
    if unknown or sum(mixture.values()) <= 0:
        raise ValueError(f"background_types must weight some of {sorted(BACKGROUND_TYPES)}, got {mixture}")
    kinds = list(mixture)
    weights = np.array([mixture[k] for k in kinds], dtype=np.float64)
    weights /= weights.sum()

    rng = np.random.default_rng(seed)
    ids = video_ids(rng, num_videos)
    classes = rng.permutation(np.arange(num_videos) % num_classes)
    # stratified split: list videos round-robin over classes, test first, then val, then train
    rank_in_class = np.zeros(num_videos, dtype=np.int64)
    counters = np.zeros(num_classes, dtype=np.int64)
    for index, cls in enumerate(classes):
        rank_in_class[index] = counters[cls]
        counters[cls] += 1
    round_robin = sorted(range(num_videos), key=lambda i: (rank_in_class[i], classes[i]))
    n_train, n_val, n_test = split_sizes(num_videos, split_fractions)
    split_of = {}
    for position, index in enumerate(round_robin):
        split_of[index] = "test" if position < n_test else "val" if position < n_test + n_val else "train"

    plans = []
    for index in range(num_videos):
        cls = int(classes[index])
        length = int(rng.integers(low, high + 1))
        start = int(rng.integers(0, num_segments - length + 1))
        end = start + length
        visual, audio, kind, label = [], [], [], []
        for segment in range(num_segments):
            if start <= segment < end:
                v, a, k, y = cls, cls, "event", cls
            else:
                k = kinds[int(rng.choice(len(kinds), p=weights))]
                y = num_classes
                if k == "visual_only":
                    v, a = cls, NONE
                elif k == "audio_only":
                    v, a = NONE, cls
                elif k == "mismatch":
                    other = int(rng.choice([c for c in range(num_classes) if c != cls]))
                    v, a = (cls, other) if rng.random() < 0.5 else (other, cls)
                else:
                    v, a = NONE, NONE
            visual.append(v)
            audio.append(a)
            kind.append(k)
            label.append(y)
        plans.append({"video_id": ids[index], "index": index, "split": split_of[index], "class_index": cls,
                      "category": CLASS_SPECS[cls].name, "start": start, "end": end, "visual": visual,
                      "audio": audio, "kind": kind, "label": label})
    return plans

# ----------------------------------------------------------------------------------------------------------------
# rendering
def render_video(plan: dict[str, Any], seed: int, *, image_size: int = 64, fps: int = 8, sample_rate: int = 16000,
                 segment_seconds: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and samples of one planned video: frames ``uint8 (T*fps, S, S, 3)`` and audio ``float32 (T*sr,)``."""
    rng = np.random.default_rng([seed, plan["index"]])
    num_segments = len(plan["visual"])
    frames_per_segment = int(round(fps * segment_seconds))
    samples_per_segment = int(round(sample_rate * segment_seconds))
    size = image_size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    base = rng.uniform(20, 110, size=3)
    tilt = rng.uniform(-40, 40, size=3)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = ((np.cos(direction) * xx + np.sin(direction) * yy) / size)[..., None]
    background = base[None, None, :] + tilt[None, None, :] * ramp
    pixel_noise = rng.uniform(3.0, 10.0)
    noise_level = rng.uniform(0.005, 0.03)

    frames = np.empty((num_segments * frames_per_segment, size, size, 3), dtype=np.uint8)
    audio = np.empty(num_segments * samples_per_segment, dtype=np.float32)
    frame_times = (np.arange(frames_per_segment) + 0.5) / fps
    t = np.arange(samples_per_segment) / sample_rate
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)

    for segment in range(num_segments):
        visual, heard = plan["visual"][segment], plan["audio"][segment]
        objects = []
        if visual != NONE:
            spec = CLASS_SPECS[visual]
            colour = np.clip(np.array(spec.colour) + rng.uniform(-20, 20, size=3), 0, 255)
            objects.append((spec.shape, spec.motion, colour))
        if visual == NONE or rng.random() < 0.3:
            if rng.random() < 0.6:
                grey = rng.uniform(90, 160)
                colour = np.clip(grey + rng.uniform(-12, 12, size=3), 0, 255)
                objects.insert(0, ("blob", "drift", colour))
        tracks = [(shape, colour, object_track(rng, motion, size, frame_times)) for shape, motion, colour in objects]
        for k in range(frames_per_segment):
            image = background + rng.normal(0.0, pixel_noise, size=(size, size, 3))
            for shape, colour, (xs, ys, radii) in tracks:
                mask = shape_mask(shape, xx - xs[k], yy - ys[k], radii[k])
                image[mask] = colour + rng.normal(0.0, pixel_noise / 2, size=(int(mask.sum()), 3))
            frames[segment * frames_per_segment + k] = np.clip(image, 0, 255).astype(np.uint8)

        sound = rng.normal(0.0, noise_level, size=samples_per_segment)
        if heard != NONE:
            sound += rng.uniform(0.2, 0.35) * fade * class_sound(CLASS_SPECS[heard], rng, t)
        elif rng.random() < 0.5:
            sound += rng.uniform(0.05, 0.15) * fade * chirp(rng, t)
        audio[segment * samples_per_segment:(segment + 1) * samples_per_segment] = sound
    return frames, np.clip(audio, -1.0, 1.0)


def _render_and_write(job: tuple[dict[str, Any], int, dict[str, Any], str]) -> str:
    plan, seed, options, directory = job
    frames, audio = render_video(plan, seed, **options)
    write_clip(Path(directory) / f"{plan['video_id']}.mp4", frames, audio, fps=options["fps"],
               sample_rate=options["sample_rate"])
    return plan["video_id"]


def generate_ave(out_dir: str | os.PathLike, num_videos: int = 200, seed: int = 0, *, image_size: int = 64,
                 fps: int = 8, sample_rate: int = 16000, num_classes: int = 8, num_segments: int = 10,
                 event_length: tuple[int, int] = (2, 7), background_types: dict[str, float] | None = None,
                 split_fractions: Sequence[float] = (0.8, 0.1, 0.1), workers: int = 2,
                 show_progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Write a synthetic AVE-format data set (mp4 files + annotation files) into ``out_dir``.

    Args:
        out_dir: output directory (created). ``Annotations.txt`` is written last, so its presence means the set
            is complete.
        num_videos: number of 10-s clips.
        seed: seed of everything; the same seed gives the same annotation files and decoded content.
        image_size: frame width and height in pixels (even).
        fps: video frame rate.
        sample_rate: audio sample rate of the files (readers resample).
        num_classes: number of event classes, 2 to ``len(CLASS_SPECS)``.
        num_segments: clip length in 1-s segments.
        event_length: shortest and longest event window, in segments.
        background_types: weights of the background segment types (default :data:`BACKGROUND_TYPES`).
        split_fractions: train / val / test fractions (stratified by class).
        workers: encoder processes (``<= 1``: in this process).
        show_progress: show a tqdm progress bar.
        overwrite: write into ``out_dir`` even when it holds a data set not written by this generator with
            these options (see :func:`molt.data.synthetic.claim_output`; the same run again needs no flag).

    Returns:
        a summary dict: output directory, counts per split and class, event-segment fraction, the single-modality
        oracle accuracies and the wall time.
    """
    check_generator_options(image_size=image_size, sample_rate=sample_rate, fps=fps)
    start_time = time.time()
    out = Path(out_dir)
    claim_output(out, {"generator": "molt.tasks.ave.synthetic.generate_ave", "seed": seed, "num_videos": num_videos,
                       "options": {"image_size": image_size, "fps": fps, "sample_rate": sample_rate,
                                   "num_classes": num_classes, "num_segments": num_segments,
                                   "event_length": event_length, "background_types": background_types,
                                   "split_fractions": split_fractions}},
                 overwrite=overwrite, prepared=[out / "prepared"])
    video_dir = output_folder(out, "AVE")
    plans = plan_videos(num_videos, seed, num_classes=num_classes, num_segments=num_segments,
                        event_length=event_length, background_types=background_types,
                        split_fractions=split_fractions)
    options = {"image_size": image_size, "fps": fps, "sample_rate": sample_rate}
    jobs = [(plan, seed, options, str(video_dir)) for plan in plans]


    progress = progress_bar(total=len(jobs), desc="synth ave", unit="clip", show=show_progress)
    for _ in parallel_map(_render_and_write, jobs, workers):
        progress.update()
    progress.close()

    categories = [spec.name for spec in CLASS_SPECS[:num_classes]]
    line = {p["video_id"]: f"{p['category']}&{p['video_id']}&good&{p['start']}&{p['end']}" for p in plans}
    by_category = sorted(plans, key=lambda p: (p["class_index"], p["index"]))
    ground_truth = {
        "format_version": FORMAT_VERSION, "generator": "molt.tasks.ave.synthetic.generate_ave", "seed": seed,
        "num_videos": num_videos, "num_classes": num_classes, "num_segments": num_segments,
        "categories": categories, "background_index": num_classes, "options": options,
        "event_length": list(event_length), "background_types": background_types or BACKGROUND_TYPES,
        "videos": [{k: p[k] for k in ("video_id", "split", "category", "class_index", "start", "end", "visual",
                                      "audio", "kind", "label")} for p in plans],
    }
    gt_path = out / GROUND_TRUTH_FILE
    gt_tmp = gt_path.with_name(f".{gt_path.name}.tmp")
    gt_tmp.write_text(json.dumps(ground_truth, indent=1))
    os.replace(gt_tmp, gt_path)
    write_text(out / "categories.txt", categories)
    for split, filename in (("train", "trainSet.txt"), ("val", "valSet.txt"), ("test", "testSet.txt")):
        write_text(out / filename, [line[p["video_id"]] for p in plans if p["split"] == split])
    write_text(out / "Annotations.txt",
                ["Category&VideoID&Quality&StartTime&EndTime"] + [line[p["video_id"]] for p in by_category])

    labels = np.array([p["label"] for p in plans])
    summary = {
        "out_dir": str(out), "videos": num_videos, "seed": seed, "categories": categories,
        "splits": {s: sum(p["split"] == s for p in plans) for s in ("train", "val", "test")},
        "per_class": {name: int((np.array([p["class_index"] for p in plans]) == k).sum())
                      for k, name in enumerate(categories)},
        "event_segment_fraction": round(float((labels != num_classes).mean()), 4),
        "oracle_accuracy": {"both": 1.0,
                            "visual_only": round(single_modality_oracle(plans, "visual"), 4),
                            "audio_only": round(single_modality_oracle(plans, "audio"), 4)},
        "seconds": round(time.time() - start_time, 2),
    }
    _logger.info("wrote %d synthetic AVE clips to %s in %.1f s", num_videos, out, summary["seconds"])
    return summary


def single_modality_oracle(videos: Sequence[dict[str, Any]], modality: str) -> float:
    """Best segment accuracy reachable from one modality's ground truth.

    The predictor may know each video's event class (it can be read off the whole clip) and the class shown (or
    heard) in each segment; it predicts, for every combination of (class present in the segment, whether that is
    the video's class), the most frequent true label over ``videos``. With both modalities the labels are exactly
    determined (accuracy 1.0); with one, background segments that show the event's pattern (or play its sound)
    are indistinguishable from event segments.

    Args:
        videos: plans from :func:`plan_videos` or the ``videos`` of ``synthetic_ground_truth.json``.
        modality: ``"visual"`` or ``"audio"``.
    """
    if modality not in ("visual", "audio"):
        raise ValueError(f"modality must be 'visual' or 'audio', got {modality!r}")
    counts: dict[tuple[int, bool], dict[bool, int]] = {}
    for video in videos:
        cls = video["class_index"]
        for seen, label in zip(video[modality], video["label"]):
            key = (seen, seen == cls)
            is_event = label == cls
            bucket = counts.setdefault(key, {True: 0, False: 0})
            bucket[is_event] += 1
    correct = sum(max(bucket.values()) for bucket in counts.values())
    total = sum(sum(bucket.values()) for bucket in counts.values())
    return correct / total if total else 0.0
