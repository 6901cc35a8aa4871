"""Readers of the AVSBench metadata (S4 / MS3) and path resolution of its two on-disk layouts.

Part of molt-av (Apache-2.0), an implementation of "Mixture of Layer-Wise Tokens for Efficient Audio-Visual
Learning" (MoLT). AVSBench (Zhou et al., ECCV 2022) asks for the pixel masks of the *sounding* objects in 5-s clips:
five frames per clip (one per second) and one audio track. Two subsets: **S4** (single source; 4,932 clips,
3,452 / 740 / 740) and **MS3** (multiple sources; 424 clips, 296 / 64 / 64). Ground truth is binary: in S4 *train*
only the first frame is annotated, in S4 val / test and in all of MS3 all five frames are.

Metadata, two forms (both read here into :class:`AVSRecord`):

* **AVSBench-object v1**: ``s4_meta_data.csv`` (columns used: the first one = clip name, ``category``, ``split``;
  the official scripts read the name at position 0, the start second at position 1 and the category at position 2)
  and ``ms3_meta_data.csv`` (first column = clip name, ``split``). Columns are found by header name where one is
  needed (``split``, ``category``), so extra or reordered columns do not matter.
* **AVSBench-semantic**: ``metadata.csv`` with the header ``vid,uid,s_min,s_sec,a_obj,split,label``; ``label``
  ``v1s`` = S4, ``v1m`` = MS3 (``v2`` = the 6,000 newer 10-s clips, read but not used by the S4 / MS3 tasks).
  The clip name is ``uid``; ``a_obj`` holds the sounding object names joined with ``_``.

Layouts (:class:`AVSBenchLayout` resolves the files of a record):

* object v1, S4 (``Single-source/``: ``s4_meta_data.csv`` and ``s4_data/``)::

      visual_frames/{split}/{category}/{name}/{name}_{1..5}.png
      gt_masks/{split}/{category}/{name}/{name}_{1..5}.png      (train: only {name}_1.png)
      audio_wav/{split}/{category}/{name}.wav

* object v1, MS3 (``Multi-sources/``: ``ms3_meta_data.csv`` and ``ms3_data/``); the frame folders have no split
  and the frame files keep the ``.mp4`` of the source video name::

      visual_frames/{name}/{name}.mp4_{1..5}.png
      gt_masks/{split}/{name}/{name}_{1..5}.png
      audio_wav/{split}/{name}.wav

* semantic (``metadata.csv`` beside ``v1s/``, ``v1m/``, ``v2/``)::

      {v1s|v1m}/{uid}/frames/{0..4}.jpg
      {v1s|v1m}/{uid}/labels_semantic/{0..4}.png  (class index per pixel, 0 = background), or
      {v1s|v1m}/{uid}/labels_rgb/{0..4}.png       (palette colour per pixel, black = background)
      {v1s|v1m}/{uid}/audio.wav

Binary masks: a pixel is foreground when its value is non-zero in any channel (the MS3 loaders of the peers take
``!= 0`` of the palette image; for the 0 / 255 masks of the release this equals the S4 loaders' ``mode="1"``
conversion). ``labels_semantic`` is preferred over ``labels_rgb`` when both exist (its format is assumed, it is
not read by the official AVSS loader).

Quirks of the real ``metadata.csv`` (11,356 rows, no final newline) and how they are handled:

* one v1s row names its object ``h orse``: read as ``horse`` (logged at INFO);
* 27 v2 rows have ``a_obj = off-the-screen``, not a class of ``label2idx.json``: kept as an object name (v2 is not
  used by S4 / MS3; :func:`unknown_objects` lists such names);
* MS3 rows have ``uid == vid``: 398 of the 424 are a YouTube id with a ``_k`` suffix, 25 a bare 11-character id
  and one is ``baby_dog_2_1``; names are used as they are. S4 / v2 ``uid`` are ``{vid}_{start_ms}_{end_ms}``;
* one v2 row writes its start as ``s_min=1, s_sec=60`` (= 120 s, as its uid says): the start is
  ``60 * s_min + s_sec`` without range checks on ``s_sec``.

Decoding (torch-free, so that worker processes stay light): :func:`read_frame`, :func:`read_mask`,
:func:`read_audio` and :func:`decode_avs_clip`, the worker entry point of :mod:`molt.tasks.avs.prepared`.
"""
from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...data.files import LINE_FIX, check_name, read_json, read_text

