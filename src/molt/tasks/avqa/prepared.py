"""Decode a MUSIC-AVQA-layout data set once into memory-mappable arrays, and a torch ``Dataset`` of its questions.

Part of molt-av (Apache-2.0), an implementation of "Mixture of Layer-Wise Tokens for Efficient Audio-Visual
Learning" (MoLT).

Input layout (``root``): ``avqa-{train,val,test}.json`` (see :mod:`molt.tasks.avqa.reader`; also found in
``root/json_update`` etc.) and one ``{video_id}.mp4`` per video in ``root/MUSIC-AVQA-videos-Real``,
``root/MUCIS-AVQA-videos-Synthetic`` (sic) or the other folders of :data:`molt.tasks.avqa.reader.VIDEO_DIRS`.

Segments. Each video is decoded **once** (however many questions it has) into ``T = 10`` one-second segments
(one frame, resized bicubic to ``S x S``, and one second of mono audio at 32 kHz each) spread evenly over the
whole clip: for a clip of ``n`` whole seconds, segment ``i`` is second ``floor(i * (n - 1) / (T - 1))``. Real
MUSIC-AVQA clips last about a minute, and the peers likewise take 10 frames with ``linspace`` over the 1-fps
frames of the whole clip (and 10 one-second audio windows); a 10-s clip gives seconds 0..9. The frame of a second
is the decoded frame nearest its centre and its audio is that second's samples (:func:`molt.data.media.read_clip`).
Shorter clips of the release are spread over the seconds they have, never padded: a 45-s clip gives seconds 0, 4,
9, ..., 44. A clip shorter than ``T`` seconds by more than the decoder's 0.5-s tolerance (a 9.6-s clip is kept) is
skipped with the reason ``too short`` and its length in ``skipped.tsv`` (tests/unit/data/test_clip_lengths.py).

Prepared format (``out_dir``, format version 1)::

    frames.npy   uint8 (V, T, S, S, 3)   RGB, one frame per segment
    audio.npy    int16 (V, T, R)         mono PCM at ``sample_rate`` (R samples per segment); float = int16 / 32768;
                                          on the video's timeline (a late audio stream is preceded by silence)
    index.json   metadata: format, format_version, num_segments, image_size, sample_rate, question_vocab (from the
                 training questions only), answers, question_types, max_question_length, videos (the id of each
                 media row, null for a clip that was skipped), rows (one per question whose clip was stored:
                 split, video_id, question_id, media_index, family, subtype, question, words, answer), dropped
                 duplicate question ids per split
    skipped.tsv  video_id, reason, detail, path of every clip that could not be used
    prepare.json the source it was prepared from (format, source_root, setting)

Crash safety as in :mod:`molt.data.prepared`: ``index.json`` is removed first, arrays are written as ``*.partial``
and renamed when complete, and ``index.json`` is written last (atomically).

:class:`PreparedAVQA` serves one item per question (frames and audio of its clip are shared through the memory
map) with the question as padded token ids of the training vocabulary.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import av
import numpy as np
import torch

from ...data.media import decode_pcm16
from ...data.prepared import (INDEX_FILE, PreparedClips, PrepareReport, PrepareRun, generated_image_size, media_arrays,
                              read_index, reusable_prepared)
from .reader import (FAMILIES, ORIGINAL_TEST_SPLIT, SPLIT_FILES, SUBTYPES, VIDEO_DIRS, MusicAVQA, encode_question,
                     find_annotation_dir, find_video, question_type_name)

__all__ = ["PreparedAVQA", "prepare_avqa", "ensure_prepared", "segment_seconds", "decode_spread", "FORMAT",
           "FORMAT_VERSION"]

FORMAT = "molt-prepared-avqa"
FORMAT_VERSION = 1
_ARRAYS = ("frames.npy", "audio.npy")


def segment_seconds(clip_seconds: int, num_segments: int = 10) -> list[int]:
    """Which whole seconds of a clip of ``clip_seconds`` seconds become the ``num_segments`` segments (evenly
    spread, first and last second included; a clip shorter than ``num_segments`` seconds repeats seconds)."""
    if clip_seconds < 1 or num_segments < 1:
        raise ValueError(f"expected clip_seconds >= 1 and num_segments >= 1, got {clip_seconds}, {num_segments}")
    return np.linspace(0, clip_seconds - 1, num_segments).astype(np.int64).tolist()


def _probe_seconds(path: str) -> float | None:
    """Container duration of a media file in seconds, ``None`` when it cannot be read (the decoder then reports
    why)."""
    try:
        with av.open(path) as container:
            if container.duration:
                return container.duration / av.time_base
            durations = [float(s.duration * s.time_base) for s in container.streams if s.duration and s.time_base]
            return max(durations) if durations else None
    except (av.FFmpegError, OSError, ValueError):  # the decoder diagnoses the file itself
        return None


def decode_spread(job: tuple[int, str, str, dict[str, Any]]) -> tuple[int, str, Any, Any, str, str]:
    """Worker: decode every whole second of a clip (:func:`molt.data.media.decode_pcm16`) and keep the
    ``num_segments`` seconds of :func:`segment_seconds`."""
    return decode_spread_seconds(job)[0]


def decode_spread_seconds(job: tuple[int, str, str, dict[str, Any]]
                          ) -> tuple[tuple[int, str, Any, Any, str, str], list[int] | None]:
    """:func:`decode_spread`'s result and the seconds of the clip it kept (``None`` when the clip is unusable)."""
    position, video_id, path, options = job
    wanted = options["num_segments"]
    seconds = _probe_seconds(path)
    length = max(wanted, math.floor(seconds + 1e-6)) if seconds else wanted
    result = decode_pcm16((position, video_id, path, {**options, "num_segments": length}))
    if result[2] is None and result[4] == "too short" and length > wanted:  # tracks a little shorter than the file
        length -= 1
        result = decode_pcm16((position, video_id, path, {**options, "num_segments": length}))
    if result[2] is None:
        return result, None
    keep = segment_seconds(length, wanted)
    return (position, video_id, result[2][keep], result[3][keep], result[4], result[5]), keep


