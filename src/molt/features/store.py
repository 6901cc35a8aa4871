"""A cache of frozen-backbone taps: extract once, train adapters many times.

Part of molt-av (Apache-2.0), an implementation of "Mixture of Layer-Wise Tokens for Efficient Audio-Visual
Learning" (MoLT). MoLT (Sec. 3) and Mettle only *read* the outputs of selected blocks of frozen backbones; those
taps are a pure function of the input clip, so they can be computed once per split (:func:`extract_features`) and
read back every epoch (:class:`FeatureCache`, :class:`CachedDataset`) instead of running Swin-V2-L and HTS-AT on
every batch. LAVisH-style adapters live inside the blocks and cannot use a cache. This is our addition; the paper
trains online.

Store layout (``out_dir``, format version 1)::

    manifest.json                        what the taps are (FeatureManifest): task, setting, data fingerprint,
                                         per tap group the backbone, its weights, blocks, token shapes and
                                         input preprocessing, storage dtype, chunk size, completed splits
    {split}/split.json                   written last, when every chunk of the split is done
    {split}/chunk_{k:05d}/{group}_{l}.npy  taps of block ``l`` of tap group ``group`` (e.g. ``visual_taps_22``)
                                         for clips ``k*chunk_size ...``: ``(n, T, N_l, D_l)`` in the storage dtype
    {split}/chunk_{k:05d}/done.json      written last in a chunk: item range, and per file its size, shape,
                                         dtype and CRC-32

Clip ``i`` of a cache is item ``i`` of the task dataset of that split (``dataset[i]``), in order. Tap groups are the
keys the model reads from a batch (``visual_taps``, ``audio_taps``, ``visual_stages``, ...); a value read back is a
list (one tensor per block, in block order) of float32 ``(T, N_l, D_l)``.

Why a directory of chunked ``.npy`` files rather than HDF5, zarr or LMDB:

* **Tens of GB, random access, many DataLoader workers.** Each worker memory-maps the chunk files it touches
  (``numpy.load(mmap_mode="r")``, opened lazily after the fork, like :class:`~molt.data.prepared.PreparedClips`);
  one clip of one block is a single contiguous slice of one file, so a read is a few page faults served by the OS
  page cache that every worker shares, with no decompression (float activations barely compress), no library
  lock (libhdf5 serialises threads and must be reopened per process) and no new dependency (neither h5py, zarr
  nor lmdb is a dependency of molt-av).
* **Crash safety with a cheap unit of work.** A chunk (``chunk_size`` clips, 256 by default: about 1 GB for the
  two late blocks of Swin-V2-L at 192 px + HTS-AT, float16, T = 10) is the unit of resume and of atomic commit:
  its files are written under ``*.partial`` names, renamed when complete, and ``done.json`` is written last
  (atomically), so a kill loses at most one chunk and a chunk without ``done.json`` is never read. A single
  whole-dataset file (HDF5) can be left unreadable by a kill; one file per clip means hundreds of thousands of
  small files.
* **Writing costs little.** Files are written sequentially (plain appends, faster than a writable memory map) by
  a background thread, overlapped with the next batch's loading and forward pass (file writes and ``zlib`` release
  the GIL); :class:`ExtractReport` says how long extraction waited for it.
* **Corruption is detected and named.** Every file's size and CRC-32 (``zlib``, computed while writing) are in
  ``done.json``: opening a chunk checks sizes and headers (a truncated file raises a ``ValueError`` naming it) and
  :meth:`FeatureCache.verify` recomputes the checksums.

Storage dtypes: ``float16`` (default; half the bytes, relative error about 5e-4), ``bfloat16`` (stored as ``uint16``
bit patterns, numpy having no bfloat16; the range of float32) and ``float32`` (exact). A value that overflows float16
is an error naming the tap, never a silent ``inf``. Taps are always read back as float32.

Typical use::

    manifest = FeatureManifest(task="ave", num_segments=10, data_fingerprint=data_fingerprint(prepared_dir),
                               groups={"visual_taps": TapGroupSpec.from_backbone(visual, "late"),
                                       "audio_taps": TapGroupSpec.from_backbone(audio, "late")})
    extract_features(dataset, compute_taps, "cache/", manifest, split="train")   # resumable
    train_set = CachedDataset(dataset, FeatureCache("cache/", "train", expected=manifest))

Compatibility. A cache is refused (:meth:`FeatureManifest.check_compatible`, a ``ValueError`` listing every differing
field) when the task, setting, prepared data (SHA-256 of its ``index.json``), number of segments, storage dtype,
what an entry is (``keyed_by``: a dataset item, or a video shared by several items), or, for a tap group the run
needs, the backbone, its weights (SHA-256 of the weights file, or the hub tag, or the seed of a random
initialisation), blocks, token shapes or input preprocessing differ. Re-preparing the same data
changes ``index.json`` (it records the preparation time), so it invalidates the cache: that is deliberate, since
the decoded frames may have changed too.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import queue
import re
import shutil
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..data.files import replace_durably
from ..progress import progress_bar

__all__ = ["CachedDataset", "ExtractReport", "FeatureCache", "FeatureManifest", "TapGroupSpec", "data_fingerprint",
           "extract_features", "DONE_FILE", "DTYPES", "FORMAT", "FORMAT_VERSION", "MANIFEST_FILE", "MEDIA_KEYS",
           "SPLIT_FILE"]

_logger = logging.getLogger(__name__)

FORMAT = "molt-feature-cache"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
DONE_FILE = "done.json"
SPLIT_FILE = "split.json"
# storage dtype name -> numpy dtype of the stored array (bfloat16 is kept as its uint16 bit pattern)
DTYPES: dict[str, np.dtype] = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(np.uint16),
                               "float32": np.dtype(np.float32)}
MEDIA_KEYS = ("frames", "audio")
_LIMITS = {"float16": torch.finfo(torch.float16).max, "bfloat16": torch.finfo(torch.bfloat16).max,
           "float32": torch.finfo(torch.float32).max}
# fields of a manifest that decide what the taps are (chunk_size and splits only describe the store)
_IDENTITY_FIELDS = ("format", "format_version", "task", "setting", "data_fingerprint", "num_segments", "dtype",
                    "keyed_by")
#: what one cache entry is: a dataset item, or a media row shared by several items (MUSIC-AVQA's questions)
KEYS = ("item", "media")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_CRC_BLOCK = 1 << 22


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON atomically (temporary file in the same directory, then ``os.replace``)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=1))
    replace_durably(temporary, path)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {what} {path}: {error}") from None


def data_fingerprint(prepared: str | os.PathLike, index_name: str = "index.json") -> str:
    """``"sha256:<hex>"`` of a prepared directory's index file (or of the file itself when given a file).

    The prepared formats write ``index.json`` last, with the list of clips, splits and options: its hash changes
    whenever the items of a split (or their order) can have changed.
    """
    path = Path(prepared)
    if path.is_dir():
        path = path / index_name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a feature cache fingerprints the prepared data by its "
                                f"{index_name}; prepare the data first (molt prepare)")
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class TapGroupSpec:
    """What one tap group holds: which blocks of which frozen backbone, on what input.

    Attributes:
        backbone: backbone name (e.g. ``swinv2_large_window12_192``, ``htsat_audioset``).
        blocks: block indices (sorted, non-negative), one stored tap each.
        token_shapes: ``(N_l, D_l)`` of each block's taps for one frame / audio segment.
        weights_hash: SHA-256 of the weights file, ``None`` when no file was loaded.
        weights_tag: hub pretrained tag (timm) when hub weights were used, else ``""``.
        init_seed: seed of the random initialisation (only when neither a file nor hub weights were loaded).
        preprocessing: everything about the input that changes the taps (backbone ``input_size``,
            ``sample_rate``, the prepared frame size ``image_size``, ...).
    """

    backbone: str
    blocks: list[int]
    token_shapes: list[tuple[int, int]]
    weights_hash: str | None = None
    weights_tag: str = ""
    init_seed: int | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.blocks = [int(block) for block in self.blocks]
        self.token_shapes = [(int(n), int(d)) for n, d in self.token_shapes]
        if not self.blocks or len(self.blocks) != len(self.token_shapes):
            raise ValueError(f"a tap group needs one token shape per block, got blocks {self.blocks} and "
                             f"token_shapes {self.token_shapes}")
        if sorted(set(self.blocks)) != self.blocks or self.blocks[0] < 0:
            raise ValueError(f"blocks must be sorted, unique and non-negative, got {self.blocks}")
        if any(n < 1 or d < 1 for n, d in self.token_shapes):
            raise ValueError(f"token shapes must be positive, got {self.token_shapes}")

    @classmethod
    def from_backbone(cls, backbone: Any, blocks: Any, *, init_seed: int | None = 0,
                      preprocessing: Mapping[str, Any] | None = None) -> TapGroupSpec:
        """Describe the taps of ``backbone`` (a :class:`~molt.backbones.base.TapBackbone`) at ``blocks``.

        ``blocks`` is any selection the backbone resolves (``"late"``, ``[22, 23]``, ...). Token shapes come
        from the backbone's nominal ``block_tokens`` / ``block_dims``; the backbone's ``input_size`` and
        ``sample_rate`` (when it has them) are added to ``preprocessing``. ``init_seed`` (the seed given to
        :func:`~molt.backbones.build_backbones`) is kept only for randomly initialised backbones.
        """
        indices = backbone.resolve_blocks(blocks)
        hasher = getattr(backbone, "weights_hash", None)
        weights_hash = hasher() if callable(hasher) else None
        tag = str(getattr(backbone, "tag", "") or "")
        derived: dict[str, Any] = {}
        if getattr(backbone, "input_size", None) is not None:
            derived["input_size"] = [int(size) for size in backbone.input_size]
        if getattr(backbone, "sample_rate", None) is not None:
            derived["sample_rate"] = int(backbone.sample_rate)
        compute_dtype = str(getattr(backbone, "compute_dtype", "torch.float32")).removeprefix("torch.")
        if compute_dtype != "float32":       # taps of a half-precision backbone are other taps
            derived["compute_dtype"] = compute_dtype
        derived.update(preprocessing or {})
        return cls(backbone=str(getattr(backbone, "name", type(backbone).__name__)), blocks=indices,
                   token_shapes=[(backbone.block_tokens[i], backbone.block_dims[i]) for i in indices],
                   weights_hash=weights_hash, weights_tag=tag,
                   init_seed=init_seed if weights_hash is None and not tag else None, preprocessing=derived)

    def to_dict(self) -> dict[str, Any]:
        payload = dataclasses.asdict(self)
        payload["token_shapes"] = [list(shape) for shape in self.token_shapes]
        return json.loads(json.dumps(payload))  # JSON-normalised (tuples -> lists), so comparisons are exact


@dataclass
class FeatureManifest:
    """The setup a feature cache was built for (``manifest.json``); see the module docstring.

    Attributes:
        task: task name (``ave``, ``avs``, ...).
        groups: tap group name (a batch key: ``visual_taps``, ``audio_taps``, ``visual_stages``) -> its spec.
        num_segments: segments per clip ``T``.
        data_fingerprint: :func:`data_fingerprint` of the prepared data (``None``: unknown, not compared).
        setting: task setting (``s4``, ``ms3``) or ``None``.
        dtype: storage dtype, one of :data:`DTYPES`.
        chunk_size: clips per chunk.
        splits: splits whose extraction is complete (maintained by :func:`extract_features`).
        keyed_by: ``"item"`` (entry ``i`` = dataset item ``i``) or ``"media"`` (one entry per video, in order of
            first use, shared by the items that read it; see :mod:`molt.features.extract`).
        format, format_version: store format.
    """

    task: str
    groups: dict[str, TapGroupSpec]
    num_segments: int
    data_fingerprint: str | None = None
    setting: str | None = None
    dtype: str = "float16"
    chunk_size: int = 256
    splits: list[str] = field(default_factory=list)
    keyed_by: str = "item"
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.groups = {name: spec if isinstance(spec, TapGroupSpec) else TapGroupSpec(**spec)
                       for name, spec in self.groups.items()}
        if not self.groups:
            raise ValueError("a feature manifest needs at least one tap group (e.g. visual_taps)")
        for name in self.groups:
            if not _NAME.match(name):
                raise ValueError(f"tap group name {name!r} must use only letters, digits, '_', '.', '-' "
                                 f"(it names files)")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown storage dtype {self.dtype!r}: expected one of {', '.join(DTYPES)}")
        if self.keyed_by not in KEYS:
            raise ValueError(f"keyed_by must be one of {', '.join(KEYS)}, got {self.keyed_by!r}")
        if int(self.chunk_size) < 1 or int(self.num_segments) < 1:
            raise ValueError(f"chunk_size and num_segments must be >= 1, got {self.chunk_size} and "
                             f"{self.num_segments}")
        self.chunk_size, self.num_segments = int(self.chunk_size), int(self.num_segments)

    # ---- JSON
    def to_dict(self) -> dict[str, Any]:
        payload = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "groups"}
        payload["groups"] = {name: spec.to_dict() for name, spec in self.groups.items()}
        payload["splits"] = list(self.splits)
        return payload

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any], *, source: str = "feature manifest") -> FeatureManifest:
        if payload.get("format") != FORMAT or payload.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{source}: expected format {FORMAT!r} version {FORMAT_VERSION}, got "
                             f"{payload.get('format')!r} version {payload.get('format_version')!r}; extract the "
                             f"features again into a new directory")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise ValueError(f"{source}: unknown manifest field(s) {unknown}")
        try:
            return cls(**dict(payload))
        except TypeError as error:
            raise ValueError(f"{source}: malformed manifest ({error})") from None

    def save(self, path: str | os.PathLike) -> None:
        _write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureManifest:
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: not a feature cache (run `molt extract` first)")
        return cls.from_dict(_read_json(path, "feature cache manifest"), source=str(path))

    # ---- sizes and compatibility
    def bytes_per_item(self, groups: Sequence[str] | None = None) -> int:
        """Stored bytes of one clip (all blocks of ``groups``, default every group)."""
        itemsize = DTYPES[self.dtype].itemsize
        names = self.groups if groups is None else groups
        return sum(self.num_segments * n * d * itemsize for name in names for n, d in self.groups[name].token_shapes)

    def differences(self, expected: FeatureManifest) -> list[str]:
        """Every field where this (cache) manifest differs from ``expected``, as ``"field: cache has A, expected
        B"`` lines. Only the groups of ``expected`` are compared (a cache may hold more); ``chunk_size`` and
        ``splits`` describe the store, not the taps, and are ignored; ``data_fingerprint`` is compared only when
        ``expected`` has one."""
        mine, theirs = self.to_dict(), expected.to_dict()
        problems = []
        for key in _IDENTITY_FIELDS:
            if key == "data_fingerprint" and theirs[key] is None:
                continue
            if mine[key] != theirs[key]:
                problems.append(f"{key}: cache has {mine[key]!r}, expected {theirs[key]!r}")
        for name, spec in theirs["groups"].items():
            if name not in mine["groups"]:
                problems.append(f"groups.{name}: not in the cache (it holds {', '.join(sorted(mine['groups']))})")
                continue
            for key, value in spec.items():
                if mine["groups"][name].get(key) != value:
                    problems.append(f"groups.{name}.{key}: cache has {mine['groups'][name].get(key)!r}, "
                                    f"expected {value!r}")
        return problems

    def check_compatible(self, expected: FeatureManifest, *, source: str = "the feature cache") -> None:
        """Raise a ``ValueError`` listing every difference (see :meth:`differences`) and how to fix it."""
        problems = self.differences(expected)
        if problems:
            listing = "\n".join(f"  - {problem}" for problem in problems)
            raise ValueError(f"{source} was built for another setup ({len(problems)} difference(s)):\n{listing}\n"
                             f"Extract the features again into another directory (molt extract ... --out "
                             f"NEW_DIR), or run with the configuration and data the cache was built with.")


@dataclass
class ExtractReport:
    """What :func:`extract_features` did.

    Attributes:
        out_dir: the cache directory; split: the split extracted.
        num_items: clips in the split; num_chunks: chunks in the split.
        chunks_written / chunks_skipped: chunks computed now / found complete (resume).
        items_computed: clips computed now.
        bytes_written: bytes of tap files written now.
        seconds: wall time; compute_seconds: time in ``compute_taps`` and the copy to the CPU.
        write_seconds: time the background writer spent writing, checksumming and committing chunks (overlapped
            with computing); wait_seconds: time the extraction waited for the writer (the visible cost of storing).
    """

    out_dir: Path
    split: str
    num_items: int = 0
    num_chunks: int = 0
    chunks_written: int = 0
    chunks_skipped: int = 0
    items_computed: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    compute_seconds: float = 0.0
    write_seconds: float = 0.0
    wait_seconds: float = 0.0

    @property
    def clips_per_second(self) -> float:
        return self.items_computed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line: what was computed, skipped, written, and the throughput."""
        return (f"extracted {self.items_computed} clip(s) of split {self.split!r} into {self.out_dir} "
                f"({self.chunks_written} chunk(s) written, {self.chunks_skipped} already complete, "
                f"{self.bytes_written / 1e6:.1f} MB) in {self.seconds:.1f} s ({self.clips_per_second:.2f} clips/s; "
                f"compute {self.compute_seconds:.1f} s, write {self.write_seconds:.1f} s of which "
                f"{self.wait_seconds:.1f} s not overlapped)")


