"""Decode an LLP-layout data set once into memory-mappable arrays, and a torch ``Dataset`` over them (task avvp).

Part of molt-av (Apache-2.0), an implementation of "Mixture of Layer-Wise Tokens for Efficient Audio-Visual
Learning" (MoLT).

Input layout (``root``): the LLP csv files (see :mod:`molt.tasks.avvp.reader`) and one mp4 file per clip, looked up as
``{YouTube id}.mp4`` (then ``{filename}.mp4``) in ``root/LLP_dataset/video/`` (where the authors' download
script puts them), ``root/video/`` and ``root/``.

Prepared format (``out_dir``, format version 1), decoded like AVE (:mod:`molt.data.media`: one frame per 1-s
segment, nearest the segment's centre; mono audio resampled to ``sample_rate`` and placed on the video's
timeline by its stream's start time; ``T = 10`` segments)::

    frames.npy         uint8 (V, T, S, S, 3)   RGB frame per segment, S = image_size
    audio.npy          int16 (V, T, R)         mono PCM, R = sample_rate samples per segment (value / 32768)
    labels.npy         uint8 (N, C)            weak (video-level) multi-hot labels of each annotation row
    audio_labels.npy   uint8 (N, T, C)         segment-level audio events (zero where label_valid is false)
    visual_labels.npy  uint8 (N, T, C)         segment-level visual events (zero where label_valid is false)
    index.json         metadata: format, format_version, categories, num_segments, image_size, sample_rate,
                       videos (filename of each media row, null when skipped), rows (one per stored annotation
                       line: filename, video_id, split, media_index, label_valid, line)
    skipped.tsv        filename, reason, detail, path of every clip that could not be used
    prepare.json       the source it was prepared from (format, source_root, setting)

``label_valid`` is true for val/test rows when the eval files exist (train rows never have segment labels). Media
rows are per distinct filename (train, then val, then test order); crash safety as in
:mod:`molt.data.prepared` (``index.json`` removed first, arrays renamed from ``*.partial``, ``index.json`` last).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...data.media import decode_pcm16
from ...data.prepared import (INDEX_FILE, PreparedArray, PreparedClips, PrepareReport, PrepareRun, generated_image_size,
                              media_arrays, read_index, read_prepared_index, reusable_prepared)
from .reader import SPLIT_FILES, VIDEO_SUBDIR, LLPAnnotations, LLPRecord

__all__ = ["FORMAT", "FORMAT_VERSION", "find_llp_video", "prepare_llp", "ensure_prepared", "PreparedLLP"]

FORMAT = "molt-prepared-llp"
FORMAT_VERSION = 1
_MEDIA = ("frames.npy", "audio.npy")
_LABELS = ("labels.npy", "audio_labels.npy", "visual_labels.npy")
_DEFAULT_IMAGE_SIZE = 192


def find_llp_video(root: str | os.PathLike, record: LLPRecord) -> Path | None:
    """The mp4 file of ``record`` under ``root`` (see the module docstring for the places tried), or ``None``."""
    root = Path(root)
    for folder in (root / VIDEO_SUBDIR, root / "video", root):
        for stem in (record.video_id, record.filename):
            candidate = folder / f"{stem}.mp4"
            if candidate.is_file():
                return candidate
    return None


def prepare_llp(root: str | os.PathLike, out_dir: str | os.PathLike, *, image_size: int = _DEFAULT_IMAGE_SIZE,
                workers: int = 2, limit: int | None = None, sample_rate: int = 32000,
                show_progress: bool = True, overwrite: bool = False) -> PrepareReport:
    """Decode every clip of the LLP layout at ``root`` into the prepared format in ``out_dir``.

    Args:
        root: LLP root (csv files and mp4 files, see the module docstring).
        out_dir: output directory (created; a previous prepared set of ``root`` there is replaced).
        image_size: frame size ``S``.
        workers: decoding processes (``<= 1``: in this process).
        limit: only the first ``limit`` distinct clips (train, then val, then test order).
        sample_rate: audio rate (32 kHz for HTS-AT).
        show_progress: tqdm progress bar.
        overwrite: prepare into ``out_dir`` even when it holds something else than a prepared set of ``root``
            (see :class:`~molt.data.prepared.PrepareRun`).

    Returns:
        a :class:`~molt.data.prepared.PrepareReport` (its ``stored`` and ``skipped`` name filenames).
    """
    root = Path(root)
    annotations = LLPAnnotations.from_dir(root)
    segments = annotations.num_segments
    records = [record for split in SPLIT_FILES if split in annotations.splits for record in annotations.records(split)]
    names = list(dict.fromkeys(record.filename for record in records))
    if limit is not None:
        if limit < 1:
            raise ValueError(f"expected limit >= 1 or None, got {limit}")
        names = names[:limit]
    first_record = {}
    for record in records:
        first_record.setdefault(record.filename, record)
    run = PrepareRun(out_dir, source_root=root, format=FORMAT, command=f"molt prepare avvp --data {root}",
                     overwrite=overwrite)
    options = {"num_segments": segments, "image_size": image_size, "sample_rate": sample_rate}
    paths = {name: find_llp_video(root, first_record[name]) for name in names}
    # media rows for the clips found only: a partial download (YouTube clips go missing) stays small on disk
    found = [name for name in names if paths[name] is not None]
    jobs = [(position, name, str(paths[name]), options) for position, name in enumerate(found)]
    for name in (name for name in names if paths[name] is None):
        run.skip_missing(name, f"no {first_record[name].video_id}.mp4 under {root}")
    stored_at = run.decode(decode_pcm16, jobs, media_arrays(len(found), segments, image_size, sample_rate),
                           workers=workers, show_progress=show_progress, desc="prepare avvp")

    kept = [record for record in records if record.filename in stored_at]
    classes = annotations.num_classes
    weak = run.open(PreparedArray("labels.npy", "uint8", (len(kept), classes), "(N, C) weak multi-hot"))
    audio_labels, visual_labels = (run.open(PreparedArray(f"{modality}_labels.npy", "uint8",
                                                          (len(kept), segments, classes), "(N, T, C)"))
                                   for modality in ("audio", "visual"))
    rows = []
    for i, record in enumerate(kept):
        weak[i] = annotations.weak_labels(record)
        audio_labels[i], visual_labels[i] = annotations.segment_labels(record)
        rows.append({"filename": record.filename, "video_id": record.video_id, "split": record.split,
                     "media_index": stored_at[record.filename],
                     "label_valid": annotations.has_segment_labels(record), "line": record.line})
    run.report.rows = {split: sum(row["split"] == split for row in rows) for split in annotations.splits}
    index = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "source_root": str(root.resolve()),
        "categories": annotations.categories, "num_classes": classes, "num_segments": segments,
        "segment_seconds": 1.0, "image_size": image_size, "sample_rate": sample_rate,
        "has_segment_labels": annotations.has_eval, "arrays": run.array_entries(),
        "videos": run.videos(found), "rows": rows, "splits": run.report.rows,
        "skipped": len(run.report.skipped), "silent": run.report.silent,
    }
    return run.commit(index, order=names, paths=paths, name_column="filename")


def _read_index(path: Path) -> dict[str, Any]:
    return read_prepared_index(path, expected_format=FORMAT, version=FORMAT_VERSION, dataset_name="LLP",
                               prepare_command="molt prepare avvp")


def _own_index(path: Path) -> dict[str, Any] | None:
    """``index.json`` at ``path`` if it is an LLP one (of any version), else ``None`` (prepared again)."""
    meta = read_index(path, "molt prepare avvp")
    return meta if meta.get("format") == FORMAT else None


def ensure_prepared(data: str | os.PathLike, *, setting: str | None = None, image_size: int | None = None,
                        workers: int = 2, show_progress: bool = True,
                        out_dir: str | os.PathLike | None = None, limit: int | None = None,
                        force: bool = False, overwrite: bool = False) -> Path:
    """Return a prepared directory for ``data``, preparing it on first use.

    ``data`` is a prepared directory (holds ``index.json``) or an LLP root (holds a split csv file), whose prepared
    copy lives in ``data/prepared``. ``image_size=None`` keeps an existing prepared copy whatever its size; for a
    new one it is the synthetic generator's frame size (``synthetic_ground_truth.json``) or 192. LLP has no
    settings: ``setting`` must be ``None``.

    ``out_dir`` puts a new prepared copy elsewhere; ``force=True`` (or a ``limit``: only the first ``limit``
    videos, for a quick look) prepares it again even when one exists (what ``molt prepare`` does);
    ``overwrite`` lets it replace what another source left in ``out_dir``.
    """
    if setting is not None:
        raise ValueError(f"LLP (task avvp) has no settings, got setting={setting!r}")
    data = Path(data)
    if (data / INDEX_FILE).is_file():
        _read_index(data / INDEX_FILE)
        return data
    if not any((data / name).is_file() for name in SPLIT_FILES.values()):
        raise FileNotFoundError(f"{data} is neither a prepared LLP directory ({INDEX_FILE}) nor an LLP root "
                                f"({', '.join(SPLIT_FILES.values())})")
    out = Path(out_dir) if out_dir is not None else data / "prepared"
    if reusable_prepared(out, image_size=image_size, force=force, limit=limit, read=_own_index):
        return out
    if image_size is None:
        image_size = generated_image_size(data) or _DEFAULT_IMAGE_SIZE
    prepare_llp(data, out, image_size=image_size, workers=workers, show_progress=show_progress, limit=limit,
                overwrite=overwrite)
    return out


class PreparedLLP(PreparedClips):
    """Clips of a prepared LLP directory, one item per annotation row of ``split``.

    Args:
        prepared_dir: prepared directory (holds ``index.json``).
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` for all rows.

    Items are dicts:

    * ``frames``: uint8 ``(T, 3, S, S)``; ``audio``: float32 ``(T, R)`` in ``[-1, 1)``, ``R = sample_rate``;
    * ``labels``: float32 ``(C,)`` weak (video-level) multi-hot labels;
    * ``audio_labels``, ``visual_labels``: float32 ``(T, C)`` segment-level events (zeros when not annotated);
    * ``label_valid``: float32 scalar, 1 when the segment labels are annotated (val/test), else 0;
    * ``video_id``: the LLP filename (``{YouTube id}_{start}_{end}``, unique per clip); ``index``: row number.
    """

    prepared_format = FORMAT
    prepared_version = FORMAT_VERSION
    dataset_name = "LLP"
    prepare_command = "molt prepare avvp"
    splits = tuple(SPLIT_FILES)

    def __init__(self, prepared_dir: str | os.PathLike, split: str | None = None) -> None:
        meta = self._load_index(prepared_dir, split)
        self.meta = meta
        self.categories: list[str] = meta["categories"]
        self.num_classes: int = meta["num_classes"]

    array_files = _MEDIA + _LABELS

    def item_without_media(self, index: int) -> dict[str, Any]:
        """Item ``index`` without ``frames`` and ``audio`` (what training from a feature cache reads)."""
        index = self.checked_index(index)
        arrays = self.arrays()
        row, label_row = self.rows[index], self.row_indices[index]

        def labels(name: str) -> torch.Tensor:
            return torch.from_numpy(arrays[name][label_row].astype(np.float32))

        return {"labels": labels("labels"), "audio_labels": labels("audio_labels"),
                "visual_labels": labels("visual_labels"),
                "label_valid": torch.tensor(float(row["label_valid"])), "video_id": row["filename"],
                "index": index}

    def targets(self) -> dict[str, torch.Tensor]:
        """Every row's targets at once: ``labels (N, C)``, ``audio_labels`` / ``visual_labels (N, T, C)`` float32
        and ``label_valid (N,)`` bool (for baselines and label statistics)."""
        arrays = self.arrays()
        result = {name: torch.from_numpy(np.asarray(arrays[name][self.row_indices], dtype=np.float32))
                  for name in ("labels", "audio_labels", "visual_labels")}
        result["label_valid"] = torch.tensor([bool(row["label_valid"]) for row in self.rows], dtype=torch.bool)
        return result

    def task_options(self) -> dict[str, Any]:
        """What the data decides for the AVVP head: ``class_names`` (their number is ``C``)."""
        return {"class_names": list(self.categories)}
