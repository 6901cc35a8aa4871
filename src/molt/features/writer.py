"""Filling a feature cache: run frozen backbones once over a split and store their taps, resumably.

Part of molt-av (Apache-2.0). :func:`extract_splits` is the entry point for a model (``molt extract`` calls it):
it runs the model's frozen backbones once per split and stores what the model reads from them (the method's taps
and, for dense heads, the visual stage features), one backbone pass per video when items share videos
(:class:`~molt.features.manifest.MediaView`). :func:`extract_features` is the loop underneath, for any
``compute_taps`` function.

**Writing costs little.** Files are written sequentially (plain appends, faster than a writable memory map) by a
background thread, overlapped with the next batch's loading and forward pass (file writes and ``zlib`` release the
GIL); :class:`ExtractReport` says how long extraction waited for it. A kill loses at most the unfinished chunk
(:mod:`.chunks`); the same call run again keeps the complete chunks and computes the others.

**Several processes.** ``shard=(rank, world size)`` computes only the chunks ``rank, rank + world, ...``; nothing
is exchanged between processes, and whichever finds every chunk complete afterwards marks the split done.

Typical use::

    manifest = FeatureManifest(task="ave", num_segments=10, data_fingerprint=data_fingerprint(prepared_dir),
                               groups={"visual_taps": TapGroupSpec.from_backbone(visual, "late"),
                                       "audio_taps": TapGroupSpec.from_backbone(audio, "late")})
    extract_features(dataset, compute_taps, "cache/", manifest, split="train")   # resumable
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..data.files import atomic_json, check_free_space, storage_error
from ..progress import progress_bar
from .chunks import ChunkWriter, chunk_directory, chunk_files, chunk_problems, chunk_ranges, tap_file_name, to_storage
from .manifest import (DONE_FILE, DTYPES, MANIFEST_FILE, SAFE_NAME, SPLIT_FILE, FeatureManifest, MediaView,
                       expected_manifest, read_json)

__all__ = ["ExtractReport", "extract_features", "extract_splits"]

_logger = logging.getLogger(__name__)

_SPACE_FIX = ("free space, or extract into another directory (--out DIR), or store less (--dtype float16, fewer "
              "--blocks); the chunks already complete are kept")
_LIMITS = {"float16": torch.finfo(torch.float16).max, "bfloat16": torch.finfo(torch.bfloat16).max,
           "float32": torch.finfo(torch.float32).max}


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
        self.writer: ChunkWriter | None = None
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
            self.writer = ChunkWriter(chunk_directory(self.split_dir, chunk), *self.ranges[chunk], self.manifest)
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
        if self.writer is not None:  # the unfinished chunk of a failed or interrupted run: nothing of it is kept
            self.writer.abandon()
            for partial in self.writer.chunk_dir.glob("*.partial"):
                partial.unlink()
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
            stored = to_storage(tap, manifest.dtype)
            array = stored.reshape(count, segments, tokens, dim).cpu().numpy()
            rows[tap_file_name(group, block)] = array.view(DTYPES[manifest.dtype])  # bfloat16: int16 -> uint16 bits
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
    atomic_json(out / split / SPLIT_FILE, {"split": split, "num_items": num_items, "num_chunks": num_chunks,
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
            overflow float16. :class:`~molt.data.files.StorageError` (a ``ValueError``): not enough free disk space
            for the chunks left to write (checked first: better than failing hours later), a disk that fills up
            meanwhile or a read-only directory; the unfinished chunk's files are removed, finished chunks kept.
    """
    start_time = time.perf_counter()
    manifest = dataclasses.replace(manifest, chunk_size=chunk_size or manifest.chunk_size,
                                   dtype=dtype or manifest.dtype, splits=[])
    if not isinstance(split, str) or not SAFE_NAME.match(split):
        raise ValueError(f"split name {split!r} must use only letters, digits, '_', '.', '-' (it names a directory)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    num_items = len(dataset)
    if num_items == 0:
        raise ValueError(f"split {split!r} has no items: nothing to extract")
    out = Path(out_dir)
    split_dir = out / split
    try:
        _prepare_store(out, manifest)
        split_dir.mkdir(exist_ok=True)
    except OSError as error:
        place = next((folder for folder in (out, *out.parents) if folder.exists()), out)
        converted = storage_error(error, place, what=f"cannot write the feature cache {out}", fix=_SPACE_FIX)
        if converted is None:
            raise
        raise converted from None
    info_path = split_dir / SPLIT_FILE
    if info_path.is_file():
        previous = read_json(info_path, "split record").get("num_items")
        if previous != num_items:
            raise ValueError(f"{info_path}: the cached split has {previous} clips but the dataset has {num_items}; "
                             f"extract into another directory")

    ranges = chunk_ranges(num_items, manifest.chunk_size)
    report = ExtractReport(out_dir=out, split=split, num_items=num_items, num_chunks=len(ranges))
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world size) with 0 <= rank < world size, got {shard}")
    todo = []
    for chunk, (start, stop) in enumerate(ranges):
        if chunk % world != rank:
            continue
        problems = chunk_problems(chunk_directory(split_dir, chunk), chunk_files(manifest, stop - start),
                                  manifest.dtype, checksums=verify_existing)
        if problems:
            if (chunk_directory(split_dir, chunk) / DONE_FILE).exists():
                _logger.warning("recomputing chunk %d of %s: %s", chunk, split, "; ".join(problems))
            todo.append(chunk)
    report.chunks_skipped = len(range(rank, len(ranges), world)) - len(todo)
    if todo:
        info_path.unlink(missing_ok=True)
        needed = sum(ranges[chunk][1] - ranges[chunk][0] for chunk in todo) * manifest.bytes_per_item()
        check_free_space(split_dir, needed, what=f"extracting split {split!r}", fix=_SPACE_FIX)
        try:
            _extract_chunks(dataset, compute_taps, split_dir, manifest, ranges, todo, report, batch_size=batch_size,
                            show_progress=show_progress, num_workers=num_workers, collate_fn=collate_fn)
        except OSError as error:
            converted = storage_error(error, split_dir, what=f"extracting split {split!r} failed", fix=_SPACE_FIX)
            if converted is None:
                raise
            raise converted from None
    report.seconds = time.perf_counter() - start_time
    others_left = [chunk for chunk, (start, stop) in enumerate(ranges) if chunk % world != rank and
                   chunk_problems(chunk_directory(split_dir, chunk), chunk_files(manifest, stop - start),
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


def extract_splits(model: Any, datasets: Mapping[str, Any], out_dir: str | os.PathLike, *, task: str,
                   setting: str | None, prepared: str | os.PathLike, dtype: str = "float16", batch_size: int = 8,
                   chunk_size: int = 256, device: str | None = None, verify_existing: bool = False,
                   show_progress: bool = True, shard: tuple[int, int] = (0, 1)) -> dict[str, ExtractReport]:
    """Run ``model``'s frozen backbones once over each dataset (split name -> dataset) and store the taps.

    Resumable: complete chunks of an earlier (killed) run are kept; a cache built for another setup is refused.
    ``shard=(rank, world size)`` computes only this process's share of the chunks (see
    :func:`extract_features`).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.eval().to(device)
    first = next(iter(datasets.values()))
    manifest = expected_manifest(model, task=task, setting=setting, prepared=prepared, dataset=first, dtype=dtype)
    manifest.chunk_size = chunk_size

    def compute(batch: dict[str, Any]) -> dict[str, list[torch.Tensor]]:
        inputs = model.compute_inputs({"frames": batch["frames"].to(device), "audio": batch["audio"].to(device)})
        return {key: inputs[key] for key in manifest.groups}

    reports = {}
    for split, dataset in datasets.items():
        source = MediaView(dataset) if manifest.keyed_by == "media" else dataset
        with torch.no_grad():
            reports[split] = extract_features(source, compute, out_dir, manifest, split=split,
                                              batch_size=batch_size, show_progress=show_progress,
                                              verify_existing=verify_existing, shard=shard)
        _logger.info("%s: %s", split, reports[split].summary())
    return reports