__all__ = ["AVSRecord", "AVSBenchLayout", "SETTINGS", "SPLITS", "NUM_FRAMES", "SEMANTIC_HEADER", "SEMANTIC_LABELS",
           "OBJECT_META_FILES", "OBJECT_SUBSETS", "annotated_frames", "read_object_meta", "read_semantic_meta",
           "read_label2idx", "unknown_objects", "read_frame", "read_mask", "read_audio", "decode_avs_clip"]

_logger = logging.getLogger(__name__)

SETTINGS = ("s4", "ms3")
SPLITS = ("train", "val", "test")
NUM_FRAMES = 5
SEMANTIC_HEADER = ("vid", "uid", "s_min", "s_sec", "a_obj", "split", "label")
SEMANTIC_LABELS = {"v1s": "s4", "v1m": "ms3", "v2": "v2"}
OBJECT_META_FILES = {"s4": "s4_meta_data.csv", "ms3": "ms3_meta_data.csv"}
#: setting -> (sub-directory of the release root, data directory beside the meta file)
OBJECT_SUBSETS = {"s4": ("Single-source", "s4_data"), "ms3": ("Multi-sources", "ms3_data")}
SEMANTIC_META_FILE = "metadata.csv"
_OBJECT_NAME_FIXES = {"h orse": "horse"}
_NAME_COLUMNS = ("name", "video_id", "vid", "uid")


@dataclass(frozen=True)
class AVSRecord:
    """One clip of the metadata.

    Attributes:
        name: the clip name used in paths (object csv: first column; semantic csv: ``uid``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        setting: ``"s4"``, ``"ms3"`` (or ``"v2"`` for semantic rows outside both).
        category: S4 category of the object csv (``None`` elsewhere); a path component of the S4 layout.
        objects: sounding object names of the semantic csv (``()`` when the metadata has none).
        start: start of the clip in its source video (seconds), when the metadata gives it.
        video_id: YouTube id (semantic ``vid``), when given.
        line: 1-based line number in the metadata file.
        source: ``"object"`` or ``"semantic"`` (which metadata form, hence which layout).
    """

    name: str
    split: str
    setting: str
    category: str | None = None
    objects: tuple[str, ...] = ()
    start: float | None = None
    video_id: str | None = None
    line: int = 0
    source: str = "object"


def annotated_frames(setting: str, split: str, num_frames: int = NUM_FRAMES) -> tuple[bool, ...]:
    """Which frames carry a ground-truth mask: S4 train only the first, everything else all of them."""
    if setting == "s4" and split == "train":
        return (True,) + (False,) * (num_frames - 1)
    return (True,) * num_frames


def _check_setting(setting: str) -> str:
    if setting not in SETTINGS:
        raise ValueError(f"unknown AVSBench setting {setting!r}: expected one of {', '.join(SETTINGS)}")
    return setting


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    if not path.is_file():
        raise FileNotFoundError(f"AVSBench metadata file not found: {path}")
    reader = csv.reader(io.StringIO(read_text(path, what="AVSBench metadata file")))
    try:
        rows = [(reader.line_num, [cell.strip() for cell in row]) for row in reader]
    except csv.Error as error:
        raise ValueError(f"{path}:{reader.line_num}: not a valid csv line ({error}); {LINE_FIX}") from None
    rows = [(number, row) for number, row in rows if any(row)]
    if not rows:
        raise ValueError(f"{path}: empty metadata file (expected a header line and one row per clip)")
    return rows[0][1], rows[1:]


def _check_split(path: Path, number: int, split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"{path}:{number}: unknown split {split!r} (expected one of {', '.join(SPLITS)}); {LINE_FIX}")
    return split


