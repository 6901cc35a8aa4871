"""What every task's prepared format shares: the report of a preparation run, the index commit, the skipped list
and the memory-mapped ``Dataset`` base.

Part of molt-av (Apache-2.0). Each task (``molt.tasks.<task>.prepared``) decodes its dataset's real layout once
into memory-mappable arrays and describes them in ``index.json``; this module holds the pieces that do not depend
on the task:

* :class:`PrepareReport`: stored / skipped / silent clips and timings of one run;
* :class:`PrepareRun`: the one decode-into-memmap loop every task's ``prepare_*`` runs: clips decoded in
  parallel (:func:`molt.data.media.parallel_map`) into ``*.partial`` memory maps (:class:`PreparedArray`) with a
  progress bar, then the skipped list, the renames and the index commit;
* :func:`commit_index`: writes ``index.json`` last and atomically, so a directory without it is never taken as
  complete (crash safety), then logs every skipped clip;
* :func:`write_skipped`: the ``skipped.tsv`` list of clips that could not be used;
* :func:`read_prepared_index`: reads ``index.json`` and checks its format and version;
* :func:`reusable_prepared`: whether a task's ``ensure_prepared`` may return an existing prepared copy as is;
* :func:`generated_image_size`: the frame size a procedural data set was generated at (``GROUND_TRUTH_FILE``);
* :class:`PreparedClips`: rows over lazily opened memory maps (reopened in each DataLoader worker).

Frames stay uint8: normalisation belongs to the backbone (``preprocess``), which knows its own mean and std;
:func:`normalize_frames` is there for other users. Nothing here imports a task or the generator.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..progress import progress_bar
from .files import atomic_json, check_free_space, preallocate, read_json, replace_durably, storage_error
from .media import parallel_map

__all__ = ["media_tensors", "PrepareReport", "PreparedArray", "PrepareRun", "media_arrays", "PreparedClips",
           "read_prepared_index", "read_index", "commit_index", "write_skipped", "reusable_prepared",
           "generated_image_size", "normalize_frames", "INDEX_FILE", "OWNER_FILE", "SKIPPED_FILE", "GROUND_TRUTH_FILE",
           "IMAGENET_MEAN", "IMAGENET_STD"]

_logger = logging.getLogger(__name__)

INDEX_FILE = "index.json"
# who a prepared directory belongs to (format, dataset root, setting), written when a run starts
OWNER_FILE = "prepare.json"
SKIPPED_FILE = "skipped.tsv"
# where a procedural generator records its ground truth and options; preparation reads the frame size from it
GROUND_TRUTH_FILE = "synthetic_ground_truth.json"
# a partial download can miss thousands of clips: the log names the first ones, skipped.tsv all of them
LOGGED_SKIPS = 20
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class PrepareReport:
    """What one preparation run did (any task).

    Attributes:
        out_dir: the prepared directory.
        stored: ids of the clips decoded and stored.
        skipped: ``(video_id, reason, detail)`` of every clip that could not be used.
        silent: ids of stored clips whose audio is silent (below -60 dBFS); kept, but worth a look.
        rows: annotation rows stored per split.
        seconds: wall time.
    """

    out_dir: Path
    stored: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    silent: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line: counts, skip reasons, throughput."""
        reasons: dict[str, int] = {}
        for _, reason, _ in self.skipped:
            reasons[reason] = reasons.get(reason, 0) + 1
        reason_text = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        rate = len(self.stored) / self.seconds if self.seconds > 0 else 0.0
        rows = ", ".join(f"{split} {count}" for split, count in self.rows.items())
        return (f"prepared {len(self.stored)} clip(s) into {self.out_dir} ({rows} rows) in {self.seconds:.1f} s "
                f"({rate:.1f} clips/s); skipped {len(self.skipped)}" + (f" ({reason_text}, see "
                f"{self.out_dir / SKIPPED_FILE})" if self.skipped else "")
                + (f"; {len(self.silent)} silent clip(s) kept" if self.silent else ""))


