"""Reading a feature cache: the taps of one split (:class:`FeatureCache`) and a task dataset that carries them.

Part of molt-av (Apache-2.0). :func:`cached_splits` opens a cache for training after checking that it was built for
the same task, data, backbones, weights, blocks and preprocessing as the run, and wraps each split's dataset
(:class:`CachedDataset`) so its items carry cached taps instead of frames and audio. Chunk files are memory-mapped
lazily in each process (DataLoader workers reopen them); a cache keyed by media maps every item to its video's
entry.

Typical use::

    train_set = CachedDataset(dataset, FeatureCache("cache/", "train", expected=manifest))
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .chunks import (chunk_directory, chunk_files, chunk_problems, chunk_ranges, first_non_finite_row,
                     from_storage, tap_file_name)
from .manifest import (DONE_FILE, DTYPES, MANIFEST_FILE, SPLIT_FILE, FeatureManifest, MediaView, expected_manifest,
                       read_json)

__all__ = ["CachedDataset", "FeatureCache", "cached_splits", "MEDIA_KEYS"]

MEDIA_KEYS = ("frames", "audio")


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
    ``ValueError`` naming it. :meth:`verify` recomputes the checksums (and looks for NaN and Inf).
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
        self.num_items = int(read_json(info_path, "split record")["num_items"])
        self.ranges = chunk_ranges(self.num_items, self.manifest.chunk_size)
        self._chunks: dict[int, dict[str, np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:  # memory maps are reopened in each worker
        state = dict(self.__dict__)
        state["_chunks"] = {}
        return state

    def __len__(self) -> int:
        return self.num_items

    def _expected(self, chunk: int) -> dict[str, tuple[str, int, tuple[int, ...]]]:
        start, stop = self.ranges[chunk]
        return chunk_files(self.manifest, stop - start, self.groups)

    def _open(self, chunk: int) -> dict[str, np.ndarray]:
        arrays = self._chunks.get(chunk)
        if arrays is not None:
            return arrays
        chunk_dir = chunk_directory(self.split_dir, chunk)
        expected = self._expected(chunk)
        fix = "run the extraction again (molt extract), it recomputes that chunk"
        problems = chunk_problems(chunk_dir, expected, self.manifest.dtype, checksums=False)
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
        return {group: [from_storage(arrays[tap_file_name(group, block)][offset], self.manifest.dtype, self.dtype)
                        for block in self.manifest.groups[group].blocks] for group in self.groups}

    def _with_non_finite_rows(self, chunk_dir: Path, files: Mapping[str, Any], start: int,
                              found: list[str]) -> list[str]:
        """``found`` (the problems of a chunk starting at clip ``start``) with the first row holding NaN or Inf of
        each of its ``files``, added to the file's CRC-32 line or as a line of its own."""
        lines = {line.split(": ", 1)[0]: line for line in found}
        for name in files:
            path = chunk_dir / name
            line = lines.get(str(path))
            if line is not None and "CRC-32" not in line:
                continue            # missing, truncated or of another shape: nothing to scan
            try:
                row = first_non_finite_row(path, self.manifest.dtype)
            except (OSError, ValueError, EOFError):
                continue            # unreadable: reported by the checks of chunk_problems
            if row is not None:
                where = f"row {row} (clip {start + row} of split {self.split!r}) holds NaN or Inf"
                lines[str(path)] = f"{line}; {where}" if line else f"{path}: {where}"
        return list(lines.values())

    def verify(self, *, repair: bool = False, values: bool = False) -> list[str]:
        """Recompute every file's CRC-32 (all groups) and return one line per problem, naming the file. With
        ``values=True`` also look for NaN and Inf, naming the file and the first row (clip) that holds one.

        With ``repair=True`` the ``done.json`` of every bad chunk and the split's ``split.json`` are removed, so that
        the next extraction recomputes exactly those chunks.
        """
        problems = []
        for chunk, (start, stop) in enumerate(self.ranges):
            chunk_dir = chunk_directory(self.split_dir, chunk)
            files = chunk_files(self.manifest, stop - start)
            found = chunk_problems(chunk_dir, files, self.manifest.dtype, checksums=True)
            if values:
                found = self._with_non_finite_rows(chunk_dir, files, start, found)
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


def cached_splits(model: Any, datasets: Mapping[str, Any], features: str | os.PathLike, *, task: str,
                  setting: str | None, prepared: str | os.PathLike, verify: bool = True) -> dict[str, CachedDataset]:
    """Wrap each split's dataset so its items carry cached taps instead of frames and audio.

    Raises a ``ValueError`` listing every difference when the cache was built for another setup. With ``verify``
    (the default) every file is checked first, once: its CRC-32 against the one recorded at extraction, and its
    values for NaN and Inf; the first problem raises a ``ValueError`` naming the file (and the row). This reads
    the whole cache once, at about the speed of the disk (or of the page cache): a full check when the cache is
    opened rather than per chunk on first read, because with DataLoader workers each worker would check every
    chunk it reads again.
    """
    cache_dir = Path(features)
    manifest_file = cache_dir / MANIFEST_FILE
    if not manifest_file.is_file():
        raise FileNotFoundError(f"--features {cache_dir}: no {MANIFEST_FILE} there; build the cache with "
                                f"`molt extract {task} --data ... --out {cache_dir}`")
    first = next(iter(datasets.values()))
    stored = FeatureManifest.load(manifest_file)
    expected = expected_manifest(model, task=task, setting=setting, prepared=prepared, dataset=first,
                                 dtype=stored.dtype)
    wrapped = {}
    for split, dataset in datasets.items():
        cache = FeatureCache(cache_dir, split, expected=expected, groups=list(expected.groups))
        if verify:
            problems = cache.verify(values=True)
            if problems:
                more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
                chunk = Path(problems[0].split(": ", 1)[0]).parent
                fix = (f"extract it again with `molt extract {task} --data ... --out {cache_dir} --verify` (it "
                       f"recomputes the damaged chunks)") if "NaN" not in problems[0] or "CRC-32" in problems[0] else \
                    (f"the extraction wrote these values: delete {chunk} and run `molt extract {task} --data ... "
                     f"--out {cache_dir}` again (with --dtype float32 if float16 overflowed)")
                raise ValueError(f"feature cache {cache_dir}: {problems[0]}{more}; {fix}")
        positions = MediaView(dataset).positions() if expected.keyed_by == "media" else None
        wrapped[split] = CachedDataset(dataset, cache, positions=positions)   # checks the number of entries
    return wrapped