def read_object_meta(path: str | os.PathLike, setting: str | None = None) -> list[AVSRecord]:
    """Records of an AVSBench-object ``s4_meta_data.csv`` / ``ms3_meta_data.csv``.

    Args:
        path: the csv file (header line required).
        setting: ``"s4"`` or ``"ms3"``; ``None`` infers it from the file name, else from a ``category`` column.

    Raises:
        ValueError: no ``split`` column, an S4 file without ``category``, an unknown split, an empty name, or a
            clip named twice (all naming the file and line).
    """
    path = Path(path)
    header, rows = _read_rows(path)
    columns = {name.lower(): i for i, name in enumerate(header)}
    if setting is None:
        lowered = path.name.lower()
        setting = "s4" if lowered.startswith("s4") else "ms3" if lowered.startswith("ms3") else (
            "s4" if "category" in columns else "ms3")
    _check_setting(setting)
    if "split" not in columns:
        raise ValueError(f"{path}: the header {header} has no 'split' column; expected an AVSBench-object meta file "
                         f"such as {OBJECT_META_FILES[setting]}")
    if setting == "s4" and "category" not in columns:
        raise ValueError(f"{path}: an S4 meta file needs a 'category' column (it is part of every S4 path); "
                         f"header is {header}")
    name_column = next((columns[c] for c in _NAME_COLUMNS if c in columns), 0)
    start_column = next((columns[c] for c in ("start_time", "start") if c in columns), None)
    records: list[AVSRecord] = []
    seen: dict[str, int] = {}
    for number, row in rows:
        if len(row) < len(header):
            raise ValueError(f"{path}:{number}: expected {len(header)} comma-separated fields ({','.join(header)}), "
                             f"got {len(row)}: {row}; {LINE_FIX}")
        name = row[name_column]
        if not name:
            raise ValueError(f"{path}:{number}: empty clip name; {LINE_FIX}")
        check_name(name, f"{path}:{number}", "clip name")
        if name in seen:
            raise ValueError(f"{path}:{number}: clip {name!r} already listed on line {seen[name]}; {LINE_FIX}")
        seen[name] = number
        split = _check_split(path, number, row[columns["split"]])
        category = row[columns["category"]] if "category" in columns else None
        if category:
            check_name(category, f"{path}:{number}", "category")
        start = None
        if start_column is not None:
            try:
                start = float(row[start_column])
            except ValueError:
                start = None
        records.append(AVSRecord(name=name, split=split, setting=setting, category=category or None, start=start,
                                 line=number, source="object"))
    return records


def read_semantic_meta(path: str | os.PathLike) -> list[AVSRecord]:
    """Records of every row of an AVSBench-semantic ``metadata.csv`` (v1s -> ``"s4"``, v1m -> ``"ms3"``, v2).

    Raises:
        ValueError: a header other than ``vid,uid,s_min,s_sec,a_obj,split,label``, a wrong field count, an unknown
            label or split, a non-integer start, or a repeated ``uid`` (naming the file and line).
    """
    path = Path(path)
    header, rows = _read_rows(path)
    if tuple(column.lower() for column in header) != SEMANTIC_HEADER:
        raise ValueError(f"{path}: expected the AVSBench-semantic header {','.join(SEMANTIC_HEADER)}, got "
                         f"{','.join(header)}")
    records: list[AVSRecord] = []
    seen: dict[str, int] = {}
    fixed = 0
    for number, row in rows:
        if len(row) != len(SEMANTIC_HEADER):
            raise ValueError(f"{path}:{number}: expected {len(SEMANTIC_HEADER)} fields "
                             f"({','.join(SEMANTIC_HEADER)}), got {len(row)}: {row}; {LINE_FIX}")
        vid, uid, s_min, s_sec, a_obj, split, label = row
        if label not in SEMANTIC_LABELS:
            raise ValueError(f"{path}:{number}: unknown label {label!r} (expected one of "
                             f"{', '.join(SEMANTIC_LABELS)}); {LINE_FIX}")
        _check_split(path, number, split)
        if not uid:
            raise ValueError(f"{path}:{number}: empty uid; {LINE_FIX}")
        check_name(uid, f"{path}:{number}", "uid")
        if uid in seen:
            raise ValueError(f"{path}:{number}: uid {uid!r} already listed on line {seen[uid]}; {LINE_FIX}")
        seen[uid] = number
        try:
            start = 60.0 * int(s_min) + int(s_sec)
        except ValueError:
            raise ValueError(f"{path}:{number}: expected integer s_min and s_sec, got {s_min!r} and "
                             f"{s_sec!r}; {LINE_FIX}") from None
        objects = []
        for name in a_obj.split("_") if a_obj else []:
            if name in _OBJECT_NAME_FIXES:
                _logger.info("%s:%d: object name %r read as %r", path, number, name, _OBJECT_NAME_FIXES[name])
                name = _OBJECT_NAME_FIXES[name]
                fixed += 1
            objects.append(name)
        records.append(AVSRecord(name=uid, split=split, setting=SEMANTIC_LABELS[label], objects=tuple(objects),
                                 start=start, video_id=vid, line=number, source="semantic"))
    if fixed:
        _logger.info("%s: %d malformed object name(s) repaired", path, fixed)
    return records


