"""Decode an AVSBench setting (S4 or MS3) once into memory-mappable arrays, and a torch ``Dataset`` over them.

Part of molt-av (Apache-2.0), an implementation of "Mixture of Layer-Wise Tokens for Efficient Audio-Visual
Learning" (MoLT). Input: any layout :class:`molt.tasks.avs.reader.AVSBenchLayout` finds (AVSBench-object v1 or
AVSBench-semantic, real or written by :func:`molt.tasks.avs.synthetic.generate_avs`).

Prepared format (``out_dir``, format version 1), one media row per clip::

    frames.npy   uint8 (V, 5, S, S, 3)   RGB frames resized (bicubic) to S = image_size
    audio.npy    int16 (V, 5, R)         mono PCM at sample_rate (32 kHz, as for AVE), R = sample_rate per 1-s
                                          segment; float = int16 / 32768
    masks.npy    uint8 (V, 5, M, M)      binary ground truth (nearest resize to M = mask_size; zero where a frame
                                          is not annotated)
    index.json   format, format_version, setting, layout (kind, meta file), image_size, mask_size, sample_rate,
                 num_segments, videos (name of each media row, null for a skipped clip) and rows (one per stored
                 clip: video_id, split, media_index, category, objects, annotated = 0/1 per frame)
    skipped.tsv  video_id, reason, detail of every clip that could not be used
    prepare.json the source it was prepared from (format, source_root, setting)

Masks are kept at their own size ``M`` because AVSBench scores them at the annotation resolution (224 x 224 in
the release), whatever size the frames are fed to the backbone at. Crash safety is that of
:mod:`molt.data.prepared`: arrays under ``*.partial`` names, ``index.json`` written last and atomically.

:class:`PreparedAVS` items: ``frames`` uint8 ``(5, 3, S, S)``, ``audio`` float32 ``(5, R)``, ``masks`` float32
``(5, M, M)`` in {0, 1}, ``mask_valid`` float32 ``(5,)`` (1 where annotated: S4 train only frame 0),
``video_id`` and ``index``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...data.prepared import (INDEX_FILE, PreparedArray, PreparedClips, PrepareReport, PrepareRun, generated_image_size,
                              media_arrays, read_prepared_index, reusable_prepared)
from .reader import NUM_FRAMES, SETTINGS, SPLITS, AVSBenchLayout, annotated_frames, decode_avs_clip

__all__ = ["prepare_avs", "ensure_prepared", "PreparedAVS", "FORMAT", "FORMAT_VERSION", "DEFAULT_IMAGE_SIZE",
           "DEFAULT_MASK_SIZE", "DEFAULT_SAMPLE_RATE"]

FORMAT = "molt-prepared-avs"
FORMAT_VERSION = 1
DEFAULT_IMAGE_SIZE = 192
DEFAULT_MASK_SIZE = 224
DEFAULT_SAMPLE_RATE = 32000
_ARRAYS = ("frames.npy", "audio.npy", "masks.npy")


def prepare_avs(root: str | os.PathLike, out_dir: str | os.PathLike, *, setting: str = "s4",
                image_size: int = DEFAULT_IMAGE_SIZE, mask_size: int = DEFAULT_MASK_SIZE,
                sample_rate: int = DEFAULT_SAMPLE_RATE, workers: int = 2, limit: int | None = None,
                show_progress: bool = True, overwrite: bool = False) -> PrepareReport:
    """Decode every clip of ``setting`` found under ``root`` into the prepared format in ``out_dir``.

    Args:
        root: AVSBench root (see :meth:`AVSBenchLayout.find` for where the metadata may be).
        out_dir: output directory (created; a previous prepared set of ``root`` there is replaced).
        setting: ``"s4"`` or ``"ms3"``.
        image_size: frame size ``S``.
        mask_size: mask size ``M`` (the resolution the metrics are computed at).
        sample_rate: audio rate (32 kHz for HTS-AT).
        workers: decoding processes (``<= 1``: in this process).
        limit: only the first ``limit`` clips (metadata order).
        show_progress: tqdm progress bar.
        overwrite: prepare into ``out_dir`` even when it holds something else than a prepared set of ``root``
            (see :class:`~molt.data.prepared.PrepareRun`).

    Returns:
        a :class:`~molt.data.prepared.PrepareReport` (``silent`` also lists clips with tiled short audio).
    """
    if image_size < 1 or mask_size < 1 or sample_rate < 1:
        raise ValueError(f"expected positive image_size, mask_size and sample_rate, got {image_size}, {mask_size}, "
                         f"{sample_rate}")
    layout = AVSBenchLayout.find(root, setting)
    records = list(layout.records)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"expected limit >= 1 or None, got {limit}")
        records = records[:limit]
    if not records:
        raise ValueError(f"{layout.meta_path} lists no {setting.upper()} clip")
    run = PrepareRun(out_dir, source_root=root, format=FORMAT, setting=setting,
                     command=f"molt prepare avs --setting {setting} --data {root}", overwrite=overwrite)
    options = {"image_size": image_size, "mask_size": mask_size, "sample_rate": sample_rate}
    jobs = [(position, record.name, [str(p) for p in layout.frame_paths(record)],
             [None if c is None else [str(p) for p in c] for c in layout.mask_paths(record)],
             str(layout.audio_path(record)), options) for position, record in enumerate(records)]
    masks = PreparedArray("masks.npy", "uint8", (len(records), NUM_FRAMES, mask_size, mask_size),
                          "(V, T, M, M) in {0, 1}")
    stored_at = run.decode(decode_avs_clip, jobs, (*media_arrays(len(records), NUM_FRAMES, image_size, sample_rate),
                                                   masks),
                           workers=workers, show_progress=show_progress, desc=f"prepare avs {setting}")

    rows = [{"video_id": record.name, "split": record.split, "media_index": position, "category": record.category,
             "objects": list(record.objects), "line": record.line,
             "annotated": [int(a) for a in annotated_frames(setting, record.split)]}
            for position, record in enumerate(records) if record.name in stored_at]
    run.report.rows = {split: sum(row["split"] == split for row in rows) for split in SPLITS}
    names = [record.name for record in records]
    index = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "setting": setting,
        "layout": {"kind": layout.kind, "meta_file": str(layout.meta_path.resolve())},
        "source_root": str(Path(root).resolve()), "num_segments": NUM_FRAMES, "segment_seconds": 1.0,
        "image_size": image_size, "mask_size": mask_size, "sample_rate": sample_rate,
        "arrays": run.array_entries(), "videos": run.videos(names), "rows": rows, "splits": run.report.rows,
        "skipped": len(run.report.skipped), "kept_with_notes": run.report.silent,
    }
    return run.commit(index, order=names)


def _read_index(path: Path) -> dict[str, Any]:
    return read_prepared_index(path, expected_format=FORMAT, version=FORMAT_VERSION, dataset_name="AVSBench",
                               prepare_command="molt prepare avs")


def ensure_prepared(data: str | os.PathLike, *, setting: str | None = None, image_size: int | None = None,
                        workers: int = 2, show_progress: bool = True,
                        out_dir: str | os.PathLike | None = None, limit: int | None = None,
                        force: bool = False, overwrite: bool = False) -> Path:
    """Return a prepared directory for ``data``, preparing it on first use.

    ``data`` may be a prepared directory (holds ``index.json``) or an AVSBench root, whose prepared copy of a
    setting lives in ``data/prepared_{setting}``. ``setting=None`` means S4 for a root, and whatever a prepared
    directory holds. ``image_size=None`` keeps an existing prepared copy whatever its size; for a new one it is
    the synthetic generator's frame size (frames and masks, from the ``synthetic_ground_truth.json`` beside the
    meta file) or 192 for the frames and 224 for the masks (the release's annotation size).

    ``out_dir`` puts a new prepared copy elsewhere; ``force=True`` (or a ``limit``: only the first ``limit``
    videos, for a quick look) prepares it again even when one exists (what ``molt prepare`` does);
    ``overwrite`` lets it replace what another source left in ``out_dir``.

    Raises:
        ValueError: a prepared directory of another setting than the one asked for, or of another format.
        FileNotFoundError: ``data`` is neither a prepared directory nor an AVSBench root.
    """
    data = Path(data)
    if setting is not None and setting not in SETTINGS:
        raise ValueError(f"unknown AVSBench setting {setting!r}: expected one of {', '.join(SETTINGS)}")
    if (data / INDEX_FILE).is_file():
        meta = _read_index(data / INDEX_FILE)
        if setting is not None and meta["setting"] != setting:
            raise ValueError(f"{data} holds prepared {meta['setting'].upper()} data, not {setting.upper()}: pass the "
                             f"AVSBench root or the prepared_{setting} directory")
        return data
    setting = setting or "s4"
    out = Path(out_dir) if out_dir is not None else data / f"prepared_{setting}"
    if reusable_prepared(out, image_size=image_size, force=force, limit=limit, read=_read_index):
        return out
    layout = AVSBenchLayout.find(data, setting)  # a clear FileNotFoundError before anything is written
    mask_size = DEFAULT_MASK_SIZE
    generated = generated_image_size(layout.meta_path.parent)
    if generated is not None:
        mask_size = generated
        image_size = generated if image_size is None else image_size
    prepare_avs(data, out, setting=setting, image_size=image_size or DEFAULT_IMAGE_SIZE, mask_size=mask_size,
                workers=workers, show_progress=show_progress, limit=limit, overwrite=overwrite)
    return out


class PreparedAVS(PreparedClips):
    """Clips of a prepared AVSBench directory (see the module docstring), one item per clip of a split.

    Args:
        root: prepared directory (holds ``index.json``).
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` for every clip.

    Attributes:
        setting, sample_rate, image_size, mask_size, num_segments (5).
    """

    prepared_format = FORMAT
    prepared_version = FORMAT_VERSION
    dataset_name = "AVSBench"
    prepare_command = "molt prepare avs"
    splits = tuple(SPLITS)

    def __init__(self, root: str | os.PathLike, split: str | None = None) -> None:
        meta = self._load_index(root, split)
        self.setting: str = meta["setting"]
        self.mask_size: int = meta["mask_size"]

    array_files = _ARRAYS

    def item_without_media(self, index: int) -> dict[str, Any]:
        """Item ``index`` without ``frames`` and ``audio`` (what training from a feature cache reads)."""
        index = self.checked_index(index)
        row = self.rows[index]
        masks = self.arrays()["masks"][row["media_index"]]
        return {"masks": torch.from_numpy(masks.astype(np.float32)),
                "mask_valid": torch.tensor(row["annotated"], dtype=torch.float32),
                "video_id": row["video_id"], "index": index}

    def task_options(self) -> dict[str, Any]:
        """What the data decides for the AVS head: the mask size ``M`` and the setting."""
        return {"mask_size": self.mask_size, "setting": self.setting}