def commit_index(out: Path, index: dict[str, Any], report: PrepareReport) -> PrepareReport:
    """Write ``index.json`` last and atomically (a directory without it is never taken as complete), then log the
    report and the first :data:`LOGGED_SKIPS` skipped clips (all of them are in ``skipped.tsv``)."""
    atomic_json(out / INDEX_FILE, index)
    _logger.info(report.summary())
    for name, reason, detail in report.skipped[:LOGGED_SKIPS]:
        _logger.warning("skipped %s: %s%s", name, reason, f" ({detail})" if detail else "")
    if len(report.skipped) > LOGGED_SKIPS:
        _logger.warning("... and %d more skipped clip(s), listed in %s", len(report.skipped) - LOGGED_SKIPS,
                        out / SKIPPED_FILE)
    return report


def write_skipped(out: Path, skipped: Sequence[tuple[str, str, str]], paths: dict[str, Any], *,
                  name_column: str = "video_id") -> None:
    """Write ``out/skipped.tsv`` (``name, reason, detail, path``) atomically; ``paths`` maps a name to its file."""
    temporary = out / f".{SKIPPED_FILE}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(f"{name_column}\treason\tdetail\tpath\n")
        for name, reason, detail in skipped:
            clean = " ".join(detail.split())
            path = paths.get(name)
            handle.write(f"{name}\t{reason}\t{clean}\t{path if path else ''}\n")
    replace_durably(temporary, out / SKIPPED_FILE)


@dataclass(frozen=True)
class PreparedArray:
    """One array file of a prepared directory: its shape and dtype, and what ``index.json`` says of it.

    Attributes:
        file: file name (``frames.npy``); its stem keys the array in ``index.json`` and in :meth:`PreparedClips.arrays`.
        dtype: numpy dtype name (``uint8``, ``int16``).
        shape: full shape of the array (rows first).
        layout: the layout text of ``index.json`` (``"(V, T, S, S, 3) RGB"``).
        scale: the integer scale of a fixed-point array (int16 audio: 32768), ``None`` otherwise.
    """

    file: str
    dtype: str
    shape: tuple[int, ...]
    layout: str
    scale: int | None = None

    @property
    def key(self) -> str:
        """The file stem (``frames``)."""
        return self.file.removesuffix(".npy")

    def entry(self) -> dict[str, Any]:
        """What ``index.json`` records of this array under ``arrays``."""
        entry: dict[str, Any] = {"file": self.file, "dtype": self.dtype, "layout": self.layout}
        if self.scale is not None:
            entry["scale"] = self.scale
        return entry


def media_arrays(count: int, num_segments: int, image_size: int, sample_rate: int) -> tuple[PreparedArray, ...]:
    """The media arrays every task stores, ``count`` clips of ``num_segments`` 1-s segments: ``frames.npy`` uint8
    ``(V, T, S, S, 3)`` RGB and ``audio.npy`` int16 ``(V, T, sample_rate)`` mono (value / 32768)."""
    return (PreparedArray("frames.npy", "uint8", (count, num_segments, image_size, image_size, 3),
                          "(V, T, S, S, 3) RGB"),
            PreparedArray("audio.npy", "int16", (count, num_segments, sample_rate), "(V, T, sample_rate) mono",
                          scale=32768))