def read_label2idx(path: str | os.PathLike) -> dict[str, int]:
    """The AVSBench-semantic class map ``label2idx.json`` (``{"background": 1, "accordion": 2, ...}``, 1-based)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label2idx.json not found: {path}")
    mapping = read_json(path, what="AVSBench class map")
    if not isinstance(mapping, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                for v in mapping.values()):
        raise ValueError(f"{path}: expected a JSON object mapping class names to integer indices")
    return mapping


def unknown_objects(records: Sequence[AVSRecord], label2idx: dict[str, int]) -> dict[str, int]:
    """Object names of ``records`` that are not classes of ``label2idx``, with their row counts."""
    counts: dict[str, int] = {}
    for record in records:
        for name in record.objects:
            if name not in label2idx:
                counts[name] = counts.get(name, 0) + 1
    return counts


# ----------------------------------------------------------------------------------------------------------------
# layouts

@dataclass
class AVSBenchLayout:
    """Where the files of each clip of one setting live.

    Attributes:
        kind: ``"object"`` (AVSBench-object v1) or ``"semantic"`` (AVSBench-semantic).
        setting: ``"s4"`` or ``"ms3"``.
        meta_path: the metadata file read.
        data_dir: object: the directory holding ``visual_frames``, ``gt_masks``, ``audio_wav``; semantic: the
            directory holding ``v1s`` / ``v1m``.
        records: the clips of ``setting``, in metadata order.

    Use :meth:`find` to locate a layout under a root.
    """

    kind: str
    setting: str
    meta_path: Path
    data_dir: Path
    records: list[AVSRecord] = field(default_factory=list)

    @classmethod
    def find(cls, root: str | os.PathLike, setting: str = "s4") -> "AVSBenchLayout":
        """The layout of ``setting`` under ``root``.

        Looked up in this order: the object meta file in ``root`` or ``root/Single-source`` (S4) /
        ``root/Multi-sources`` (MS3), with its data in ``s4_data`` / ``ms3_data`` beside it (or beside the meta
        file itself); then a semantic ``metadata.csv`` in ``root`` or ``root/AVSBench_semantic``.

        Raises:
            FileNotFoundError: neither form is found (the message lists the places looked at).
        """
        root = Path(root)
        _check_setting(setting)
        subset_dir, data_name = OBJECT_SUBSETS[setting]
        meta_name = OBJECT_META_FILES[setting]
        tried = []
        for folder in (root, root / subset_dir):
            meta = folder / meta_name
            tried.append(meta)
            if meta.is_file():
                data_dir = folder / data_name if (folder / data_name).is_dir() else folder
                return cls(kind="object", setting=setting, meta_path=meta, data_dir=data_dir,
                           records=read_object_meta(meta, setting))
        for folder in (root, root / "AVSBench_semantic"):
            meta = folder / SEMANTIC_META_FILE
            tried.append(meta)
            if meta.is_file():
                records = [r for r in read_semantic_meta(meta) if r.setting == setting]
                return cls(kind="semantic", setting=setting, meta_path=meta, data_dir=folder, records=records)
        raise FileNotFoundError(f"no AVSBench {setting.upper()} metadata under {root}: looked for "
                                f"{', '.join(str(p) for p in tried)}")

    def _clip_dir(self, record: AVSRecord) -> Path:
        return self.data_dir / ("v1s" if record.setting == "s4" else "v1m") / record.name

    def _s4_parts(self, record: AVSRecord) -> tuple[str, str]:
        if not record.category:
            raise ValueError(f"{self.meta_path}:{record.line}: S4 clip {record.name!r} has no category, which the "
                             f"S4 layout needs in its paths")
        return record.split, record.category

    def frame_paths(self, record: AVSRecord) -> list[Path]:
        """The five frame files of ``record``, in time order."""
        if self.kind == "semantic":
            return [self._clip_dir(record) / "frames" / f"{i}.jpg" for i in range(NUM_FRAMES)]
        if self.setting == "s4":
            split, category = self._s4_parts(record)
            folder = self.data_dir / "visual_frames" / split / category / record.name
            return [folder / f"{record.name}_{i}.png" for i in range(1, NUM_FRAMES + 1)]
        folder = self.data_dir / "visual_frames" / record.name
        return [folder / f"{record.name}.mp4_{i}.png" for i in range(1, NUM_FRAMES + 1)]

    def mask_paths(self, record: AVSRecord) -> list[list[Path] | None]:
        """Per frame, the candidate mask files (the first that exists is read), or ``None`` where the frame is
        not annotated (S4 train frames 2-5)."""
        annotated = annotated_frames(self.setting, record.split)
        if self.kind == "semantic":
            clip = self._clip_dir(record)
            candidates = [[clip / "labels_semantic" / f"{i}.png", clip / "labels_rgb" / f"{i}.png"]
                          for i in range(NUM_FRAMES)]
        elif self.setting == "s4":
            split, category = self._s4_parts(record)
            folder = self.data_dir / "gt_masks" / split / category / record.name
            candidates = [[folder / f"{record.name}_{i}.png"] for i in range(1, NUM_FRAMES + 1)]
        else:
            folder = self.data_dir / "gt_masks" / record.split / record.name
            candidates = [[folder / f"{record.name}_{i}.png"] for i in range(1, NUM_FRAMES + 1)]
        return [paths if keep else None for paths, keep in zip(candidates, annotated)]

    def audio_path(self, record: AVSRecord) -> Path:
        """The clip's audio file."""
        if self.kind == "semantic":
            return self._clip_dir(record) / "audio.wav"
        if self.setting == "s4":
            split, category = self._s4_parts(record)
            return self.data_dir / "audio_wav" / split / category / f"{record.name}.wav"
        return self.data_dir / "audio_wav" / record.split / f"{record.name}.wav"

    def split_counts(self) -> dict[str, int]:
        return {split: sum(r.split == split for r in self.records) for split in SPLITS}


