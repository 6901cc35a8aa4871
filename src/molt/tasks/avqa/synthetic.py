"""Procedural music scenes with templated questions in the MUSIC-AVQA layout: questions that need a named sense.

Part of molt-av (Apache-2.0). MUSIC-AVQA cannot be downloaded in a sandbox, so :func:`generate_avqa` writes real
mp4 files (H.264 + AAC) and ``avqa-{train,val,test}.json`` in the exact format of the release (``type`` and
``templ_values`` as JSON-encoded strings, the ``anser`` key, 2-space indent, no final newline); the real pipeline
(read, prepare, train, evaluate) then runs on them unchanged.

Scene (one 10-s clip per video, 1-s segments)
---------------------------------------------
* Two **instruments** are on stage, one in the left half of the picture and one in the right half, of two
  different kinds. An instrument kind ``k`` is the picture *and* the sound of
  :data:`molt.data.synthetic.CLASS_SPECS` ``[k]`` (shape and colour; pitch, timbre and rhythm), named after a real
  MUSIC-AVQA instrument (:data:`INSTRUMENTS`), so answers and fill-ins use the real answer words.
* Each instrument on stage plays during one window of whole seconds (3 to 7 by default) with probability
  ``sound_probability`` and is silent otherwise; nothing in the picture shows whether it plays (no motion cue), so
  only the sound tells. With probability ``offscreen_probability`` an **off-screen** instrument of a third kind
  plays too: it is heard, never seen.
* Nuisances: random background colour, gradient and pixel noise, position jitter, colour and pitch jitter,
  background noise of random level.

Questions (at most one per type and video; a type is skipped for a video where its answer would be undefined)
------------------------------------------------------------------------------------------------------------
* ``Audio/Counting`` -- "Is there a <Object> sound?": yes/no, heard anywhere; a "no" prefers a *silent*
  instrument on stage, so sight misleads.
* ``Audio/Comparative`` -- "Is the <Object> playing longer than the <Object>?": yes/no, two heard instruments
  with different durations.
* ``Visual/Counting`` -- "Is there a <Object> in the entire video?": yes/no, on stage; a "no" prefers the
  *off-screen* instrument, so sound misleads.
* ``Visual/Location`` -- "What is the instrument on the <LR> of <Object>?": the other instrument's name.
* ``Audio-Visual/Existential`` -- "Is this sound from the instrument in the video?": "no" iff an off-screen
  instrument plays (asked only when something is heard).
* ``Audio-Visual/Counting`` -- "How many instruments are sounding in the video?": zero/one/two instruments on
  stage that play (the off-screen one does not count).
* ``Audio-Visual/Location`` -- "Is the instrument on the <LR> sounding?" (*not a MUSIC-AVQA template*): yes/no.
* ``Audio-Visual/Comparative`` -- "Is the instrument on the <LR> playing longer than the instrument on the
  <LR>?" (*not a MUSIC-AVQA template*; the real one asks "louder"): yes/no, a silent instrument plays 0 s.
* ``Audio-Visual/Temporal`` -- "Where is the <FL> sounding instrument?" (<FL>: first / last): left/right, the
  instrument on stage that starts playing first (last); the off-screen one does not count.

Yes/no parameters are drawn so that both answers are about equally frequent where the scene allows both, so that
always answering each type's most frequent training answer (:func:`molt.tasks.avqa.majority_baseline`, the
baseline a model must beat) scores about 50 %.

Determinism: the plan (scenes, splits and questions) is drawn from ``numpy.random.default_rng(seed)``, each clip's
pixels and samples from ``(seed, video index)``, so the files do not depend on the number of worker processes.

Layout written under ``out_dir``::

    avqa-train.json, avqa-val.json, avqa-test.json   questions (avqa-train.json written last = set complete)
    synthetic_ground_truth.json                      generator options and every scene
    molt_synth.json                                  generator, seed and options (written first, see
                                                     molt.data.synthetic.claim_output)
    MUSIC-AVQA-videos-Real/{video_id}.mp4            one 10-s clip per video (8-digit ids, as in the real set)
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
from ...data.synthetic import (CLASS_SPECS, GROUND_TRUTH_FILE, check_generator_options, check_plan_sizes, claim_output,
                               class_sound, output_folder, shape_mask, split_sizes)
from .reader import SPLIT_FILES, VIDEO_DIRS
from ...progress import progress_bar

__all__ = ["INSTRUMENTS", "TEMPLATES", "generate_avqa", "plan_avqa_videos", "render_avqa_video", "VIDEO_SUBDIR"]

_logger = logging.getLogger(__name__)

#: Instrument name of each :data:`CLASS_SPECS` entry (real MUSIC-AVQA answer words).
INSTRUMENTS = ("violin", "piano", "cello", "flute", "trumpet", "accordion", "guzheng", "saxophone", "erhu",
               "clarinet")
#: Question template of each (family, sub-type).
TEMPLATES: dict[tuple[str, str], str] = {
    ("Audio", "Counting"): "Is there a <Object> sound?",
    ("Audio", "Comparative"): "Is the <Object> playing longer than the <Object>?",
    ("Visual", "Counting"): "Is there a <Object> in the entire video?",
    ("Visual", "Location"): "What is the instrument on the <LR> of <Object>?",
    ("Audio-Visual", "Existential"): "Is this sound from the instrument in the video?",
    ("Audio-Visual", "Counting"): "How many instruments are sounding in the video?",
    ("Audio-Visual", "Location"): "Is the instrument on the <LR> sounding?",
    ("Audio-Visual", "Comparative"): "Is the instrument on the <LR> playing longer than the instrument on the <LR>?",
    ("Audio-Visual", "Temporal"): "Where is the <FL> sounding instrument?",
}
VIDEO_SUBDIR = VIDEO_DIRS[0]
SIDES = ("left", "right")
_COUNTS = ("zero", "one", "two", "three")
FORMAT_VERSION = 1


def _window(rng: np.random.Generator, lengths: tuple[int, int], num_segments: int) -> list[int]:
    length = int(rng.integers(lengths[0], lengths[1] + 1))
    start = int(rng.integers(0, num_segments - length + 1))
    return [start, start + length]


def _duration(source: dict[str, Any]) -> int:
    window = source["window"]
    return 0 if window is None else window[1] - window[0]


def _yes_no(rng: np.random.Generator, yes: Sequence[Any], no: Sequence[Any], preferred_no: Sequence[Any] = (),
            prefer: float = 0.7) -> tuple[Any, str] | None:
    """A parameter with answer "yes" or "no" (each half the time when both exist); "no" parameters are drawn from
    ``preferred_no`` with probability ``prefer`` when it is not empty."""
    options = [answer for answer, pool in (("yes", yes), ("no", no)) if pool]
    if not options:
        return None
    answer = options[int(rng.integers(len(options)))]
    pool = list(yes if answer == "yes" else no)
    if answer == "no" and preferred_no and rng.random() < prefer:
        pool = list(preferred_no)
    return pool[int(rng.integers(len(pool)))], answer


def _questions(rng: np.random.Generator, scene: dict[str, Any], num_instruments: int) -> list[dict[str, Any]]:
    """The questions about one scene (see the module docstring), as (family, sub-type, templ_values, answer)."""
    names = INSTRUMENTS
    stage = scene["objects"]                                  # [left, right]
    sources = stage + ([scene["offscreen"]] if scene["offscreen"] else [])
    heard = [s for s in sources if s["window"] is not None]
    heard_kinds = {s["instrument"] for s in heard}
    on_stage = {s["instrument"] for s in stage}
    questions = []

    def add(kind: tuple[str, str], values: list[str], answer: str) -> None:
        questions.append({"family": kind[0], "subtype": kind[1], "templ_values": values, "answer": answer})

    silent_on_stage = [s["instrument"] for s in stage if s["window"] is None]
    picked = _yes_no(rng, sorted(heard_kinds), [k for k in range(num_instruments) if k not in heard_kinds],
                     silent_on_stage)
    if picked:
        add(("Audio", "Counting"), [names[picked[0]]], picked[1])
    pairs = [(a, b) for a in heard for b in heard if a is not b and _duration(a) != _duration(b)]
    if pairs:
        first, second = pairs[int(rng.integers(len(pairs)))]
        add(("Audio", "Comparative"), [names[first["instrument"]], names[second["instrument"]]],
            "yes" if _duration(first) > _duration(second) else "no")
    offscreen = [scene["offscreen"]["instrument"]] if scene["offscreen"] else []
    picked = _yes_no(rng, sorted(on_stage), [k for k in range(num_instruments) if k not in on_stage], offscreen)
    if picked:
        add(("Visual", "Counting"), [names[picked[0]]], picked[1])
    side = int(rng.integers(2))                               # the instrument named in the question
    add(("Visual", "Location"), [SIDES[1 - side], names[stage[side]["instrument"]]],
        names[stage[1 - side]["instrument"]])
    if heard:
        add(("Audio-Visual", "Existential"), [], "no" if scene["offscreen"] and scene["offscreen"]["window"]
            else "yes")
    playing = [s for s in stage if s["window"] is not None]
    add(("Audio-Visual", "Counting"), [], _COUNTS[len(playing)])
    picked = _yes_no(rng, [s["side"] for s in playing], [s["side"] for s in stage if s["window"] is None])
    if picked:
        add(("Audio-Visual", "Location"), [picked[0]], picked[1])
    if _duration(stage[0]) != _duration(stage[1]):
        order = [0, 1] if rng.random() < 0.5 else [1, 0]
        longer = _duration(stage[order[0]]) > _duration(stage[order[1]])
        add(("Audio-Visual", "Comparative"), [SIDES[order[0]], SIDES[order[1]]], "yes" if longer else "no")
    which = "first" if rng.random() < 0.5 else "last"
    onsets = sorted((s["window"][0], s["side"]) for s in playing)
    if len(onsets) == 1 or (len(onsets) == 2 and onsets[0][0] != onsets[1][0]):
        add(("Audio-Visual", "Temporal"), [which], onsets[0][1] if which == "first" else onsets[-1][1])
    return questions


def plan_avqa_videos(num_videos: int, seed: int, *, num_instruments: int = 5, num_segments: int = 10,
                     sound_probability: float = 0.65, offscreen_probability: float = 0.4,
                     window: tuple[int, int] = (3, 7),
                     split_fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> list[dict[str, Any]]:
    """Decide everything about every video except its pixels and samples.

    Returns one dict per video: ``video_id`` (8 digits), ``index``, ``split``, ``objects`` (the instruments on
    stage, left then right: ``side``, ``instrument`` index, ``window`` ``[start, end)`` in segments or ``None`` when
    silent, ``amplitude``), ``offscreen`` (the same without ``side``, or ``None``) and ``questions`` (``family``,
    ``subtype``, ``templ_values``, ``answer``).
    """
    check_plan_sizes(num_videos)
    if not 3 <= num_instruments <= len(CLASS_SPECS):
        raise ValueError(f"expected 3 <= num_instruments <= {len(CLASS_SPECS)} (two on stage and one off-screen), "
                         f"got {num_instruments}")
    if not 1 <= window[0] <= window[1] <= num_segments:
        raise ValueError(f"expected 1 <= window[0] <= window[1] <= {num_segments}, got {window}")
    for name, value in (("sound_probability", sound_probability), ("offscreen_probability", offscreen_probability)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    n_train, n_val, _ = split_sizes(num_videos, split_fractions)
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_videos)
    split_of = {int(v): "train" if p < n_train else "val" if p < n_train + n_val else "test"
                for p, v in enumerate(order)}
    plans = []
    for index in range(num_videos):
        kinds = [int(k) for k in rng.choice(num_instruments, size=3, replace=False)]
        objects = []
        for side, kind in zip(SIDES, kinds[:2]):
            plays = rng.random() < sound_probability
            objects.append({"side": side, "instrument": kind,
                            "window": _window(rng, window, num_segments) if plays else None,
                            "amplitude": round(float(rng.uniform(0.15, 0.3)), 4)})
        offscreen = None
        if rng.random() < offscreen_probability:
            offscreen = {"instrument": kinds[2], "window": _window(rng, window, num_segments),
                         "amplitude": round(float(rng.uniform(0.15, 0.3)), 4)}
        scene = {"video_id": f"{index + 1:08d}", "index": index, "split": split_of[index], "objects": objects,
                 "offscreen": offscreen}
        scene["questions"] = _questions(rng, scene, num_instruments)
        plans.append(scene)
    return plans


def render_avqa_video(plan: dict[str, Any], seed: int, *, image_size: int = 64, fps: int = 4,
                      sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and samples of one planned scene: frames ``uint8 (T*fps, S, S, 3)`` and audio ``float32 (T*sr,)``
    (``T`` = 10 one-second segments)."""
    rng = np.random.default_rng([seed, plan["index"]])
    num_segments = 10
    size = image_size
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    shade = (np.cos(angle) * grid_x + np.sin(angle) * grid_y)[..., None] / size
    backdrop = rng.uniform(25, 105, size=3) + rng.uniform(-35, 35, size=3) * shade
    noise_sd = rng.uniform(3.0, 8.0)
    placed = []
    for obj in plan["objects"]:
        spec = CLASS_SPECS[obj["instrument"]]
        centre_x = size * ((0.25 if obj["side"] == "left" else 0.75) + rng.uniform(-0.04, 0.04))
        centre_y = size * (0.5 + rng.uniform(-0.12, 0.12))
        radius = size * rng.uniform(0.15, 0.19)
        tint = np.clip(np.array(spec.colour, dtype=np.float64) + rng.uniform(-15, 15, size=3), 0, 255)
        placed.append((spec.shape, centre_x, centre_y, radius, tint))
    sources = [*plan["objects"], *([plan["offscreen"]] if plan["offscreen"] else [])]

    frames = np.empty((num_segments * fps, size, size, 3), dtype=np.uint8)
    samples = np.empty(num_segments * sample_rate, dtype=np.float32)
    t = np.arange(sample_rate) / sample_rate
    ramp = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)
    hiss = rng.uniform(0.004, 0.02)
    for segment in range(num_segments):
        for k in range(fps):
            image = backdrop + rng.normal(0.0, noise_sd, size=(size, size, 3))
            for shape, centre_x, centre_y, radius, tint in placed:
                jitter_x, jitter_y = rng.normal(0.0, 0.5, size=2)
                mask = shape_mask(shape, grid_x - centre_x - jitter_x, grid_y - centre_y - jitter_y, radius)
                image[mask] = tint
            frames[segment * fps + k] = np.clip(image, 0, 255).astype(np.uint8)
        wave = rng.normal(0.0, hiss, size=sample_rate)
        for source in sources:
            window = source["window"]
            if window is not None and window[0] <= segment < window[1]:
                wave += source["amplitude"] * ramp * class_sound(CLASS_SPECS[source["instrument"]], rng, t)
        samples[segment * sample_rate:(segment + 1) * sample_rate] = wave
    return frames, np.clip(samples, -1.0, 1.0)