class PrepareRun:
    """One preparation run into ``out_dir``: the decode-into-memmap loop and the commit every task shares.

    A task's ``prepare_*`` builds its decoding jobs and index rows; this class does the rest, in this order:

    1. on creation: check that ``out_dir`` is this run's to write (see below), make it, record the run's owner in
       ``prepare.json``, remove its ``index.json`` (a half-written directory is never complete) and the
       ``*.partial`` files of an earlier run that was killed;
    2. :meth:`skip_missing` for clips whose files are absent;
    3. :meth:`decode`: check the free space, decode the jobs in parallel into ``*.partial`` memory maps (their
       blocks reserved first, :func:`~molt.data.files.preallocate`), with a progress bar; a clip that cannot be
       used is skipped, a kept clip with a status other than ``"ok"`` (silent, short audio) is noted in
       :attr:`PrepareReport.silent`;
    4. :meth:`open` for the task's own arrays (labels, ...) written from the index rows;
    5. :meth:`commit`: sort the skipped clips, write ``skipped.tsv``, rename the arrays from ``*.partial``, write
       ``index.json`` last (with ``created`` and ``seconds``) and log the report.

    **Whose directory.** A run writes into an empty (or new) directory, or one prepared before from the same
    source: same format, same setting and same dataset root (a prepared directory inside its root belongs to that
    root, even after the root was moved). Anything else (a dataset, another task's or another root's prepared set)
    is refused with a ``ValueError`` naming the directory, unless ``overwrite``.

    **Faults.** A full disk or a read-only directory is a :class:`~molt.data.files.StorageError` (one sentence
    with the fix); a failed or interrupted run removes its ``*.partial`` files, and the next run removes those of
    a killed one. The decoding workers die with the process (:func:`molt.data.media.parallel_map`) and never map
    the output files (the memory maps are opened after they start).

    Attributes:
        out: the prepared directory.
        report: the :class:`PrepareReport` being filled.
        stored_at: media row of every stored clip name (after :meth:`decode`).
    """

    def __init__(self, out_dir: str | os.PathLike, *, source_root: str | os.PathLike, format: str,
                 command: str, setting: str | None = None, overwrite: bool = False) -> None:
        """Args:
            out_dir: the prepared directory.
            source_root: the dataset root prepared.
            format: the task's prepared format (``molt-prepared-ave``).
            command: the command preparing this root (``molt prepare ave --data ROOT``), for the messages.
            setting: the task variant prepared, ``None`` for a task without settings.
            overwrite: write into ``out_dir`` even when it holds something else (a dataset, another prepared set).
        """
        self._started = time.time()
        self.out = Path(out_dir)
        self.command = command
        self.owner = {"format": format, "source_root": str(Path(source_root).resolve()), "setting": setting}
        self.report = PrepareReport(out_dir=self.out)
        self.stored_at: dict[str, int] = {}
        self._arrays: dict[str, PreparedArray] = {}
        self._memmaps: list[np.memmap] = []
        if not overwrite:
            self._check_owner()
        with self._storage(f"cannot write the prepared set into {self.out}"):
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_json(self.out / OWNER_FILE, self.owner)
            (self.out / INDEX_FILE).unlink(missing_ok=True)
            for stale in self.out.glob("*.partial"):  # the arrays of a run that was killed
                stale.unlink()

    def _check_owner(self) -> None:
        """A ``ValueError`` when :attr:`out` holds something that is not an earlier preparation of this source."""
        if not self.out.is_dir() or not any(self.out.iterdir()):
            return
        recorded = None
        for name in (OWNER_FILE, INDEX_FILE):
            if (self.out / name).is_file():
                try:
                    recorded = json.loads((self.out / name).read_text())
                except (OSError, ValueError):
                    recorded = None
                if isinstance(recorded, dict):
                    break
        if not isinstance(recorded, dict):
            raise ValueError(f"{self.out} is not empty and holds no prepared set (no {OWNER_FILE} or {INDEX_FILE}): "
                             f"preparing into it would write over its files; prepare into an empty directory "
                             f"(--out NEW_DIR), or pass --overwrite to write into it anyway")
        root = Path(self.owner["source_root"])
        inside_root = self.out.resolve().is_relative_to(root)
        differences = [f"{key} {recorded.get(key)!r}" for key in ("format", "setting", "source_root")
                       if recorded.get(key) != self.owner[key] and not (key == "source_root" and inside_root)]
        if differences:
            raise ValueError(f"{self.out} holds a prepared set of another source ({', '.join(differences)}; this run: "
                             f"{self.owner['format']!r} of {root}" + (f", setting {self.owner['setting']!r}"
                                                                     if self.owner["setting"] else "")
                             + "): prepare into another directory (--out NEW_DIR), or pass --overwrite to replace it")

    @contextlib.contextmanager
    def _storage(self, what: str):
        """Turn a full disk or a read-only directory into a :class:`StorageError` naming the fix; any failure
        removes this run's ``*.partial`` files."""
        try:
            yield
        except BaseException as error:
            self.abandon()
            place = next((folder for folder in (self.out, *self.out.parents) if folder.exists()), self.out)
            converted = storage_error(error, place, what=what, fix=self._fix) if isinstance(error, OSError) \
                else None
            if converted is not None:
                raise converted from None
            raise

    @property
    def _fix(self) -> str:
        return (f"prepare where there is room and you may write (`{self.command} --out DIR`), then pass the "
                f"prepared DIR as --data")

    def abandon(self) -> None:
        """Drop the memory maps and remove the ``*.partial`` files of this run (a failed or interrupted run)."""
        self._memmaps.clear()
        for name in self._arrays:
            (self.out / f"{name}.partial").unlink(missing_ok=True)

    def needed_bytes(self, arrays: Sequence[PreparedArray]) -> int:
        """Disk bytes the files of ``arrays`` take (a header page each, rounded up)."""
        return sum(int(np.prod(array.shape)) * np.dtype(array.dtype).itemsize + 4096 for array in arrays)

    def skip_missing(self, name: str, detail: str) -> None:
        """Record clip ``name`` as skipped because its file is absent (``detail`` says where it was looked for)."""
        self.report.skipped.append((name, "missing file", detail))

    def open(self, array: PreparedArray) -> np.memmap:
        """A writable memory map of ``array`` under its ``*.partial`` name (zeros until written), its disk
        blocks reserved first (a full disk fails here, not with SIGBUS at a write)."""
        path = self.out / f"{array.file}.partial"
        dtype = np.dtype(array.dtype)
        self._arrays[array.file] = array
        with self._storage(f"cannot write {path}"):
            with open(path, "wb") as handle:
                np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                              "fortran_order": False, "shape": array.shape})
                header = handle.tell()
            preallocate(path, header + int(np.prod(array.shape)) * dtype.itemsize)
            memmap = np.lib.format.open_memmap(path, mode="r+")
        self._memmaps.append(memmap)
        return memmap

    def decode(self, decode: Callable[[Any], tuple], jobs: Sequence[tuple], arrays: Sequence[PreparedArray], *,
               workers: int = 2, show_progress: bool = True, desc: str = "prepare") -> dict[str, int]:
        """Decode every job into ``arrays`` and return :attr:`stored_at`.

        Args:
            decode: picklable worker ``job -> (position, name, *values, status, detail)`` with one value per array
                (``None`` values: the clip cannot be used, ``status`` is the reason); see
                :func:`molt.data.media.decode_pcm16`.
            jobs: its jobs; ``position`` is the clip's media row.
            arrays: the arrays the values go to, in value order.
            workers: decoding processes (``<= 1``: in this process).
            show_progress: tqdm progress bar; ``desc`` its label.
        """
        with self._storage(f"cannot write the prepared set into {self.out}"):
            check_free_space(self.out, self.needed_bytes(arrays), what=f"preparing {self.owner['source_root']}",
                             fix=self._fix)
            memmaps = None
            results = parallel_map(decode, jobs, workers)
            with contextlib.closing(results):  # a failure here stops the workers now, not when collected
                for position, name, *values, status, detail in progress_bar(results, total=len(jobs), desc=desc,
                                                                            unit="clip", show=show_progress):
                    if memmaps is None:  # opened once the workers run: they must not inherit the maps
                        memmaps = [self.open(array) for array in arrays]
                    if values[0] is None:
                        self.report.skipped.append((name, status, detail))
                        _logger.debug("skipped %s: %s %s", name, status, detail)
                        continue
                    for memmap, value in zip(memmaps, values):
                        memmap[position] = value
                    self.stored_at[name] = position
                    if status != "ok":
                        self.report.silent.append(name)
                        _logger.debug("%s: %s %s", name, status, detail)
            for memmap in memmaps if memmaps is not None else [self.open(array) for array in arrays]:
                memmap.flush()
        return self.stored_at

    def videos(self, names: Sequence[str]) -> list[str | None]:
        """``names`` with ``None`` for every clip that was not stored (the ``videos`` of ``index.json``)."""
        return [name if name in self.stored_at else None for name in names]

    def array_entries(self) -> dict[str, dict[str, Any]]:
        """The ``arrays`` of ``index.json``: every array opened so far, in opening order."""
        return {array.key: array.entry() for array in self._arrays.values()}

    def commit(self, index: dict[str, Any], *, order: Sequence[str], paths: dict[str, Any] | None = None,
               name_column: str = "video_id") -> PrepareReport:
        """Finish the run: skipped clips sorted by ``order`` (every clip name, in media order) and written to
        ``skipped.tsv`` (with their file from ``paths``), :attr:`PrepareReport.stored` in ``order``, the arrays
        renamed from ``*.partial``, and ``index`` (plus ``created`` and ``seconds``) committed last."""
        report = self.report
        position = {name: i for i, name in enumerate(order)}
        report.skipped.sort(key=lambda item: position[item[0]])
        report.stored = [name for name in order if name in self.stored_at]
        with self._storage(f"cannot write the prepared set into {self.out}"):
            write_skipped(self.out, report.skipped, paths or {}, name_column=name_column)
            for memmap in self._memmaps:
                memmap.flush()
            self._memmaps.clear()   # close the memory maps before the files are renamed
            for name in self._arrays:
                replace_durably(self.out / f"{name}.partial", self.out / name)
            report.seconds = time.time() - self._started
            return commit_index(self.out, {**index, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                           "seconds": round(report.seconds, 2)}, report)