# ----------------------------------------------------------------------------------------------------------------
# decoding (no torch: runs in worker processes)

class _ClipError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise _ClipError("missing file", str(path))
    if path.stat().st_size == 0:
        raise _ClipError("empty file", str(path))
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise _ClipError("undecodable", f"{path}: {error}") from None
    return image


def read_frame(path: str | os.PathLike, size: int) -> np.ndarray:
    """An RGB frame resized (bicubic) to ``size x size``: uint8 ``(size, size, 3)``."""
    from PIL import Image

    image = _open_image(Path(path)).convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def read_mask(path: str | os.PathLike, size: int) -> np.ndarray:
    """A binary mask (foreground = any non-zero channel), resized (nearest) to ``size x size``: uint8 in {0, 1}."""
    from PIL import Image

    image = _open_image(Path(path))
    if image.mode == "LA":
        image = image.convert("L")
    elif image.mode not in ("1", "L", "P", "I", "I;16", "F"):
        image = image.convert("RGB")      # colour labels (alpha and other colour spaces dropped)
    values = np.asarray(image)
    # palette images: index 0 is background whatever its colour; grey / index / colour images: any non-zero value
    binary = values != 0 if values.ndim == 2 else (values != 0).any(axis=-1)
    mask = Image.fromarray(binary.astype(np.uint8) * 255)
    if mask.size != (size, size):
        mask = mask.resize((size, size), Image.Resampling.NEAREST)
    return (np.asarray(mask) > 127).astype(np.uint8)


