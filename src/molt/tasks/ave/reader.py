"""Reader of the AVE annotation files (Tian et al., ECCV 2018) and the per-segment label matrices.

Part of molt-av (Apache-2.0), an implementation of "Mixture of Layer-Wise Tokens for Efficient Audio-Visual
Learning" (MoLT).

Files (all ``&``-separated, one record per line: ``Category&VideoID&Quality&StartTime&EndTime``):
``Annotations.txt`` (with or without the header line ``Category&VideoID&Quality&StartTime&EndTime``),
``trainSet.txt``, ``valSet.txt``, ``testSet.txt`` (no header) and optionally ``categories.txt`` (one name per
line). Without ``categories.txt`` the categories are numbered in order of first appearance in
``Annotations.txt``, which is the order of the official ``categories.txt``.

Labels: a clip has ``T = 10`` one-second segments; the label matrix is ``(T, C + 1)`` with the ``C`` event
categories followed by *background* at index ``C`` (28 for AVE). Segment ``t`` is in an event
``[StartTime, EndTime)`` when ``StartTime <= t < EndTime``.

Quirks of the real files and how they are handled (on purpose):

* **Records are lines.** ``records(split)`` returns one :class:`AVERecord` per line of the split file, so the
  split sizes are the official 3,339 / 402 / 402, as in the peers' per-line indexing. :meth:`AVEAnnotations.labels`
  of a *record* is one-hot per segment (that line's event, background elsewhere).
* **Several events per video.** 45 ids carry more than one line (4,143 lines, 4,097 ids); in every such case
  the lines give different categories over the *same* window (e.g. Banjo and Mandolin on 0-10). A one-hot
  target cannot hold both, so per-line records keep one category each; :meth:`AVEAnnotations.labels` of a
  *video id* merges the lines of that id in the split into a **multi-hot** matrix (every annotated category is a
  correct answer for those segments), which a metric may use to accept any annotated event.
* **Zero-length event.** ``Church bell&VWi2ENBuTbw&good&0&0`` (trainSet) has ``StartTime == EndTime``: it is
  kept (so the split keeps its official size) and labelled background on all segments; a warning is logged.
* **Ids in two splits.** 10 ids are in train and val and 8 in train and test, each time with another category
  (the other event of a multi-event video). The official splits are kept as they are; an INFO message counts
  them. Labels merged by video id only merge lines *within* one split, so no test label leaks into training.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ...data.files import LINE_FIX, check_name, read_lines, read_names

__all__ = ["AVERecord", "AVEAnnotations", "HEADER", "SPLIT_FILES", "read_records", "label_matrix"]

_logger = logging.getLogger(__name__)

HEADER = "Category&VideoID&Quality&StartTime&EndTime"
SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
ANNOTATIONS_FILE = "Annotations.txt"
CATEGORIES_FILE = "categories.txt"


@dataclass(frozen=True)
class AVERecord:
    """One annotation line.

    Attributes:
        category: event category name (may contain spaces, commas, parentheses).
        video_id: YouTube id (11 characters in AVE).
        quality: quality field (always ``"good"`` in AVE).
        start: first event segment (whole seconds).
        end: end of the event, exclusive (whole seconds); ``start == end`` is an empty event.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` for a line of ``Annotations.txt``.
        line: 1-based line number in its file.
    """

    category: str
    video_id: str
    quality: str
    start: int
    end: int
    split: str | None
    line: int


def read_records(path: str | os.PathLike, split: str | None = None, *, num_segments: int = 10) -> list[AVERecord]:
    """Parse one AVE annotation file (header line optional; blank lines ignored).

    Raises:
        ValueError: a malformed line (wrong field count, non-integer or out-of-range times, a video id that is not
            a plain file name), naming the file and line; a file that is not UTF-8 (a byte-order mark and Windows
            line endings are fine).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"AVE annotation file not found: {path}")
    records = []
    for number, text in enumerate(read_lines(path, what="AVE annotation file"), start=1):
        if not text.strip():
            continue
        if number == 1 and text.strip() == HEADER:
            continue
        fields = text.split("&")
        if len(fields) != 5:
            raise ValueError(f"{path}:{number}: expected 5 '&'-separated fields "
                             f"({HEADER}), got {len(fields)}: {text!r}; {LINE_FIX}")
        category, video_id, quality, start_text, end_text = (field.strip() for field in fields)
        try:
            start, end = int(start_text), int(end_text)
        except ValueError:
            raise ValueError(f"{path}:{number}: expected whole-second StartTime and EndTime, got "
                             f"{start_text!r} and {end_text!r}; {LINE_FIX}") from None
        if not 0 <= start <= end <= num_segments:
            raise ValueError(f"{path}:{number}: expected 0 <= StartTime <= EndTime <= {num_segments}, got "
                             f"{start} and {end}; {LINE_FIX}")
        if not category or not video_id:
            raise ValueError(f"{path}:{number}: empty category or video id: {text!r}; {LINE_FIX}")
        check_name(video_id, f"{path}:{number}", "VideoID")
        records.append(AVERecord(category, video_id, quality, start, end, split, number))
    return records


def label_matrix(records: Iterable[AVERecord], categories: Sequence[str] | dict[str, int], *,
                 num_segments: int = 10) -> np.ndarray:
    """Label matrix ``(num_segments, C + 1)`` float32 of the events in ``records`` (background at index ``C``).

    One record gives a one-hot matrix; several records of the same video are merged (a segment inside several
    events is positive for each of their categories). Segments outside every event are background.
    """
    index = categories if isinstance(categories, dict) else {name: i for i, name in enumerate(categories)}
    num_classes = len(index)
    labels = np.zeros((num_segments, num_classes + 1), dtype=np.float32)
    for record in records:
        if record.category not in index:
            raise ValueError(f"unknown category {record.category!r} for video {record.video_id} "
                             f"(known: {len(index)} categories)")
        labels[record.start:record.end, index[record.category]] = 1.0
    labels[labels[:, :num_classes].sum(axis=1) == 0, num_classes] = 1.0
    return labels


class AVEAnnotations:
    """The AVE annotation files of a dataset root.

    Args:
        annotations: records of ``Annotations.txt``.
        splits: records per split name.
        categories: category names; index ``len(categories)`` is background.
        num_segments: segments per clip.

    Use :meth:`from_dir` to read a directory.
    """

    def __init__(self, *, annotations: list[AVERecord], splits: dict[str, list[AVERecord]],
                 categories: Sequence[str], num_segments: int = 10) -> None:
        self.annotations = list(annotations)
        self.splits = {name: list(records) for name, records in splits.items()}
        self.categories = list(categories)
        self.num_segments = num_segments
        self.category_index = {name: i for i, name in enumerate(self.categories)}
        if len(self.category_index) != len(self.categories):
            raise ValueError(f"duplicate category names in {self.categories}")
        for record in self.annotations + [r for records in self.splits.values() for r in records]:
            if record.category not in self.category_index:
                raise ValueError(f"category {record.category!r} (video {record.video_id}, line {record.line}) is "
                                 f"not among the {len(self.categories)} categories")
        self._by_video: dict[str | None, dict[str, list[AVERecord]]] = {}
        for split, records in [(None, self.annotations), *self.splits.items()]:
            grouped: dict[str, list[AVERecord]] = {}
            for record in records:
                grouped.setdefault(record.video_id, []).append(record)
            self._by_video[split] = grouped

    @classmethod
    def from_dir(cls, root: str | os.PathLike, *, num_segments: int = 10) -> "AVEAnnotations":
        """Read ``Annotations.txt``, the split files that exist and ``categories.txt`` (if present) in ``root``."""
        root = Path(root)
        annotations_path = root / ANNOTATIONS_FILE
        if not annotations_path.is_file():
            raise FileNotFoundError(f"{annotations_path} not found: expected an AVE root holding {ANNOTATIONS_FILE}"
                                    f" and {', '.join(SPLIT_FILES.values())}")
        annotations = read_records(annotations_path, num_segments=num_segments)
        splits = {split: read_records(root / name, split, num_segments=num_segments)
                  for split, name in SPLIT_FILES.items() if (root / name).is_file()}
        if not splits:
            raise FileNotFoundError(f"no split file ({', '.join(SPLIT_FILES.values())}) in {root}")
        categories_path = root / CATEGORIES_FILE
        if categories_path.is_file():
            categories = read_names(categories_path, what="categories file")
        else:
            categories = list(dict.fromkeys(record.category for record in annotations))
        if not categories:
            raise ValueError(f"{annotations_path}: no annotation line; expected one line per event "
                             f"({HEADER})")
        known = set(categories)
        for split, records in [(None, annotations), *splits.items()]:
            path = root / (SPLIT_FILES[split] if split else ANNOTATIONS_FILE)
            for record in records:
                if record.category not in known:
                    where = CATEGORIES_FILE if categories_path.is_file() else ANNOTATIONS_FILE
                    raise ValueError(f"{path}:{record.line}: unknown category {record.category!r} (video "
                                     f"{record.video_id}); it is not among the {len(categories)} categories of "
                                     f"{root / where}: correct the line or add the category there")
        result = cls(annotations=annotations, splits=splits, categories=categories, num_segments=num_segments)
        result._log_quirks(root)
        return result

    def _log_quirks(self, root: Path) -> None:
        for split, records in self.splits.items():
            if not records:
                _logger.warning("%s: %s holds no line: the %s split is empty", root, SPLIT_FILES[split], split)
        for split, records in self.splits.items():
            for record in records:
                if record.start == record.end:
                    _logger.warning("%s: %s line %d (%s, %s) has StartTime == EndTime == %d: kept, labelled "
                                    "background on every segment", root, SPLIT_FILES[split], record.line,
                                    record.category, record.video_id, record.start)
        names = list(self.splits)
        for i, first in enumerate(names):
            for second in names[i + 1:]:
                shared = set(self._by_video[first]) & set(self._by_video[second])
                if shared:
                    _logger.info("%s: %d video id(s) are in both %s and %s (official splits kept)", root,
                                 len(shared), first, second)

    @property
    def num_classes(self) -> int:
        """Number of event categories ``C`` (background not counted)."""
        return len(self.categories)

    @property
    def background_index(self) -> int:
        return len(self.categories)

    def records(self, split: str | None = None) -> list[AVERecord]:
        """Records of ``split`` (``"train"``, ``"val"``, ``"test"``), or of ``Annotations.txt`` for ``None``."""
        if split is None:
            return list(self.annotations)
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; available: {sorted(self.splits)}")
        return list(self.splits[split])

    def video_ids(self, split: str | None = None) -> list[str]:
        """Distinct video ids of ``split`` in order of first appearance."""
        return list(dict.fromkeys(record.video_id for record in self.records(split)))

    def labels(self, item: AVERecord | str, split: str | None = None) -> np.ndarray:
        """Label matrix ``(T, C + 1)`` float32.

        Args:
            item: a record (one-hot labels of that line) or a video id (all lines of that id in ``split``
                merged, multi-hot where events of several categories overlap).
            split: for a video id, the split whose lines are merged; ``None`` uses ``Annotations.txt``.
        """
        if isinstance(item, AVERecord):
            return label_matrix([item], self.category_index, num_segments=self.num_segments)
        if split is not None and split not in self.splits:
            raise ValueError(f"unknown split {split!r}; available: {sorted(self.splits)}")
        records = self._by_video[split].get(item)
        if not records:
            where = f"split {split!r}" if split else ANNOTATIONS_FILE
            raise KeyError(f"video id {item!r} is not in {where}")
        return label_matrix(records, self.category_index, num_segments=self.num_segments)
