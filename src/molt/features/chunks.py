"""Chunk files of a feature cache: names, ranges, integrity checks, storage dtypes, and the writer of one chunk.

Part of molt-av (Apache-2.0). A split of a cache (layout in :mod:`.manifest`) is a directory of chunks of
``chunk_size`` clips; a chunk is one ``.npy`` file per tap group and block, ``(n, T, N_l, D_l)`` in the storage
dtype, plus ``done.json`` written last.

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
* **Corruption is detected and named.** Every file's size and CRC-32 (``zlib``, computed while writing) are in
  ``done.json``: opening a chunk checks sizes and headers (:func:`chunk_problems`; a truncated file raises a
  ``ValueError`` naming it) and :meth:`~molt.features.reader.FeatureCache.verify` recomputes the checksums.
"""
from __future__ import annotations

import io
import json
import shutil
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.files import atomic_json, replace_durably
from .manifest import DONE_FILE, DTYPES, FeatureManifest

__all__ = ["ChunkWriter", "chunk_directory", "chunk_files", "chunk_problems", "chunk_ranges", "file_crc32",
           "first_non_finite_row", "from_storage", "tap_file_name", "to_storage", "CRC_BLOCK"]

CRC_BLOCK = 1 << 22  # bytes read at a time when checksumming a file


def tap_file_name(group: str, block: int) -> str:
    """File of block ``block`` of tap group ``group`` in a chunk (``visual_taps_22.npy``)."""
    return f"{group}_{block}.npy"


def chunk_directory(split_dir: Path, chunk: int) -> Path:
    """Directory of chunk ``chunk`` of a split (``chunk_00003``)."""
    return split_dir / f"chunk_{chunk:05d}"


def chunk_ranges(num_items: int, chunk_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` item range of every chunk of a split of ``num_items`` items."""
    return [(start, min(start + chunk_size, num_items)) for start in range(0, num_items, chunk_size)]


def chunk_files(manifest: FeatureManifest, count: int,
                groups: Sequence[str] | None = None) -> dict[str, tuple[str, int, tuple[int, ...]]]:
    """File name -> (group, block, array shape) of a chunk of ``count`` clips."""
    files = {}
    for name in (manifest.groups if groups is None else groups):
        spec = manifest.groups[name]
        for block, (tokens, dim) in zip(spec.blocks, spec.token_shapes):
            files[tap_file_name(name, block)] = (name, block, (count, manifest.num_segments, tokens, dim))
    return files


def file_crc32(path: Path) -> int:
    """CRC-32 of a whole file, read :data:`CRC_BLOCK` bytes at a time."""
    crc = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CRC_BLOCK), b""):
            crc = zlib.crc32(block, crc)
    return crc


#: storage dtype -> (unsigned view, exponent mask): a value is NaN or Inf when all its exponent bits are set
_EXPONENT_BITS = {"float16": (np.uint16, 0x7C00), "bfloat16": (np.uint16, 0x7F80), "float32": (np.uint32, 0x7F800000)}


def first_non_finite_row(path: Path, dtype: str) -> int | None:
    """Index of the first row (clip of the chunk) of a chunk file holding NaN or Inf, ``None`` when every value is
    finite. Reads the file by slices of rows of about :data:`CRC_BLOCK` bytes and tests the bit patterns (all
    exponent bits set), several times faster than ``numpy.isfinite`` on float16."""
    array = np.load(path, mmap_mode="r")
    if array.ndim == 0 or not len(array):
        return None
    unsigned, mask = _EXPONENT_BITS[dtype]
    step = max(1, CRC_BLOCK // max(array[0].nbytes, 1))
    for start in range(0, len(array), step):
        rows = np.asarray(array[start:start + step]).view(unsigned).reshape(min(step, len(array) - start), -1)
        found = np.flatnonzero(((rows & unsigned(mask)) == unsigned(mask)).any(axis=1))
        if len(found):
            return start + int(found[0])
    return None


def chunk_problems(chunk_dir: Path, expected: Mapping[str, tuple[str, int, tuple[int, ...]]], dtype: str, *,
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
        elif checksums and file_crc32(path) != info.get("crc32"):
            problems.append(f"{path}: CRC-32 mismatch (contents changed since extraction)")
    return problems


def to_storage(tap: torch.Tensor, dtype: str) -> torch.Tensor:
    """A tap in the storage dtype (bfloat16 as its int16 bit pattern), still on its device."""
    if dtype == "float32":
        return tap.float()
    if dtype == "float16":
        return tap.half()
    return tap.bfloat16().view(torch.int16)


def from_storage(array: np.ndarray, dtype: str, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A stored array (any shape) -> tensor of ``out_dtype`` (copied, so the memory map is never handed out)."""
    if dtype == "bfloat16":
        return torch.from_numpy(np.array(array).view(np.int16)).view(torch.bfloat16).to(out_dtype)
    return torch.from_numpy(np.array(array)).to(out_dtype)


class ChunkWriter:
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
        for name, (_, _, shape) in chunk_files(manifest, stop - start).items():
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
        atomic_json(self.chunk_dir / DONE_FILE, {"start": self.start, "stop": self.stop, "files": record})
        return sum(self.sizes.values())

    def abandon(self) -> None:
        """Close the files of an unfinished chunk (left as ``*.partial``, as a kill would leave them)."""
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()