def read_audio(path: str | os.PathLike, sample_rate: int, *, num_segments: int = NUM_FRAMES,
               segment_seconds: float = 1.0) -> tuple[np.ndarray, float]:
    """Decode an audio file to mono ``sample_rate`` and cut ``num_segments`` windows: float32 ``(T, R)``.

    A track shorter than ``num_segments * segment_seconds`` is tiled (repeated from its start) to that length, as
    DG-SCT does with AVSBench waveforms; the decoded duration is returned too, so callers can report short clips.

    Returns:
        ``(segments, seconds)``.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise _ClipError("missing file", str(path))
    if path.stat().st_size == 0:
        raise _ClipError("empty file", str(path))
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.audio:
                raise _ClipError("no audio track", str(path))
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in container.decode(container.streams.audio[0]):
                for resampled in resampler.resample(frame):
                    chunks.append(resampled.to_ndarray().reshape(-1))
            for resampled in resampler.resample(None):
                chunks.append(resampled.to_ndarray().reshape(-1))
    except av.FFmpegError as error:
        raise _ClipError("undecodable", f"{path}: {error}") from None
    waveform = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if waveform.size == 0:
        raise _ClipError("too short", f"{path}: no audio samples")
    segment = int(round(sample_rate * segment_seconds))
    total = segment * num_segments
    seconds = waveform.size / sample_rate
    if waveform.size < total:
        waveform = np.resize(waveform, total)
    segments = np.clip(waveform[:total], -1.0, 1.0).astype(np.float32).reshape(num_segments, segment)
    return segments, seconds


def decode_avs_clip(job: tuple[int, str, list[str], list[list[str] | None], str, dict[str, Any]]
                    ) -> tuple[int, str, Any, Any, Any, str, str]:
    """Worker entry point of :func:`molt.tasks.avs.prepared.prepare_avs`.

    Args:
        job: ``(position, name, frame paths, mask candidates per frame (None = not annotated), audio path,
            options)`` with options ``image_size``, ``mask_size``, ``sample_rate``.

    Returns:
        ``(position, name, frames uint8 (T, S, S, 3), audio int16 (T, R), masks uint8 (T, M, M), status,
        detail)`` with status ``"ok"``, ``"silent"`` or ``"short audio"`` (kept); or ``None`` arrays and the
        failure reason (``"missing file"``, ``"empty file"``, ``"undecodable"``, ``"no audio track"``,
        ``"too short"``) with its detail.
    """
    from ...data.media import is_silent

    position, name, frame_paths, mask_paths, audio_path, options = job
    size, mask_size = options["image_size"], options["mask_size"]
    try:
        frames = np.stack([read_frame(p, size) for p in frame_paths])
        masks = np.zeros((len(mask_paths), mask_size, mask_size), dtype=np.uint8)
        for i, candidates in enumerate(mask_paths):
            if candidates is None:
                continue
            existing = next((p for p in candidates if Path(p).is_file()), candidates[0])
            masks[i] = read_mask(existing, mask_size)
        audio, seconds = read_audio(audio_path, options["sample_rate"], num_segments=len(frame_paths))
    except _ClipError as error:
        return position, name, None, None, None, error.reason, error.detail
    except Exception as error:  # a decoder failure of a kind PIL / PyAV do not classify
        return position, name, None, None, None, "undecodable", f"{type(error).__name__}: {error}"
    pcm = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
    needed = len(frame_paths)
    if seconds < needed - 0.5:
        status, detail = "short audio", f"{seconds:.2f} s of audio tiled to {needed} s"
    elif is_silent(audio):
        status, detail = "silent", ""
    else:
        status, detail = "ok", ""
    return position, name, frames, pcm, masks, status, detail
