"""Reader of the LLP annotation files (audio-visual video parsing, AVVP) and their label matrices.

Part of molt-av (Apache-2.0), an implementation of "Mixture of Layer-Wise Tokens for Efficient Audio-Visual
Learning" (MoLT); AVVP is one of the tasks Mettle reports on.

Data set: *Look, Listen and Parse* (LLP; Tian, Li and Xu, "Unified Multisensory Perception: Weakly-Supervised
Audio-Visual Video Parsing", ECCV 2020): 11,849 YouTube clips of 10 s, 25 event categories, split into
10,000 train / 649 val / 1,200 test clips. Training clips carry only *weak* (video-level) labels; val and test
clips also carry segment-level labels, separately for what is **heard** (audio events) and what is **seen**
(visual events), on ``T = 10`` one-second segments.

Files (as in the authors' repository YapengTian/AVVP-ECCV20, directory ``data/``), all tab-separated with a
header line:

* ``AVVP_train.csv``, ``AVVP_val_pd.csv``, ``AVVP_test_pd.csv``: columns ``filename``, ``event_labels``; the
  labels of a clip are comma-separated category names (e.g. ``Speech,Dog``). ``AVVP_dataset_full.csv`` has
  the same columns for every clip and is not read here.
* ``AVVP_eval_audio.csv``, ``AVVP_eval_visual.csv``: columns ``filename``, ``onset``, ``offset``,
  ``event_labels`` (in that order in the real files; columns are looked up by name here), one line per event:
  one category, whole-second ``onset`` and ``offset`` (exclusive) in ``0..10``. A clip has as many lines as
  events, and none for a modality where nothing of the 25 categories happens. Segment ``t`` of the clip is
  positive for the line's category when ``onset <= t < offset``.
* ``filename`` is ``{YouTube id}_{start}_{end}`` with the clip's start and end time in the source video
  (e.g. ``BjCEufrlXm4_20_30``); five training clips have fractional times (``AP0061o0Nvk_101.8_111.8``, line
  3,274 of ``AVVP_train.csv``), so both are read as floats. Ids may contain ``_`` and ``-``
  (``J_Z8OiW9z_E_430_440``), so the id is what precedes the last two ``_``-separated fields; in every file of the
  release that is the first 11 characters, which is what the authors' loaders take (a test checks all 11,849).
  The authors' download script stores each trimmed 10-s clip as ``LLP_dataset/video/{YouTube id}.mp4`` beside the
  csv files.

Categories, in the order of the authors' label encoding (index = position): Speech, Car, Cheering, Dog, Cat,
Frying_(food), Basketball_bounce, Fire_alarm, Chainsaw, Cello, Banjo, Singing, Chicken_rooster, Violin_fiddle,
Vacuum_cleaner, Baby_laughter, Accordion, Lawn_mower, Motorcycle, Helicopter, Acoustic_guitar,
Telephone_bell_ringing, Baby_cry_infant_cry, Blender, Clapping (:data:`LLP_CATEGORIES`). A ``categories.txt``
(one name per line) beside the csv files overrides them; the synthetic generator writes one.

Quirks of the real files and how they are handled (on purpose):

* **Empty events.** Some eval lines have ``onset == offset`` (e.g. ``H5WcJwyjxIg_2_12 0 0``, ``... 9 9``) and one
  has ``onset > offset`` (``8DF2PxdT5tE_390_400 9 0 Cheering``, line 3,770 of ``AVVP_eval_audio.csv``, a val
  clip); the official evaluation (``eval_metrics.py``) fills the slice ``onset:offset``, i.e. nothing. They are
  kept and mark no segment; lines with ``onset > offset`` are logged once per file with their line numbers.
* **Repeated lines and overlapping events** of one category (the same line twice, or ``0-2`` and ``2-6``) just
  set the same segments again (a union).
* **Eval lines of unknown clips.** The eval files hold lines whose ``filename`` is in neither
  ``AVVP_val_pd.csv`` nor ``AVVP_test_pd.csv`` (e.g. ``P7x4FV4lg_570_580``, whose id has 9 characters). The
  official evaluation looks eval lines up by the full filename of each val/test clip, so they are never used;
  here too (their number is logged).
* **Repeated weak labels** on one line (``Clapping,Clapping`` in ``AVVP_test_pd.csv``) count once.
* A weak label may have no segment-level line (a category heard or seen too briefly to be annotated), and a
  clip of val/test without any eval line has all-negative segment labels, as in the official evaluation.

Label matrices: :meth:`LLPAnnotations.weak_labels` ``(C,)`` multi-hot and :meth:`LLPAnnotations.segment_labels`
``(T, C)`` per modality (float32 0/1). Segment labels exist only when both eval files are present; they are
then defined for every val and test clip (see :meth:`LLPAnnotations.has_segment_labels`), never for train.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ...data.files import LINE_FIX, check_name, read_lines, read_names

__all__ = ["LLP_CATEGORIES", "SPLIT_FILES", "EVAL_FILES", "CATEGORIES_FILE", "VIDEO_SUBDIR", "LLP_NUM_SEGMENTS",
           "LLPRecord", "LLPEvent", "LLPAnnotations", "parse_filename", "read_weak_labels", "read_segment_events"]

_logger = logging.getLogger(__name__)

LLP_CATEGORIES: tuple[str, ...] = (
    "Speech", "Car", "Cheering", "Dog", "Cat", "Frying_(food)", "Basketball_bounce", "Fire_alarm", "Chainsaw",
    "Cello", "Banjo", "Singing", "Chicken_rooster", "Violin_fiddle", "Vacuum_cleaner", "Baby_laughter",
    "Accordion", "Lawn_mower", "Motorcycle", "Helicopter", "Acoustic_guitar", "Telephone_bell_ringing",
    "Baby_cry_infant_cry", "Blender", "Clapping")
SPLIT_FILES = {"train": "AVVP_train.csv", "val": "AVVP_val_pd.csv", "test": "AVVP_test_pd.csv"}
EVAL_FILES = {"audio": "AVVP_eval_audio.csv", "visual": "AVVP_eval_visual.csv"}
CATEGORIES_FILE = "categories.txt"
#: where the authors' download script puts the videos (also looked up in ``video/`` and the root)
VIDEO_SUBDIR = Path("LLP_dataset") / "video"
LLP_NUM_SEGMENTS = 10
_WEAK_COLUMNS = ("filename", "event_labels")
_EVENT_COLUMNS = ("filename", "onset", "offset", "event_labels")


@dataclass(frozen=True)
class LLPRecord:
    """One line of a split file: a clip and its weak (video-level) labels.

    Attributes:
        filename: ``{YouTube id}_{start}_{end}`` (the key of the eval files).
        video_id: the YouTube id (media file name without ``.mp4``).
        start, end: the clip's start and end second in the source video.
        labels: distinct category names in order of appearance.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None``.
        line: 1-based line number in its file.
    """

    filename: str
    video_id: str
    start: float
    end: float
    labels: tuple[str, ...]
    split: str | None
    line: int


@dataclass(frozen=True)
class LLPEvent:
    """One line of an eval file: an audio or visual event ``[onset, offset)`` of one category in one clip."""

    filename: str
    onset: int
    offset: int
    label: str
    modality: str
    line: int


def _time(text: str) -> float | None:
    """A non-negative number of seconds (``20``, ``101.8``), ``None`` for anything else."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_filename(filename: str) -> tuple[str, float, float]:
    """``"{id}_{start}_{end}"`` -> ``(id, start, end)``, times in seconds (``AP0061o0Nvk_101.8_111.8`` has
    fractional ones).

    Raises:
        ValueError: no two trailing ``_``-separated non-negative numbers.
    """
    parts = filename.rsplit("_", 2)
    times = [_time(part) for part in parts[1:]]
    if len(parts) != 3 or not parts[0] or None in times:
        raise ValueError(f"expected an LLP filename '{{YouTube id}}_{{start}}_{{end}}' (e.g. BjCEufrlXm4_20_30), "
                         f"got {filename!r}")
    return parts[0], times[0], times[1]