def generated_image_size(root: str | os.PathLike) -> int | None:
    """The frame size a procedural generator wrote ``root`` at (its ``GROUND_TRUTH_FILE``), ``None`` otherwise."""
    ground_truth = Path(root) / GROUND_TRUTH_FILE
    if not ground_truth.is_file():
        return None
    return int(json.loads(ground_truth.read_text())["options"]["image_size"])


def read_prepared_index(path: Path, *, expected_format: str, version: int, dataset_name: str,
                        prepare_command: str) -> dict[str, Any]:
    """``index.json`` of a prepared directory, after checking it is of ``expected_format`` and ``version``."""
    meta = read_index(path, prepare_command)
    if meta.get("format") != expected_format:
        raise ValueError(f"{path} is a {meta.get('format')!r} index, not a prepared {dataset_name} set "
                         f"({expected_format!r}); prepare it with `{prepare_command}` or pass the dataset root")
    if meta.get("format_version") != version:
        raise ValueError(f"{path}: format version {meta.get('format_version')} is not supported (expected "
                         f"{version}); prepare the data again (`{prepare_command}`)")
    return meta


def read_index(path: Path, prepare_command: str = "molt prepare") -> dict[str, Any]:
    """The mapping of a prepared directory's ``index.json``; a ``ValueError`` naming the file and saying to prepare
    the data again when it is damaged (not JSON, not a mapping)."""
    fix = f"the prepared copy is damaged: prepare the data again (`{prepare_command} --data ROOT`)"
    meta = read_json(path, what="prepared index", fix=fix)
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}; {fix}")
    return meta


