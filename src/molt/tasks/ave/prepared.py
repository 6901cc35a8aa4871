"""Decode an AVE-layout data set once into memory-mappable arrays, and a torch ``Dataset`` over them.

Part of molt-av (Apache-2.0), an implementation of "Mixture of Layer-Wise Tokens for Efficient Audio-Visual
Learning" (MoLT).

Input layout (``root``): the AVE annotation files (``Annotations.txt``, ``trainSet.txt``, ``valSet.txt``,
``testSet.txt``, optionally ``categories.txt``, see :mod:`molt.tasks.ave.reader`) and one ``{video_id}.mp4`` per
video, looked up first in ``root/AVE/`` (where the official ``AVE_Dataset.zip`` puts them) and then in ``root/``.

Prepared format (``out_dir``, format version 1)::

    frames.npy   uint8 (V, T, S, S, 3)   RGB, one frame per 1-s segment, S = image_size (see molt.data.media)
    audio.npy    int16 (V, T, R)         mono PCM at ``sample_rate``, R = sample_rate samples per segment;
                                          float value = int16 / 32768; on the video's timeline (an audio
                                          stream that starts late is preceded by silence, see molt.data.media)
    labels.npy   uint8 (N, T, C + 1)     one-hot label matrix of each annotation row (background = index C)
    index.json   metadata: format, format_version, categories, num_segments, image_size, sample_rate,
                 source_root, videos (video id of each media row V, null for a clip that was skipped) and
                 rows (one per annotation line of a split whose clip was stored: video_id, split, media_index,
                 category, start, end, line)
    skipped.tsv  video_id, reason, detail, path of every clip that could not be used
    prepare.json the source it was prepared from (format, source_root, setting): another root's or task's run
                 refuses to write into the directory (:class:`molt.data.prepared.PrepareRun`)

Media rows are per *video* (a video with several annotation lines is decoded and stored once); annotation rows
are per *line* of the split files, like the official split sizes (see :mod:`molt.tasks.ave.reader` for the quirks).
Media row ``i`` belongs to the ``i``-th distinct video id of train, val, test (in that order); the rows of skipped
clips stay zero and no annotation row points at them.

Crash safety: ``index.json`` is removed when a run starts, the arrays are written under ``*.partial`` names and
renamed when complete, and ``index.json`` is written last (atomically), so a directory without ``index.json`` is
never mistaken for a complete data set. A failed or stopped run removes its ``*.partial`` files, the next run
those of a killed one; a full disk or a read-only root is one sentence with the fix (prepare elsewhere with
``--out``), see :class:`molt.data.prepared.PrepareRun`.

:class:`PreparedAVE` reads that format with ``numpy.load(mmap_mode="r")`` (opened lazily in each DataLoader
worker) and returns uint8 frames: normalisation belongs to the backbone (``preprocess``), which knows its own
mean and std; :func:`normalize_frames` is there for other users.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...data.media import decode_pcm16
from ...data.prepared import (INDEX_FILE, PreparedArray, PreparedClips, PrepareReport, PrepareRun, generated_image_size,
                              media_arrays, reusable_prepared)
from .reader import SPLIT_FILES, AVEAnnotations

__all__ = ["prepare_ave", "PreparedAVE", "ensure_prepared", "find_video", "FORMAT", "FORMAT_VERSION"]

FORMAT = "molt-prepared-ave"
FORMAT_VERSION = 1
_ARRAYS = ("frames.npy", "audio.npy", "labels.npy")


def find_video(root: str | os.PathLike, video_id: str) -> Path | None:
    """``root/AVE/{video_id}.mp4`` or ``root/{video_id}.mp4``, whichever exists first; ``None`` if neither."""
    root = Path(root)
    for candidate in (root / "AVE" / f"{video_id}.mp4", root / f"{video_id}.mp4"):
        if candidate.exists():
            return candidate
    return None


def prepare_ave(root: str | os.PathLike, out_dir: str | os.PathLike, *, image_size: int = 192, workers: int = 2,
                limit: int | None = None, num_segments: int = 10, sample_rate: int = 32000,
                show_progress: bool = True, overwrite: bool = False) -> PrepareReport:
    """Decode every clip of the AVE layout at ``root`` into the prepared format in ``out_dir``.

    Args:
        root: AVE root (annotation files; mp4 files in ``root/AVE/`` or ``root/``).
        out_dir: output directory (created; a previous prepared set of ``root`` there is replaced).
        image_size: frame size ``S`` (bicubic resize to ``S x S``).
        workers: decoding processes (``<= 1``: decode in this process).
        limit: only the first ``limit`` distinct videos (train, then val, then test order).
        num_segments: segments per clip ``T``.
        sample_rate: audio rate (32 kHz for HTS-AT).
        show_progress: tqdm progress bar.
        overwrite: prepare into ``out_dir`` even when it holds something else than a prepared set of ``root``
            (see :class:`~molt.data.prepared.PrepareRun`).

    Returns:
        a :class:`PrepareReport`; unusable clips are listed in it and in ``out_dir/skipped.tsv``.
    """
    root = Path(root)
    annotations = AVEAnnotations.from_dir(root, num_segments=num_segments)
    splits = [split for split in SPLIT_FILES if split in annotations.splits]
    video_ids = list(dict.fromkeys(record.video_id for split in splits for record in annotations.records(split)))
    if limit is not None:
        if limit < 1:
            raise ValueError(f"expected limit >= 1 or None, got {limit}")
        video_ids = video_ids[:limit]
    run = PrepareRun(out_dir, source_root=root, format=FORMAT, command=f"molt prepare ave --data {root}",
                     overwrite=overwrite)
    options = {"num_segments": num_segments, "image_size": image_size, "sample_rate": sample_rate}
    paths = {video_id: find_video(root, video_id) for video_id in video_ids}
    jobs = []
    for position, (video_id, path) in enumerate(paths.items()):
        if path is None:
            run.skip_missing(video_id, f"no {video_id}.mp4 in {root / 'AVE'} or {root}")
        else:
            jobs.append((position, video_id, str(path), options))
    stored_at = run.decode(decode_pcm16, jobs, media_arrays(len(video_ids), num_segments, image_size, sample_rate),
                           workers=workers, show_progress=show_progress, desc="prepare ave")

    rows = []
    for split in splits:
        for record in annotations.records(split):
            if record.video_id in stored_at:
                rows.append({"video_id": record.video_id, "split": split, "media_index": stored_at[record.video_id],
                             "category": record.category, "start": record.start, "end": record.end,
                             "line": record.line})
        run.report.rows[split] = sum(row["split"] == split for row in rows)
    labels = run.open(PreparedArray("labels.npy", "uint8", (len(rows), num_segments, annotations.num_classes + 1),
                                    "(N, T, C + 1) one-hot"))
    for i, row in enumerate(rows):
        labels[i, row["start"]:row["end"], annotations.category_index[row["category"]]] = 1
        labels[i, labels[i, :, :annotations.num_classes].sum(axis=1) == 0, annotations.num_classes] = 1
    index = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "source_root": str(root.resolve()),
        "categories": annotations.categories, "num_classes": annotations.num_classes,
        "background_index": annotations.background_index, "num_segments": num_segments,
        "segment_seconds": 1.0, "image_size": image_size, "sample_rate": sample_rate,
        "arrays": run.array_entries(), "videos": run.videos(video_ids),
        "rows": rows, "splits": run.report.rows, "skipped": len(run.report.skipped), "silent": run.report.silent,
    }
    return run.commit(index, order=video_ids, paths=paths)


def ensure_prepared(data: str | os.PathLike, *, setting: str | None = None, image_size: int | None = None,
                    workers: int = 2, show_progress: bool = True,
                    out_dir: str | os.PathLike | None = None, limit: int | None = None,
                    force: bool = False, overwrite: bool = False) -> Path:
    """Return a prepared directory for ``data``, preparing it on first use.

    ``data`` may be a prepared directory (holds ``index.json``) or an AVE root (holds ``Annotations.txt``), whose
    prepared copy lives in ``data/prepared``. ``image_size=None`` keeps an existing prepared copy whatever its size;
    for a new one it is the synthetic generator's frame size (``synthetic_ground_truth.json``) or 192.
    AVE has no settings: ``setting`` must be ``None`` (the argument exists for the task registry's contract).

    ``out_dir`` puts a new prepared copy elsewhere; ``force=True`` (or a ``limit``: only the first ``limit``
    videos, for a quick look) prepares it again even when one exists (what ``molt prepare`` does);
    ``overwrite`` lets it replace what another source left in ``out_dir``.
    """
    if setting is not None:
        raise ValueError(f"AVE has no settings, got setting={setting!r}")
    data = Path(data)
    if (data / INDEX_FILE).is_file():
        return data
    if not (data / "Annotations.txt").is_file():
        raise FileNotFoundError(f"{data} is neither a prepared AVE directory ({INDEX_FILE}) nor an AVE root "
                                f"(Annotations.txt)")
    out = Path(out_dir) if out_dir is not None else data / "prepared"
    if reusable_prepared(out, image_size=image_size, force=force, limit=limit):
        return out
    if image_size is None:
        image_size = generated_image_size(data) or 192
    prepare_ave(data, out, image_size=image_size, workers=workers, show_progress=show_progress, limit=limit,
                overwrite=overwrite)
    return out


class PreparedAVE(PreparedClips):
    """Clips of a prepared AVE directory (see the module docstring), one item per annotation row.

    Args:
        root: prepared directory (holds ``index.json``).
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` for all rows.

    Items are dicts:

    * ``frames``: uint8 ``(T, 3, S, S)`` (not normalised);
    * ``audio``: float32 ``(T, R)`` in ``[-1, 1)``, ``R = sample_rate`` samples per 1-s segment;
    * ``labels``: float32 ``(T, C + 1)`` one-hot (this annotation line; background at index ``C``);
    * ``valid_labels``: float32 ``(T, C + 1)`` multi-hot union of every line of the same video in the same split
      (differs from ``labels`` only for the videos annotated with several overlapping events);
    * ``video_id``: str; ``index``: the row number within this split.
    """

    prepared_format = FORMAT
    prepared_version = FORMAT_VERSION
    dataset_name = "AVE"
    prepare_command = "molt prepare ave"
    splits = tuple(SPLIT_FILES)

    def __init__(self, root: str | os.PathLike, split: str | None = None) -> None:
        meta = self._load_index(root, split)
        self.meta = meta
        self.categories: list[str] = meta["categories"]
        self.num_classes: int = meta["num_classes"]
        groups: dict[tuple[str, str], list[int]] = {}
        for i, row in enumerate(meta["rows"]):
            groups.setdefault((row["split"], row["video_id"]), []).append(i)
        self._siblings = [groups[(row["split"], row["video_id"])] for row in self.rows]

    array_files = _ARRAYS

    def item_without_media(self, index: int) -> dict[str, Any]:
        """Item ``index`` without ``frames`` and ``audio`` (targets and ids only): what training from a feature
        cache reads, without touching the decoded media."""
        index = index % len(self)
        labels = self.arrays()["labels"]
        row = self.rows[index]
        row_labels = torch.from_numpy(labels[self.row_indices[index]].astype(np.float32))
        valid = np.max(labels[self._siblings[index]], axis=0).astype(np.float32)
        return {"labels": row_labels, "valid_labels": torch.from_numpy(valid), "video_id": row["video_id"],
                "index": index}

    def segment_labels(self) -> torch.Tensor:
        """Class index of every segment of every row, ``(N, T)`` int64 (background = ``num_classes``)."""
        labels = self.arrays()["labels"]
        if not self.row_indices:
            return torch.zeros(0, self.num_segments, dtype=torch.long)
        return torch.from_numpy(np.asarray(labels[self.row_indices]).argmax(-1).astype(np.int64))

    def task_options(self) -> dict[str, Any]:
        """What the data decides for the AVE head: ``num_classes`` (events, background excluded), ``class_names``."""
        return {"num_classes": self.num_classes, "class_names": list(self.categories)}