def prepare_avqa(root: str | os.PathLike, out_dir: str | os.PathLike, *, image_size: int = 192, workers: int = 2,
                 limit: int | None = None, num_segments: int = 10, sample_rate: int = 32000,
                 duplicates: str = "first", show_progress: bool = True, overwrite: bool = False) -> PrepareReport:
    """Decode every clip of the MUSIC-AVQA layout at ``root`` into the prepared format in ``out_dir``.

    Args:
        root: data set root (question files and video folders, see the module docstring).
        out_dir: output directory (created; a previous prepared set of ``root`` there is replaced).
        image_size: frame size ``S``.
        workers: decoding processes (``<= 1``: decode in this process).
        limit: only the first ``limit`` distinct videos (train, then val, then test order).
        num_segments: segments per clip ``T``.
        sample_rate: audio rate (32 kHz for HTS-AT).
        duplicates: what to do with repeated question ids (see :meth:`molt.tasks.avqa.reader.MusicAVQA.from_dir`).
        show_progress: tqdm progress bar.
        overwrite: prepare into ``out_dir`` even when it holds something else than a prepared set of ``root``
            (see :class:`~molt.data.prepared.PrepareRun`).

    Returns:
        a :class:`molt.data.prepared.PrepareReport` (``rows``: questions stored per split); unusable clips are
        listed in it and in ``out_dir/skipped.tsv``.
    """
    root = Path(root)
    data = MusicAVQA.from_dir(root, duplicates=duplicates)
    video_ids = data.video_ids()
    if limit is not None and limit < 1:
        raise ValueError(f"expected limit >= 1 or None, got {limit}")
    video_ids = video_ids[:limit]
    run = PrepareRun(out_dir, source_root=root, format=FORMAT, command=f"molt prepare avqa --data {root}",
                     overwrite=overwrite)
    paths = {video_id: find_video(root, video_id) for video_id in video_ids}
    options = {"image_size": image_size, "sample_rate": sample_rate, "num_segments": num_segments}
    jobs = [(row, clip, str(path), options) for row, (clip, path) in enumerate(paths.items()) if path is not None]
    for clip in (clip for clip, path in paths.items() if path is None):
        run.skip_missing(clip, f"no {clip}.mp4 in neither {root} nor its {', '.join(VIDEO_DIRS)} folders")
    stored_at = run.decode(decode_spread, jobs, media_arrays(len(paths), num_segments, image_size, sample_rate),
                           workers=workers, show_progress=show_progress, desc=f"decode {run.out.name}")

    rows = []
    for split in data.splits:
        kept = [record for record in data.records(split) if record.video_id in stored_at]
        rows += [{"split": split, "video_id": record.video_id, "question_id": record.question_id,
                  "media_index": stored_at[record.video_id], "family": record.family, "subtype": record.subtype,
                  "question": record.question, "words": list(record.words), "answer": record.answer}
                 for record in kept]
        run.report.rows[split] = len(kept)
    index = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "source_root": str(root.resolve()),
        "num_segments": num_segments, "segment_seconds": 1.0, "segment_selection": "evenly spread over the clip",
        "image_size": image_size, "sample_rate": sample_rate, "question_vocab": data.question_vocab,
        "answers": data.answers, "question_types": data.question_types,
        "max_question_length": max((len(row["words"]) for row in rows), default=1),
        "arrays": run.array_entries(), "videos": run.videos(video_ids),
        "rows": rows, "splits": run.report.rows, "skipped": len(run.report.skipped), "silent": run.report.silent,
        "dropped_duplicates": {split: [r.question_id for r in records] for split, records in data.dropped.items()},
        "split_files": {split: str(path) for split, path in data.files.items()},
    }
    return run.commit(index, order=video_ids, paths=paths)