def reusable_prepared(out: Path, *, image_size: int | None, force: bool = False, limit: int | None = None,
                      read: Callable[[Path], dict[str, Any] | None] | None = None) -> bool:
    """Whether the prepared copy in ``out`` may be used as is: it is complete (holds ``index.json``), neither
    ``force`` nor a ``limit`` asks for a new one, and it was prepared at ``image_size`` (any size for ``None``).

    ``read`` reads its ``index.json`` (plain JSON by default); it may refuse the copy with a ``ValueError`` or
    return ``None`` for a copy of another kind, which is then prepared again."""
    index_path = Path(out) / INDEX_FILE
    if force or limit is not None or not index_path.is_file():
        return False
    existing = read(index_path) if read is not None else read_index(index_path)
    return existing is not None and image_size in (None, existing.get("image_size"))


def normalize_frames(frames: torch.Tensor, mean: tuple[float, float, float] = IMAGENET_MEAN,
                     std: tuple[float, float, float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 frames ``(..., 3, H, W)`` -> float32 normalised with ``mean`` and ``std`` (ImageNet by default)."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (frames.float() / 255.0 - mean_t) / std_t


def media_tensors(frames: np.ndarray, pcm: np.ndarray) -> dict[str, torch.Tensor]:
    """A prepared item's media from uint8 frames ``(T, S, S, 3)`` and int16 audio ``(T, R)`` (copied, so a memory
    map is not held): ``frames`` uint8 ``(T, 3, S, S)`` and ``audio`` float32 ``(T, R)`` in ``[-1, 1)``."""
    return {"frames": torch.from_numpy(np.array(frames)).permute(0, 3, 1, 2),
            "audio": torch.from_numpy(pcm.astype(np.float32) / 32768.0)}


class PreparedClips(Dataset):
    """Base of the prepared data sets of every task: ``rows`` (one item each) over memory-mapped arrays.

    Subclasses set ``root``, ``rows`` (dicts with a ``media_index``) and :attr:`array_files`. The arrays are opened
    with ``numpy.load(mmap_mode="r")`` on first use in each process (memory maps are not pickled: DataLoader workers
    reopen them), keyed by file stem.
    """

    array_files: tuple[str, ...] = ("frames.npy", "audio.npy")
    prepared_format: str = ""
    prepared_version: int = 1
    dataset_name: str = ""
    prepare_command: str = "molt prepare"
    splits: tuple[str, ...] = ("train", "val", "test")
    root: Path
    rows: list[dict[str, Any]]

    def _load_index(self, root: str | os.PathLike, split: str | None) -> dict[str, Any]:
        """Read ``root/index.json``, check its format and ``split``, and set ``root``, ``split``, ``num_segments``,
        ``image_size``, ``sample_rate``, ``rows`` (those of ``split``, all for ``None``) and ``row_indices``."""
        self.root = Path(root)
        index_path = self.root / INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(f"{index_path} not found: {self.root} is not a prepared {self.dataset_name} "
                                    f"directory (run `{self.prepare_command}`)")
        meta = read_prepared_index(index_path, expected_format=self.prepared_format, version=self.prepared_version,
                                   dataset_name=self.dataset_name, prepare_command=self.prepare_command)
        fix = f"the prepared copy is damaged: prepare the data again (`{self.prepare_command} --data ROOT`)"
        missing = [key for key in ("num_segments", "image_size", "sample_rate", "rows") if key not in meta]
        if missing or not isinstance(meta["rows"], list) or not all(isinstance(row, dict) and "split" in row
                                                                    for row in meta["rows"]):
            raise ValueError(f"{index_path}: {'no ' + ', '.join(missing) if missing else 'malformed rows'}; {fix}")
        for name in self.array_files:
            try:
                np.load(self.root / name, mmap_mode="r")
            except (OSError, ValueError) as error:
                raise ValueError(f"{self.root / name} cannot be read ({error}); {fix}") from None
        if split is not None and split not in self.splits:
            raise ValueError(f"unknown split {split!r}; expected one of {list(self.splits)} or None")
        self.split = split
        self.num_segments: int = meta["num_segments"]
        self.image_size: int = meta["image_size"]
        self.sample_rate: int = meta["sample_rate"]
        self.row_indices = [i for i, row in enumerate(meta["rows"]) if split is None or row["split"] == split]
        self.rows = [meta["rows"][i] for i in self.row_indices]
        return meta

    def arrays(self) -> dict[str, np.ndarray]:
        opened = self.__dict__.get("_memmaps")
        if opened is None:
            opened = {name.removesuffix(".npy"): np.load(self.root / name, mmap_mode="r") for name in self.array_files}
            self.__dict__["_memmaps"] = opened
        return opened

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "_memmaps"}

    def __len__(self) -> int:
        return len(self.rows)

    def checked_index(self, index: int) -> int:
        """``index`` in ``[0, len)`` (negative values count from the end); ``IndexError`` outside."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items of {self.root}")
        return index % len(self)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self.checked_index(index)
        return {**self.clip(self.rows[index]["media_index"]), **self.item_without_media(index)}

    def item_without_media(self, index: int) -> dict[str, Any]:
        """Item ``index`` without ``frames`` and ``audio`` (targets and ids only): what training from a feature
        cache reads, without touching the decoded media."""
        raise NotImplementedError

    def clip(self, media_index: int) -> dict[str, torch.Tensor]:
        """``frames`` uint8 ``(T, 3, S, S)`` and ``audio`` float32 ``(T, R)`` in ``[-1, 1)`` of one media row."""
        arrays = self.arrays()
        return media_tensors(arrays["frames"][media_index], arrays["audio"][media_index])