def _encode_one(job: tuple[dict[str, Any], int, dict[str, Any], str]) -> str:
    plan, seed, options, folder = job
    frames, audio = render_avqa_video(plan, seed, **options)
    write_clip(Path(folder) / f"{plan['video_id']}.mp4", frames, audio, fps=options["fps"],
               sample_rate=options["sample_rate"])
    return plan["video_id"]


def _records(plans: Sequence[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``(split, record)`` of every question, numbered 1, 2, ... in plan order, in the MUSIC-AVQA layout."""
    out = []
    for plan in plans:
        for question in plan["questions"]:
            kind = (question["family"], question["subtype"])
            out.append((plan["split"], {
                "video_id": plan["video_id"], "question_id": len(out) + 1, "type": json.dumps(list(kind)),
                "question_content": TEMPLATES[kind], "templ_values": json.dumps(question["templ_values"]),
                "question_deleted": 0, "anser": question["answer"]}))
    return out


def _write_json(path: Path, payload: Any, *, indent: int | None = 1, final_newline: bool = True) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=indent, ensure_ascii=False) + ("\n" if final_newline else ""),
                         encoding="utf-8")
    os.replace(temporary, path)


def generate_avqa(out_dir: str | os.PathLike, num_videos: int = 200, seed: int = 0, *, image_size: int = 64,
                  workers: int = 2, setting: str | None = None, fps: int = 4, sample_rate: int = 16000,
                  num_instruments: int = 5, sound_probability: float = 0.65, offscreen_probability: float = 0.4,
                  split_fractions: Sequence[float] = (0.8, 0.1, 0.1), show_progress: bool = True,
                  overwrite: bool = False) -> dict[str, Any]:
    """Write a synthetic MUSIC-AVQA-format data set (mp4 files + question files) into ``out_dir``.

    Args:
        out_dir: output directory (created). ``avqa-train.json`` is written last.
        num_videos: number of 10-s clips (about 8 questions each).
        seed: seed of everything; the same seed gives the same files and decoded content.
        image_size: frame width and height in pixels (even).
        workers: encoder processes (``<= 1``: in this process).
        setting: MUSIC-AVQA has no settings; must be ``None``.
        fps: video frame rate.
        sample_rate: audio sample rate of the files (readers resample).
        num_instruments: instrument kinds used (3 to ``len(CLASS_SPECS)``).
        sound_probability: chance that an instrument on stage plays.
        offscreen_probability: chance of an off-screen instrument.
        split_fractions: train / val / test fractions of the videos (questions follow their video).
        show_progress: show a tqdm progress bar.
        overwrite: write into ``out_dir`` even when it holds a data set not written by this generator with
            these options (see :func:`molt.data.synthetic.claim_output`; the same run again needs no flag).

    Returns:
        a summary dict: output directory, videos and questions per split, questions and answer counts per type, and
        the wall time.
    """
    check_generator_options(image_size=image_size, sample_rate=sample_rate, fps=fps, dataset_name="MUSIC-AVQA",
                            setting=setting)
    started = time.time()
    out = Path(out_dir)
    claim_output(out, {"generator": "molt.tasks.avqa.synthetic.generate_avqa", "seed": seed,
                       "num_videos": num_videos,
                       "options": {"image_size": image_size, "fps": fps, "sample_rate": sample_rate,
                                   "num_instruments": num_instruments, "sound_probability": sound_probability,
                                   "offscreen_probability": offscreen_probability,
                                   "split_fractions": split_fractions}},
                 overwrite=overwrite, prepared=[out / "prepared"])
    folder = output_folder(out, VIDEO_SUBDIR)
    (out / SPLIT_FILES["train"]).unlink(missing_ok=True)      # written last: its presence marks a complete set
    plans = plan_avqa_videos(num_videos, seed, num_instruments=num_instruments, sound_probability=sound_probability,
                             offscreen_probability=offscreen_probability, split_fractions=split_fractions)
    options = {"image_size": image_size, "fps": fps, "sample_rate": sample_rate}
    jobs = [(plan, seed, options, str(folder)) for plan in plans]


    with progress_bar(total=len(jobs), desc="synth avqa", unit="clip", show=show_progress) as progress:
        for _ in parallel_map(_encode_one, jobs, workers):
            progress.update()

    records = _records(plans)
    by_split = {split: [record for s, record in records if s == split] for split in SPLIT_FILES}
    ground_truth = {
        "format_version": FORMAT_VERSION, "generator": "molt.tasks.avqa.synthetic.generate_avqa", "seed": seed,
        "num_videos": num_videos, "options": options, "instruments": list(INSTRUMENTS[:num_instruments]),
        "sound_probability": sound_probability, "offscreen_probability": offscreen_probability,
        "videos": [{k: plan[k] for k in ("video_id", "split", "objects", "offscreen", "questions")}
                   for plan in plans],
    }
    _write_json(out / GROUND_TRUTH_FILE, ground_truth)
    for split in ("val", "test", "train"):
        _write_json(out / SPLIT_FILES[split], by_split[split], indent=2, final_newline=False)
    answers: dict[str, dict[str, int]] = {}
    for _, record in records:
        counts = answers.setdefault("/".join(json.loads(record["type"])), {})
        counts[record["anser"]] = counts.get(record["anser"], 0) + 1
    summary = {
        "out_dir": str(out), "videos": {s: sum(p["split"] == s for p in plans) for s in SPLIT_FILES},
        "questions": {s: len(rows) for s, rows in by_split.items()},
        "per_type": {name: sum(counts.values()) for name, counts in answers.items()}, "answers_per_type": answers,
        "seconds": round(time.time() - started, 2),
    }
    _logger.info("wrote %d synthetic MUSIC-AVQA clips (%d questions) to %s in %.1f s", num_videos, len(records), out,
                 summary["seconds"])
    return summary