def _index_format(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def _own_index(path: Path) -> dict[str, Any]:
    """``index.json`` at ``path``; a ``ValueError`` when it is another task's."""
    existing = read_index(path, "molt prepare avqa")
    if existing.get("format") != FORMAT:
        raise ValueError(f"{path.parent} holds a prepared {existing.get('format')!r} set; move it away or pass "
                         f"another MUSIC-AVQA root")
    return existing


def ensure_prepared(data: str | os.PathLike, *, setting: str | None = None, image_size: int | None = None,
                         workers: int = 2, show_progress: bool = True,
                         out_dir: str | os.PathLike | None = None, limit: int | None = None,
                         force: bool = False, overwrite: bool = False, duplicates: str = "first") -> Path:
    """Return a prepared directory for ``data``, preparing it on first use.

    ``data`` may be a prepared MUSIC-AVQA directory (its ``index.json`` has format ``molt-prepared-avqa``) or a
    data set root (question files, see :func:`molt.tasks.avqa.reader.find_annotation_dir`), whose prepared copy lives
    in ``data/prepared``. ``image_size=None`` keeps an existing prepared copy whatever its size; for a new one it is
    the synthetic generator's frame size (``synthetic_ground_truth.json``) or 192. MUSIC-AVQA has no settings:
    ``setting`` must be ``None``.

    ``out_dir`` puts a new prepared copy elsewhere; ``force=True`` (or a ``limit``: only the first ``limit``
    videos, for a quick look) prepares it again even when one exists (what ``molt prepare`` does);
    ``overwrite`` lets it replace what another source left in ``out_dir``. ``duplicates``
    is the policy for repeated question ids (``molt prepare avqa --duplicates``, see
    :meth:`molt.tasks.avqa.reader.MusicAVQA.from_dir`); it applies when the set is prepared.
    """
    if setting is not None:
        raise ValueError(f"MUSIC-AVQA has no settings, got setting={setting!r}")
    data = Path(data)
    if (data / INDEX_FILE).is_file():
        found = _index_format(data / INDEX_FILE)
        if found != FORMAT:
            raise ValueError(f"{data / INDEX_FILE} is a prepared {found!r} set, not MUSIC-AVQA ({FORMAT!r}); pass a "
                             f"MUSIC-AVQA root or prepared directory")
        return data
    if find_annotation_dir(data) is None:
        raise FileNotFoundError(f"{data} is neither a prepared MUSIC-AVQA directory ({INDEX_FILE}) nor a MUSIC-AVQA "
                                f"root (avqa-train.json, avqa-val.json, avqa-test.json)")
    out = Path(out_dir) if out_dir is not None else data / "prepared"
    if reusable_prepared(out, image_size=image_size, force=force, limit=limit, read=_own_index):
        return out
    prepare_avqa(data, out, image_size=image_size or generated_image_size(data) or 192, workers=workers,
                 show_progress=show_progress, limit=limit, duplicates=duplicates, overwrite=overwrite)
    return out


class PreparedAVQA(PreparedClips):
    """Questions of a prepared MUSIC-AVQA directory (see the module docstring), one item per question.

    Args:
        root: prepared directory (holds ``index.json``).
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` for all questions.
        question_vocab: encode questions with this vocabulary instead of the prepared one (e.g. a checkpoint's
            ``task_options``); must start with ``<pad>``, ``<unk>``.
        answers: answer vocabulary to use instead of the prepared one; an answer outside it gets index ``-1``.

    Items are dicts:

    * ``frames``: uint8 ``(T, 3, S, S)``; ``audio``: float32 ``(T, R)`` in ``[-1, 1)``, ``R = sample_rate``;
    * ``question``: int64 ``(L,)`` token ids padded with ``<pad>`` (0), ``L`` = the longest question of the
      prepared set; ``question_length``: int64, the number of words (at least 1, at most ``L``);
    * ``answer``: int64 index into :attr:`answers`;
    * ``family``: int64 index into :data:`molt.tasks.avqa.reader.FAMILIES` (Audio, Visual, Audio-Visual);
      ``subtype``: int64 index into :data:`molt.tasks.avqa.reader.SUBTYPES`; ``question_type``: int64 index into
      :attr:`question_types`;
    * ``video_id``: str; ``question_id``: int64; ``index``: the row number within this split.
    """

    prepared_format = FORMAT
    prepared_version = FORMAT_VERSION
    dataset_name = "MUSIC-AVQA"
    prepare_command = "molt prepare avqa"
    splits = (*SPLIT_FILES, ORIGINAL_TEST_SPLIT)

    def __init__(self, root: str | os.PathLike, split: str | None = None, *,
                 question_vocab: Sequence[str] | None = None, answers: Sequence[str] | None = None) -> None:
        meta = self._load_index(root, split)
        self.meta = {key: value for key, value in meta.items() if key != "rows"}
        self.max_question_length: int = meta["max_question_length"]
        self.question_vocab: list[str] = list(question_vocab if question_vocab is not None else meta["question_vocab"])
        self.answers: list[str] = list(answers if answers is not None else meta["answers"])
        self.question_types: list[str] = list(meta["question_types"])
        self._word_index = {word: i for i, word in enumerate(self.question_vocab)}
        encode_question(["probe"], self._word_index, 1)   # checks <pad> / <unk>
        self._answer_index = {answer: i for i, answer in enumerate(self.answers)}
        self._type_index = {name: i for i, name in enumerate(self.question_types)}

    array_files = _ARRAYS

    def targets(self, row: dict[str, Any]) -> dict[str, int]:
        """``answer``, ``family``, ``subtype`` and ``question_type`` indices of an index row."""
        name = question_type_name(row["family"], row["subtype"])
        return {"answer": self._answer_index.get(row["answer"], -1), "family": FAMILIES.index(row["family"]),
                "subtype": SUBTYPES.index(row["subtype"]), "question_type": self._type_index.get(name, -1)}

    def item_without_media(self, index: int) -> dict[str, Any]:
        """Item ``index`` without ``frames`` and ``audio`` (what training from a feature cache reads)."""
        index = self.checked_index(index)
        row = self.rows[index]
        length = min(len(row["words"]), self.max_question_length)
        item = {
            "question": torch.tensor(encode_question(row["words"], self._word_index, self.max_question_length),
                                     dtype=torch.int64),
            "question_length": torch.tensor(length, dtype=torch.int64),
            "video_id": row["video_id"], "question_id": torch.tensor(row["question_id"], dtype=torch.int64),
            "index": index,
        }
        item.update({key: torch.tensor(value, dtype=torch.int64) for key, value in self.targets(row).items()})
        return item

    def labels(self) -> dict[str, torch.Tensor]:
        """``answer``, ``family``, ``subtype`` and ``question_type`` of every question of the split, ``(N,)`` int64
        each (without touching the media arrays; e.g. for the majority baseline)."""
        keys = ("answer", "family", "subtype", "question_type")
        values = [self.targets(row) for row in self.rows]
        return {key: torch.tensor([v[key] for v in values], dtype=torch.int64) for key in keys}

    def task_options(self) -> dict[str, Any]:
        """What the data decides for the AVQA head: ``question_vocab`` (training questions only), ``answers`` and
        ``question_types`` (``"Family/Sub-type"`` names)."""
        return {"question_vocab": list(self.question_vocab), "answers": list(self.answers),
                "question_types": list(self.question_types)}