# ---------------------------------------------------------------------------------------------------------- chunks
def _file_name(group: str, block: int) -> str:
    return f"{group}_{block}.npy"


def _chunk_dir(split_dir: Path, chunk: int) -> Path:
    return split_dir / f"chunk_{chunk:05d}"


def _chunk_ranges(num_items: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk_size, num_items)) for start in range(0, num_items, chunk_size)]


def _expected_files(manifest: FeatureManifest, count: int,
                    groups: Sequence[str] | None = None) -> dict[str, tuple[str, int, tuple[int, ...]]]:
    """File name -> (group, block, array shape) of a chunk of ``count`` clips."""
    files = {}
    for name in (manifest.groups if groups is None else groups):
        spec = manifest.groups[name]
        for block, (tokens, dim) in zip(spec.blocks, spec.token_shapes):
            files[_file_name(name, block)] = (name, block, (count, manifest.num_segments, tokens, dim))
    return files


def _file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CRC_BLOCK), b""):
            crc = zlib.crc32(block, crc)
    return crc


def _chunk_problems(chunk_dir: Path, expected: Mapping[str, tuple[str, int, tuple[int, ...]]], dtype: str, *,
                    checksums: bool) -> list[str]:
    """Why a chunk cannot be used (empty list: it is complete). Sizes, shapes and dtypes are always checked, the
    CRC-32 of every file only with ``checksums``."""
    done = chunk_dir / DONE_FILE
    if not done.is_file():
        return [f"{chunk_dir}: not complete (no {DONE_FILE})"]
    try:
        files = json.loads(done.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError(f"'files' is a {type(files).__name__}")
    except (OSError, ValueError, KeyError, TypeError) as error:
        return [f"{done}: unreadable ({error!r})"]
    problems = []
    for name, (_, _, shape) in expected.items():
        path = chunk_dir / name
        info = files.get(name)
        if not isinstance(info, dict):
            problems.append(f"{path}: not listed in {DONE_FILE}")
        elif info.get("shape") != list(shape) or info.get("dtype") != dtype:
            problems.append(f"{path}: holds {info.get('dtype')} {info.get('shape')}, expected {dtype} {list(shape)}")
        elif not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != info.get("bytes"):
            problems.append(f"{path}: {path.stat().st_size} bytes, {DONE_FILE} records {info.get('bytes')} "
                            f"(truncated or overwritten)")
        elif checksums and _file_crc32(path) != info.get("crc32"):
            problems.append(f"{path}: CRC-32 mismatch (contents changed since extraction)")
    return problems


def _to_storage(tap: torch.Tensor, dtype: str) -> torch.Tensor:
    """A tap in the storage dtype (bfloat16 as its int16 bit pattern), still on its device."""
    if dtype == "float32":
        return tap.float()
    if dtype == "float16":
        return tap.half()
    return tap.bfloat16().view(torch.int16)


def _from_storage(array: np.ndarray, dtype: str, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A stored array (any shape) -> tensor of ``out_dtype`` (copied, so the memory map is never handed out)."""
    if dtype == "bfloat16":
        return torch.from_numpy(np.array(array).view(np.int16)).view(torch.bfloat16).to(out_dtype)
    return torch.from_numpy(np.array(array)).to(out_dtype)


class _ChunkWriter:
    """Writes one chunk: ``*.partial`` files appended batch by batch (in clip order, so the CRC-32 of each file is
    computed on the fly from the bytes written), then renamed, then ``done.json``.

    Plain sequential writes rather than a writable memory map: about 2-3x faster on a CPU (no page faults, no
    ``msync``), and a full disk raises ``OSError`` instead of killing the process with SIGBUS.
    """

    def __init__(self, chunk_dir: Path, start: int, stop: int, manifest: FeatureManifest) -> None:
        if chunk_dir.exists():
            shutil.rmtree(chunk_dir)  # an unfinished or invalid earlier attempt
        chunk_dir.mkdir(parents=True)
        self.chunk_dir, self.start, self.stop, self.dtype = chunk_dir, start, stop, manifest.dtype
        self.filled = 0
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.handles: dict[str, Any] = {}
        self.crcs: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        storage = DTYPES[manifest.dtype]
        for name, (_, _, shape) in _expected_files(manifest, stop - start).items():
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(storage),
                                                          "fortran_order": False, "shape": shape})
            self.shapes[name] = shape
            self.handles[name] = open(chunk_dir / f"{name}.partial", "wb")  # noqa: SIM115 - closed in commit()
            self.handles[name].write(header.getvalue())
            self.crcs[name] = zlib.crc32(header.getvalue())
            self.sizes[name] = len(header.getvalue()) + int(np.prod(shape)) * storage.itemsize

    @property
    def full(self) -> bool:
        return self.start + self.filled == self.stop

    def write(self, rows: Mapping[str, np.ndarray]) -> None:
        """Append ``(b, T, N, D)`` arrays (one per file) of the next ``b`` clips."""
        for name, values in rows.items():
            data = memoryview(np.ascontiguousarray(values)).cast("B")
            self.handles[name].write(data)
            self.crcs[name] = zlib.crc32(data, self.crcs[name])
        self.filled += len(next(iter(rows.values())))

    def commit(self) -> int:
        """Close, check sizes, rename, write ``done.json``; returns the bytes written."""
        record: dict[str, Any] = {}
        for name, handle in self.handles.items():
            handle.close()
            partial = self.chunk_dir / f"{name}.partial"
            if partial.stat().st_size != self.sizes[name]:
                raise OSError(f"{partial}: wrote {partial.stat().st_size} bytes, expected {self.sizes[name]}")
            replace_durably(partial, self.chunk_dir / name)
            record[name] = {"bytes": self.sizes[name], "shape": list(self.shapes[name]), "dtype": self.dtype,
                            "crc32": self.crcs[name]}
        self.handles.clear()
        _write_json(self.chunk_dir / DONE_FILE, {"start": self.start, "stop": self.stop, "files": record})
        return sum(self.sizes.values())

    def abandon(self) -> None:
        """Close the files of an unfinished chunk (left as ``*.partial``, as a kill would leave them)."""
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()


class _ChunkSink:
    """Hands batches to a background thread that writes them into their chunks, in order.

    File writes and ``zlib.crc32`` release the GIL, so storing overlaps with the next batch's data loading and
    backbone forward. At most ``max_pending`` batches wait in the queue (bounded memory). An error in the thread is
    raised in the caller at the next :meth:`put` or at :meth:`close`.
    """

    def __init__(self, split_dir: Path, manifest: FeatureManifest, ranges: list[tuple[int, int]],
                 report: ExtractReport, max_pending: int = 4) -> None:
        self.split_dir, self.manifest, self.ranges, self.report = split_dir, manifest, ranges, report
        self.queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self.error: BaseException | None = None
        self.writer: _ChunkWriter | None = None
        self.thread = threading.Thread(target=self._run, name="feature-cache-writer", daemon=True)
        self.thread.start()

    def put(self, chunk: int, rows: Mapping[str, np.ndarray]) -> None:
        if self.error is not None:
            raise self.error
        tic = time.perf_counter()
        self.queue.put((chunk, rows))
        self.report.wait_seconds += time.perf_counter() - tic

    def _run(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            if self.error is None:  # after an error, only drain the queue
                try:
                    self._write(*job)
                except BaseException as error:  # noqa: BLE001 - handed to the caller
                    self.error = error

    def _write(self, chunk: int, rows: Mapping[str, np.ndarray]) -> None:
        tic = time.perf_counter()
        if self.writer is None:
            self.writer = _ChunkWriter(_chunk_dir(self.split_dir, chunk), *self.ranges[chunk], self.manifest)
        self.writer.write(rows)
        if self.writer.full:
            self.report.bytes_written += self.writer.commit()
            self.report.chunks_written += 1
            self.writer = None
        self.report.write_seconds += time.perf_counter() - tic

    def close(self, *, raise_errors: bool = True) -> None:
        """Wait until every queued batch is written (finished chunks are committed even after a failure)."""
        tic = time.perf_counter()
        self.queue.put(None)
        self.thread.join()
        self.report.wait_seconds += time.perf_counter() - tic
        if self.writer is not None:
            self.writer.abandon()
            self.writer = None
        if raise_errors and self.error is not None:
            raise self.error


def _storage_rows(taps: Any, manifest: FeatureManifest, indices: list[int]) -> dict[str, np.ndarray]:
    """Check what ``compute_taps`` returned for the clips ``indices`` and convert it to ``(b, T, N, D)`` storage
    arrays keyed by file name."""
    if not isinstance(taps, Mapping) or set(taps) != set(manifest.groups):
        got = sorted(taps) if isinstance(taps, Mapping) else type(taps).__name__
        raise ValueError(f"compute_taps must return a dict with the manifest's tap groups "
                         f"{sorted(manifest.groups)}, got {got}")
    count, segments = len(indices), manifest.num_segments
    rows = {}
    for group, spec in manifest.groups.items():
        tensors = list(taps[group])
        if len(tensors) != len(spec.blocks):
            raise ValueError(f"compute_taps returned {len(tensors)} tensor(s) for {group}, expected one per block "
                             f"{spec.blocks}")
        for block, (tokens, dim), tap in zip(spec.blocks, spec.token_shapes, tensors):
            if tuple(tap.shape) != (count * segments, tokens, dim):
                raise ValueError(f"{group} block {block}: expected taps of shape (B*T, N, D) = "
                                 f"({count}*{segments}, {tokens}, {dim}), got {tuple(tap.shape)}; the manifest does "
                                 f"not describe this backbone / input (check the blocks and the input size)")
            tap = tap.detach()
            peak = tap.abs().amax().item() if tap.numel() else 0.0  # one reduction: NaN, inf and overflow
            if not peak <= _LIMITS[manifest.dtype]:
                where = f"{group} block {block} of clips {indices[0]}..{indices[-1]}"
                if math.isfinite(peak):
                    raise ValueError(f"{where}: values up to {peak:.3g} overflow {manifest.dtype}; extract with "
                                     f"dtype bfloat16 or float32")
                raise ValueError(f"{where}: the backbone produced NaN or inf")
            stored = _to_storage(tap, manifest.dtype)
            array = stored.reshape(count, segments, tokens, dim).cpu().numpy()
            rows[_file_name(group, block)] = array.view(DTYPES[manifest.dtype])  # bfloat16: int16 -> uint16 bits
    return rows


def _prepare_store(out: Path, manifest: FeatureManifest) -> None:
    """Create ``out`` and its manifest, or check that an existing one describes the same taps."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST_FILE
    if not path.is_file():
        manifest.save(path)
        return
    existing = FeatureManifest.load(path)
    problems = existing.differences(manifest)
    problems += [f"groups: cache has {sorted(existing.groups)}, expected {sorted(manifest.groups)}"] \
        if set(existing.groups) != set(manifest.groups) else []
    if existing.chunk_size != manifest.chunk_size:
        problems.append(f"chunk_size: cache has {existing.chunk_size}, expected {manifest.chunk_size}")
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise ValueError(f"{out} already holds a feature cache for another setup:\n{listing}\nExtract into another "
                         f"directory (--out NEW_DIR), or delete {out} to replace it.")


def _mark_split_done(out: Path, split: str, num_items: int, num_chunks: int, seconds: float) -> None:
    _write_json(out / split / SPLIT_FILE, {"split": split, "num_items": num_items, "num_chunks": num_chunks,
                                           "completed": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                           "seconds": round(seconds, 2)})
    import fcntl

    # several processes may finish splits at once: one read-modify-write of the manifest at a time
    with open(out / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = FeatureManifest.load(out / MANIFEST_FILE)  # re-read: another split may have finished meanwhile
        if split not in manifest.splits:
            manifest.splits = sorted([*manifest.splits, split])
            manifest.save(out / MANIFEST_FILE)


def extract_features(dataset: Dataset, compute_taps: Callable[[Any], Mapping[str, Sequence[torch.Tensor]]],
                     out_dir: str | os.PathLike, manifest: FeatureManifest, *, split: str, batch_size: int = 8,
                     chunk_size: int | None = None, dtype: str | None = None, show_progress: bool = True,
                     num_workers: int = 0, collate_fn: Callable[[list[Any]], Any] | None = None,
                     verify_existing: bool = False, shard: tuple[int, int] = (0, 1)) -> ExtractReport:
    """Run the frozen backbones once over a split and store the taps of the selected blocks.

    Args:
        dataset: the task dataset of ``split``; clip ``i`` of the cache is ``dataset[i]``.
        compute_taps: ``batch -> {group: [Tensor (B*T, N_l, D_l) per block]}`` for a collated batch of ``B`` clips
            (rows ordered clip-major, as ``frames.flatten(0, 1)`` gives); called under ``torch.no_grad()``. Its
            groups and shapes must be the manifest's.
        out_dir: cache directory (created). An existing cache there must describe the same taps (else a
            ``ValueError``); its complete chunks are kept (resume), the others are computed.
        manifest: what the taps are (:class:`FeatureManifest`); its ``splits`` are ignored.
        split: split name (a directory of the cache).
        batch_size: clips per ``compute_taps`` call (batches never straddle two chunks).
        chunk_size, dtype: override the manifest's (``None``: keep them).
        show_progress: tqdm progress bar (clips).
        num_workers, collate_fn: DataLoader options (default collate by default).
        verify_existing: also recompute the CRC-32 of existing chunks and redo corrupt ones (otherwise a chunk is
            kept when its ``done.json`` exists and its files have the recorded sizes).
        shard: ``(rank, world size)``: this process computes the chunks ``rank, rank + world, ...`` only (several
            processes or machines extracting into one directory); whichever finds every chunk complete afterwards
            marks the split done.

    Returns:
        an :class:`ExtractReport` (throughput, bytes written, chunks skipped).

    Raises:
        ValueError: mismatched cache, bad split name, empty dataset, taps that do not match the manifest or
            overflow float16. OSError: not enough free disk space for the chunks left to write (checked first:
            better than failing hours later).
    """
    start_time = time.perf_counter()
    manifest = dataclasses.replace(manifest, chunk_size=chunk_size or manifest.chunk_size,
                                   dtype=dtype or manifest.dtype, splits=[])
    if not isinstance(split, str) or not _NAME.match(split):
        raise ValueError(f"split name {split!r} must use only letters, digits, '_', '.', '-' (it names a directory)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    num_items = len(dataset)
    if num_items == 0:
        raise ValueError(f"split {split!r} has no items: nothing to extract")
    out = Path(out_dir)
    _prepare_store(out, manifest)
    split_dir = out / split
    split_dir.mkdir(exist_ok=True)
    info_path = split_dir / SPLIT_FILE
    if info_path.is_file():
        previous = _read_json(info_path, "split record").get("num_items")
        if previous != num_items:
            raise ValueError(f"{info_path}: the cached split has {previous} clips but the dataset has {num_items}; "
                             f"extract into another directory")

    ranges = _chunk_ranges(num_items, manifest.chunk_size)
    report = ExtractReport(out_dir=out, split=split, num_items=num_items, num_chunks=len(ranges))
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world size) with 0 <= rank < world size, got {shard}")
    todo = []
    for chunk, (start, stop) in enumerate(ranges):
        if chunk % world != rank:
            continue
        problems = _chunk_problems(_chunk_dir(split_dir, chunk), _expected_files(manifest, stop - start),
                                   manifest.dtype, checksums=verify_existing)
        if problems:
            if (_chunk_dir(split_dir, chunk) / DONE_FILE).exists():
                _logger.warning("recomputing chunk %d of %s: %s", chunk, split, "; ".join(problems))
            todo.append(chunk)
    report.chunks_skipped = len(range(rank, len(ranges), world)) - len(todo)
    if todo:
        info_path.unlink(missing_ok=True)
        needed = sum(ranges[chunk][1] - ranges[chunk][0] for chunk in todo) * manifest.bytes_per_item()
        free = shutil.disk_usage(split_dir).free
        if needed > free:
            raise OSError(f"extracting {split!r} into {out} needs {needed / 1e9:.2f} GB more, only {free / 1e9:.2f} "
                          f"GB free: free space, choose another --out, or use a smaller dtype / fewer blocks")
        _extract_chunks(dataset, compute_taps, split_dir, manifest, ranges, todo, report, batch_size=batch_size,
                        show_progress=show_progress, num_workers=num_workers, collate_fn=collate_fn)
    report.seconds = time.perf_counter() - start_time
    others_left = [chunk for chunk, (start, stop) in enumerate(ranges) if chunk % world != rank and
                   _chunk_problems(_chunk_dir(split_dir, chunk), _expected_files(manifest, stop - start),
                                   manifest.dtype, checksums=False)] if world > 1 else []
    if others_left:
        _logger.info("%s: %d chunk(s) of other processes not complete yet", split, len(others_left))
    elif todo or not info_path.is_file():
        _mark_split_done(out, split, num_items, len(ranges), report.seconds)
    _logger.info(report.summary())
    return report


def _extract_chunks(dataset: Dataset, compute_taps: Callable[[Any], Any], split_dir: Path, manifest: FeatureManifest,
                    ranges: list[tuple[int, int]], todo: list[int], report: ExtractReport, *, batch_size: int,
                    show_progress: bool, num_workers: int, collate_fn: Callable[[list[Any]], Any] | None) -> None:
    batches = [(chunk, list(range(first, min(first + batch_size, ranges[chunk][1]))))
               for chunk in todo for first in range(ranges[chunk][0], ranges[chunk][1], batch_size)]
    loader = DataLoader(dataset, batch_sampler=[indices for _, indices in batches], num_workers=num_workers,
                        collate_fn=collate_fn or default_collate)

    progress = progress_bar(total=report.num_items, initial=report.num_items - sum(len(i) for _, i in batches),
                            desc=f"extract {split_dir.name}", unit="clip", show=show_progress)
    sink = _ChunkSink(split_dir, manifest, ranges, report)
    try:
        for (chunk, indices), batch in zip(batches, loader):
            tic = time.perf_counter()
            with torch.no_grad():
                rows = _storage_rows(compute_taps(batch), manifest, indices)
            report.compute_seconds += time.perf_counter() - tic
            sink.put(chunk, rows)
            report.items_computed += len(indices)
            progress.update(len(indices))
    except BaseException:
        sink.close(raise_errors=False)  # keep the chunks finished before the failure
        raise
    else:
        sink.close()
    finally:
        progress.close()


# ---------------------------------------------------------------------------------------------------------- reading
class FeatureCache(Dataset):
    """Random access to the taps of one split of a feature cache.

    Args:
        out_dir: the cache directory (holds ``manifest.json``).
        split: the split (its extraction must be complete).
        expected: the manifest the run expects; a cache built for another setup is refused with a ``ValueError``
            listing the differences (see :meth:`FeatureManifest.check_compatible`).
        groups: tap groups to read (default: those of ``expected``, else all).
        dtype: dtype of the tensors read back (float32 by default; ``torch.float16`` / ``torch.bfloat16`` halve
            what DataLoader workers pass to the main process, the model then casts on its device).

    ``cache[i]`` is ``{group: [Tensor (T, N_l, D_l) per block]}`` for clip ``i``. Chunk files are
    memory-mapped lazily on first use in each process (memory maps are not pickled: DataLoader workers reopen
    them). Opening a chunk checks its file sizes and headers; a truncated or unreadable file raises a
    ``ValueError`` naming it. :meth:`verify` recomputes the checksums.
    """

    def __init__(self, out_dir: str | os.PathLike, split: str, *, expected: FeatureManifest | None = None,
                 groups: Sequence[str] | None = None, dtype: torch.dtype = torch.float32) -> None:
        self.root = Path(out_dir)
        self.dtype = dtype
        self.manifest = FeatureManifest.load(self.root)
        if expected is not None:
            self.manifest.check_compatible(expected, source=f"the feature cache {self.root}")
        if groups is None:
            groups = list(expected.groups) if expected is not None else list(self.manifest.groups)
        missing = [name for name in groups if name not in self.manifest.groups]
        if missing:
            raise ValueError(f"feature cache {self.root} has no tap group(s) {missing}; it holds "
                             f"{sorted(self.manifest.groups)}")
        self.groups = list(groups)
        self.split = split
        self.split_dir = self.root / split
        info_path = self.split_dir / SPLIT_FILE
        if not info_path.is_file():
            done = len(list(self.split_dir.glob(f"chunk_*/{DONE_FILE}"))) if self.split_dir.is_dir() else 0
            raise ValueError(f"split {split!r} of the feature cache {self.root} is not complete ({done} chunk(s) "
                             f"done, no {info_path.name}): run the extraction again (molt extract), it resumes; "
                             f"complete splits: {self.manifest.splits or 'none'}")
        self.num_items = int(_read_json(info_path, "split record")["num_items"])
        self.ranges = _chunk_ranges(self.num_items, self.manifest.chunk_size)
        self._chunks: dict[int, dict[str, np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:  # memory maps are reopened in each worker
        state = dict(self.__dict__)
        state["_chunks"] = {}
        return state

    def __len__(self) -> int:
        return self.num_items

    def _expected(self, chunk: int) -> dict[str, tuple[str, int, tuple[int, ...]]]:
        start, stop = self.ranges[chunk]
        return _expected_files(self.manifest, stop - start, self.groups)

    def _open(self, chunk: int) -> dict[str, np.ndarray]:
        arrays = self._chunks.get(chunk)
        if arrays is not None:
            return arrays
        chunk_dir = _chunk_dir(self.split_dir, chunk)
        expected = self._expected(chunk)
        fix = "run the extraction again (molt extract), it recomputes that chunk"
        problems = _chunk_problems(chunk_dir, expected, self.manifest.dtype, checksums=False)
        if problems:
            raise ValueError(f"feature cache chunk unusable: {'; '.join(problems)}; {fix}")
        arrays = {}
        for name, (_, _, shape) in expected.items():
            path = chunk_dir / name
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError, EOFError) as error:
                raise ValueError(f"feature cache file {path} is unreadable ({error}); {fix}") from None
            if array.shape != shape or array.dtype != DTYPES[self.manifest.dtype]:
                raise ValueError(f"feature cache file {path} holds {array.dtype} {array.shape}, expected "
                                 f"{DTYPES[self.manifest.dtype]} {shape}; {fix}")
            arrays[name] = array
        self._chunks[chunk] = arrays
        return arrays

    def __getitem__(self, index: int) -> dict[str, list[torch.Tensor]]:
        if not -self.num_items <= index < self.num_items:
            raise IndexError(f"index {index} out of range for a cached split of {self.num_items} clips")
        index %= self.num_items
        chunk, offset = divmod(index, self.manifest.chunk_size)
        arrays = self._open(chunk)
        return {group: [_from_storage(arrays[_file_name(group, block)][offset], self.manifest.dtype, self.dtype)
                        for block in self.manifest.groups[group].blocks] for group in self.groups}

    def verify(self, *, repair: bool = False) -> list[str]:
        """Recompute every file's CRC-32 (all groups) and return one line per problem, naming the file.

        With ``repair=True`` the ``done.json`` of every bad chunk and the split's ``split.json`` are removed, so that
        the next extraction recomputes exactly those chunks.
        """
        problems = []
        for chunk, (start, stop) in enumerate(self.ranges):
            chunk_dir = _chunk_dir(self.split_dir, chunk)
            found = _chunk_problems(chunk_dir, _expected_files(self.manifest, stop - start), self.manifest.dtype,
                                    checksums=True)
            problems += found
            if found and repair:
                (chunk_dir / DONE_FILE).unlink(missing_ok=True)
                self._chunks.pop(chunk, None)
        if problems and repair:
            (self.split_dir / SPLIT_FILE).unlink(missing_ok=True)
        return problems


class CachedDataset(Dataset):
    """A task dataset whose items carry cached taps instead of media.

    Args:
        dataset: the task dataset of the split the cache was extracted from (same items, same order).
        cache: its :class:`FeatureCache`.
        targets_only: ``index -> item without media`` (default: ``dataset.item_without_media`` when the dataset has
            it, else ``dataset[index]``, which decodes the media only to drop them).
        media_keys: item keys replaced by the taps.
        positions: cache entry of each item (``None``: entry ``i`` for item ``i``), for a cache keyed by media.

    Items are the dataset's items without ``frames`` / ``audio``, plus one key per tap group holding a list of
    float32 ``(T, N_l, D_l)``; the default collate turns those into lists of ``(B, T, N_l, D_l)``. Other attributes
    (``task_options()``, ``num_segments``, ...) are the wrapped dataset's.
    """

    def __init__(self, dataset: Dataset, cache: FeatureCache, *,
                 targets_only: Callable[[int], Mapping[str, Any]] | None = None,
                 media_keys: Sequence[str] = MEDIA_KEYS, positions: Sequence[int] | None = None) -> None:
        entries = len(dataset) if positions is None else len(set(positions))
        if positions is not None and len(positions) != len(dataset):
            raise ValueError(f"expected one cache position per item ({len(dataset)}), got {len(positions)}")
        if entries != len(cache):
            raise ValueError(f"the dataset has {entries} {'items' if positions is None else 'videos'} but the "
                             f"feature cache {cache.root} (split {cache.split!r}) has {len(cache)}: it was "
                             f"extracted from other data; extract again")
        self.positions = None if positions is None else list(positions)
        self.dataset = dataset
        self.cache = cache
        self.targets_only = targets_only
        self.media_keys = tuple(media_keys)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.targets_only is not None:
            item = self.targets_only(index)
        elif callable(getattr(self.dataset, "item_without_media", None)):
            item = self.dataset.item_without_media(index)
        else:
            item = self.dataset[index]
        item = {key: value for key, value in item.items() if key not in self.media_keys}
        item.update(self.cache[index if self.positions is None else self.positions[index]])
        return item

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or "dataset" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["dataset"], name)