def _read_table(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a tab-separated file with a header naming at least ``columns`` (blank lines skipped)."""
    if not path.is_file():
        raise FileNotFoundError(f"LLP annotation file not found: {path}")
    lines = read_lines(path, what="LLP annotation file")
    header_text = lines[0]
    header = [name.strip() for name in header_text.split("\t")]
    missing = [name for name in columns if name not in header]
    if missing:
        hint = " (the file looks comma-separated; LLP files are tab-separated)" if "," in header_text else ""
        raise ValueError(f"{path}:1: expected a tab-separated header with the columns {', '.join(columns)}, "
                         f"got {header_text!r}{hint}")
    for number, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        fields = text.split("\t")
        if len(fields) != len(header):
            raise ValueError(f"{path}:{number}: expected {len(header)} tab-separated fields "
                             f"({', '.join(header)}), got {len(fields)}: {text!r}; {LINE_FIX}")
        yield number, {name: value.strip() for name, value in zip(header, fields)}


def _check_label(label: str, known: set[str] | None, path: Path, number: int) -> None:
    if not label:
        raise ValueError(f"{path}:{number}: empty event label; {LINE_FIX}")
    if known is not None and label not in known:
        raise ValueError(f"{path}:{number}: unknown category {label!r}; expected one of the {len(known)} "
                         f"categories (LLP names such as Speech, Dog, Frying_(food), or those of "
                         f"{CATEGORIES_FILE}); {LINE_FIX}, or add the category to {CATEGORIES_FILE}")


def read_weak_labels(path: str | os.PathLike, split: str | None = None, *,
                     categories: Sequence[str] | None = None) -> list[LLPRecord]:
    """Parse a split file (``filename``, ``event_labels``).

    Args:
        path: the csv file.
        split: stored in the records.
        categories: known category names (an unknown label is an error); ``None`` accepts any.

    Raises:
        ValueError: a bad header, field count, filename or label, naming the file and line.
    """
    path = Path(path)
    known = set(categories) if categories is not None else None
    records = []
    for number, row in _read_table(path, _WEAK_COLUMNS):
        try:
            video_id, start, end = parse_filename(row["filename"])
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}; {LINE_FIX}") from None
        check_name(row["filename"], f"{path}:{number}", "filename")
        if start >= end:
            raise ValueError(f"{path}:{number}: the clip {row['filename']!r} ends ({end:g} s) before it starts "
                             f"({start:g} s); {LINE_FIX}")
        labels = tuple(dict.fromkeys(label.strip() for label in row["event_labels"].split(",")))
        for label in labels:
            _check_label(label, known, path, number)
        records.append(LLPRecord(row["filename"], video_id, start, end, labels, split, number))
    return records


def _whole_second(text: str, column: str, path: Path, number: int) -> int:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value.is_integer():
        raise ValueError(f"{path}:{number}: expected a whole number of seconds in column {column!r}, got {text!r}; "
                         f"{LINE_FIX}")
    return int(value)


def read_segment_events(path: str | os.PathLike, modality: str, *, categories: Sequence[str] | None = None,
                        num_segments: int = LLP_NUM_SEGMENTS) -> list[LLPEvent]:
    """Parse an eval file (``filename``, ``onset``, ``offset``, ``event_labels``; one category per line).

    A line with ``onset > offset`` is kept and marks no segment, as the official evaluation's slice
    ``onset:offset`` marks nothing; such lines are logged once for the file, with their numbers.

    Raises:
        ValueError: a bad header, field count, time (not whole, negative or beyond ``num_segments``) or label,
            naming the file and line.
    """
    path = Path(path)
    if modality not in EVAL_FILES:
        raise ValueError(f"modality must be one of {', '.join(EVAL_FILES)}, got {modality!r}")
    known = set(categories) if categories is not None else None
    events = []
    reversed_lines = []
    for number, row in _read_table(path, _EVENT_COLUMNS):
        onset = _whole_second(row["onset"], "onset", path, number)
        offset = _whole_second(row["offset"], "offset", path, number)
        if not (0 <= onset <= num_segments and 0 <= offset <= num_segments):
            raise ValueError(f"{path}:{number}: expected onset and offset in 0..{num_segments}, got {onset} "
                             f"and {offset}; {LINE_FIX}")
        if onset > offset:
            reversed_lines.append(number)
        _check_label(row["event_labels"], known, path, number)
        check_name(row["filename"], f"{path}:{number}", "filename")
        events.append(LLPEvent(row["filename"], onset, offset, row["event_labels"], modality, number))
    if reversed_lines:
        _logger.warning("%s: %d line(s) with onset > offset mark no segment, as in the official evaluation "
                        "(line %s)", path, len(reversed_lines), ", ".join(map(str, reversed_lines)))
    return events


class LLPAnnotations:
    """The LLP annotation files of a data set root.

    Args:
        splits: records per split name.
        events: eval events per modality (``{"audio": [...], "visual": [...]}``), or ``{}`` when the eval
            files are absent.
        categories: category names (index = class).
        num_segments: segments per clip ``T``.

    Use :meth:`from_dir` to read a directory.
    """

    def __init__(self, *, splits: dict[str, list[LLPRecord]], events: dict[str, list[LLPEvent]],
                 categories: Sequence[str], num_segments: int = LLP_NUM_SEGMENTS) -> None:
        self.splits = {name: list(records) for name, records in splits.items()}
        self.categories = list(categories)
        self.num_segments = num_segments
        self.category_index = {name: i for i, name in enumerate(self.categories)}
        if len(self.category_index) != len(self.categories):
            raise ValueError(f"duplicate category names in {self.categories}")
        if set(events) not in (set(), set(EVAL_FILES)):
            raise ValueError(f"events must hold both modalities ({', '.join(EVAL_FILES)}) or none, "
                             f"got {sorted(events)}")
        for record in (r for records in self.splits.values() for r in records):
            unknown = [label for label in record.labels if label not in self.category_index]
            if unknown:
                raise ValueError(f"{record.filename} (line {record.line}): unknown categories {unknown}")
        self.has_eval = bool(events)
        evaluated = {r.filename for split in ("val", "test") for r in self.splits.get(split, [])}
        self._events: dict[str, dict[str, list[LLPEvent]]] = {modality: {} for modality in EVAL_FILES}
        self.unmatched_events = 0
        for modality, modality_events in events.items():
            for event in modality_events:
                if event.label not in self.category_index:
                    raise ValueError(f"{event.filename} ({modality} line {event.line}): unknown category "
                                     f"{event.label!r}")
                if event.filename in evaluated:
                    self._events[modality].setdefault(event.filename, []).append(event)
                else:
                    self.unmatched_events += 1

    @classmethod
    def from_dir(cls, root: str | os.PathLike, *, num_segments: int = LLP_NUM_SEGMENTS) -> "LLPAnnotations":
        """Read the split files that exist, the two eval files (if present) and ``categories.txt`` (if present)."""
        root = Path(root)
        categories_path = root / CATEGORIES_FILE
        if categories_path.is_file():
            categories = read_names(categories_path, what="categories file")
            if not categories:
                raise ValueError(f"{categories_path}: no category; write one name a line, or remove the file to use "
                                 f"the {len(LLP_CATEGORIES)} LLP categories")
        else:
            categories = list(LLP_CATEGORIES)
        splits = {split: read_weak_labels(root / name, split, categories=categories)
                  for split, name in SPLIT_FILES.items() if (root / name).is_file()}
        if not splits:
            raise FileNotFoundError(f"no LLP split file ({', '.join(SPLIT_FILES.values())}) in {root}: expected "
                                    f"the csv files of the LLP data set (YapengTian/AVVP-ECCV20, data/)")
        present = [name for name in EVAL_FILES.values() if (root / name).is_file()]
        if len(present) == 1:
            other = next(name for name in EVAL_FILES.values() if name not in present)
            raise FileNotFoundError(f"{root} holds {present[0]} but not {other}: the audio and visual eval files "
                                    f"come as a pair; add {other} or remove {present[0]}")
        events = {modality: read_segment_events(root / name, modality, categories=categories,
                                                num_segments=num_segments)
                  for modality, name in EVAL_FILES.items() if present}
        result = cls(splits=splits, events=events, categories=categories, num_segments=num_segments)
        result._log_quirks(root)
        return result

    def _log_quirks(self, root: Path) -> None:
        if not self.has_eval and ({"val", "test"} & set(self.splits)):
            _logger.warning("%s: no %s / %s: val and test clips get no segment-level labels (only the weak "
                            "labels can be evaluated)", root, *EVAL_FILES.values())
        if self.unmatched_events:
            _logger.info("%s: %d eval line(s) name a filename of no val/test clip and are ignored (as in the "
                         "official evaluation)", root, self.unmatched_events)
        names = list(self.splits)
        for i, first in enumerate(names):
            first_names = {r.filename for r in self.splits[first]}
            if len(first_names) != len(self.splits[first]):
                _logger.warning("%s: %s lists some filenames more than once", root, SPLIT_FILES[first])
            for second in names[i + 1:]:
                shared = first_names & {r.filename for r in self.splits[second]}
                if shared:
                    _logger.warning("%s: %d clip(s) are in both %s and %s", root, len(shared), first, second)

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def records(self, split: str) -> list[LLPRecord]:
        """Records of ``split`` in file order."""
        if split not in self.splits:
            raise ValueError(f"unknown or absent split {split!r}; available: {sorted(self.splits)}")
        return list(self.splits[split])

    def weak_labels(self, record: LLPRecord) -> np.ndarray:
        """Multi-hot video-level labels ``(C,)`` float32 of a record."""
        labels = np.zeros(self.num_classes, dtype=np.float32)
        labels[[self.category_index[label] for label in record.labels]] = 1.0
        return labels

    def has_segment_labels(self, record: LLPRecord) -> bool:
        """True for val/test records when the eval files were read (train never has segment labels)."""
        return self.has_eval and record.split in ("val", "test")

    def events(self, record: LLPRecord, modality: str) -> list[LLPEvent]:
        """Eval lines of ``record`` for ``"audio"`` or ``"visual"`` (empty for train or without eval files)."""
        if modality not in EVAL_FILES:
            raise ValueError(f"modality must be one of {', '.join(EVAL_FILES)}, got {modality!r}")
        if not self.has_segment_labels(record):
            return []
        return list(self._events[modality].get(record.filename, []))

    def segment_labels(self, record: LLPRecord) -> tuple[np.ndarray, np.ndarray]:
        """Audio and visual segment labels ``(T, C)`` float32 0/1 of a record (all zero where
        :meth:`has_segment_labels` is false)."""
        matrices = []
        for modality in EVAL_FILES:
            matrix = np.zeros((self.num_segments, self.num_classes), dtype=np.float32)
            for event in self.events(record, modality):
                matrix[event.onset:event.offset, self.category_index[event.label]] = 1.0
            matrices.append(matrix)
        return matrices[0], matrices[1]
