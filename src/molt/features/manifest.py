"""What a feature cache holds: its manifest, the on-disk layout, and what a model expects to find in it.

Part of molt-av (Apache-2.0), an implementation of "Mixture of Layer-Wise Tokens for Efficient Audio-Visual
Learning" (MoLT). MoLT (Sec. 3) and Mettle only *read* the outputs of selected blocks of frozen backbones; those
taps are a pure function of the input clip, so they can be computed once per split and read back every epoch. This
module describes such a cache (:class:`FeatureManifest`, one :class:`TapGroupSpec` per tap group);
:mod:`.chunks` holds the chunk files, :mod:`.writer` fills them, :mod:`.reader` reads them as a dataset.

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

**One backbone pass per video.** A dataset whose items share media rows (MUSIC-AVQA: several questions per
video; prepared datasets list each item's ``media_index`` in ``rows`` and decode a row with ``clip``) is cached by
video: the manifest says ``keyed_by: media``, entry ``j`` holds the ``j``-th distinct media row in item order
(:class:`MediaView`), and the reader maps every item to its video's entry.

Storage dtypes: ``float16`` (default; half the bytes, relative error about 5e-4), ``bfloat16`` (stored as ``uint16``
bit patterns, numpy having no bfloat16; the range of float32) and ``float32`` (exact). A value that overflows float16
is an error naming the tap, never a silent ``inf``. Taps are always read back as float32.

Compatibility. A cache is refused (:meth:`FeatureManifest.check_compatible`, a ``ValueError`` listing every differing
field) when the task, setting, prepared data (SHA-256 of its ``index.json``), number of segments, storage dtype,
what an entry is (``keyed_by``: a dataset item, or a video shared by several items), or, for a tap group the run
needs, the backbone, its weights (SHA-256 of the weights file, or the hub tag, or the seed of a random
initialisation), blocks, token shapes or input preprocessing differ. Re-preparing the same data
changes ``index.json`` (it records the preparation time), so it invalidates the cache: that is deliberate, since
the decoded frames may have changed too.

:func:`expected_manifest` says what a cache for a model must hold; the model is duck-typed (any object with the
:class:`~molt.model.AudioVisualModel` attributes ``features``, ``visual``, ``audio`` and ``stage_blocks``), so this
module imports no model, task or trainer.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.files import atomic_json

__all__ = ["FeatureManifest", "TapGroupSpec", "MediaView", "data_fingerprint", "expected_manifest", "media_rows",
           "read_json", "DONE_FILE", "DTYPES", "FORMAT", "FORMAT_VERSION", "INIT_SEED", "KEYS", "MANIFEST_FILE",
           "SAFE_NAME", "SPLIT_FILE"]

FORMAT = "molt-feature-cache"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
DONE_FILE = "done.json"
SPLIT_FILE = "split.json"
# storage dtype name -> numpy dtype of the stored array (bfloat16 is kept as its uint16 bit pattern)
DTYPES: dict[str, np.dtype] = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(np.uint16),
                               "float32": np.dtype(np.float32)}
# fields of a manifest that decide what the taps are (chunk_size and splits only describe the store)
_IDENTITY_FIELDS = ("format", "format_version", "task", "setting", "data_fingerprint", "num_segments", "dtype",
                    "keyed_by")
#: what one cache entry is: a dataset item, or a media row shared by several items (MUSIC-AVQA's questions)
KEYS = ("item", "media")
#: what tap group and split names may hold (they name files and directories)
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
INIT_SEED = 0  # the seed build_backbones initialises random-weight backbones with


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON record of the cache; an unreadable one is a ``ValueError`` naming ``what`` and the file."""
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
        splits: splits whose extraction is complete (maintained by :func:`~molt.features.writer.extract_features`).
        keyed_by: ``"item"`` (entry ``i`` = dataset item ``i``) or ``"media"`` (one entry per video, in order of
            first use, shared by the items that read it; see :class:`MediaView`).
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
            if not SAFE_NAME.match(name):
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
        atomic_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureManifest:
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: not a feature cache (run `molt extract` first)")
        return cls.from_dict(read_json(path, "feature cache manifest"), source=str(path))

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


def media_rows(dataset: Any) -> list[int] | None:
    """The media row of each item when items share rows (several questions per video), else ``None``."""
    rows = getattr(dataset, "rows", None)
    if not isinstance(rows, list) or not callable(getattr(dataset, "clip", None)):
        return None
    media = [row.get("media_index") for row in rows] if all(isinstance(r, dict) for r in rows) else []
    if not media or None in media or len(set(media)) == len(media):
        return None
    return media


class MediaView(Dataset):
    """The distinct media rows of a dataset, in order of first use: what a cache keyed by media holds."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.media = list(dict.fromkeys(row["media_index"] for row in dataset.rows))

    def __len__(self) -> int:
        return len(self.media)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.dataset.clip(self.media[index])

    def positions(self) -> list[int]:
        """The entry of each item of the dataset."""
        entry = {media: position for position, media in enumerate(self.media)}
        return [entry[row["media_index"]] for row in self.dataset.rows]


def expected_manifest(model: Any, *, task: str, setting: str | None, prepared: str | os.PathLike, dataset: Any,
                      dtype: str = "float16") -> FeatureManifest:
    """What a cache for ``model`` on ``dataset`` must hold: one tap group per backbone input the model reads."""
    preprocessing = {"image_size": int(dataset.image_size), "sample_rate": int(dataset.sample_rate)}
    features = model.features
    modalities = features.method.modalities
    groups: dict[str, TapGroupSpec] = {}
    if "visual" in modalities:
        groups["visual_taps"] = TapGroupSpec.from_backbone(model.visual, features.visual_blocks,
                                                           init_seed=INIT_SEED, preprocessing=preprocessing)
    if "audio" in modalities:
        audio_config = getattr(model.audio, "config", None)
        audio_preprocessing = {**preprocessing, "clip_seconds": getattr(audio_config, "clip_seconds", None)}
        groups["audio_taps"] = TapGroupSpec.from_backbone(model.audio, features.audio_blocks,
                                                          init_seed=INIT_SEED, preprocessing=audio_preprocessing)
    if model.stage_blocks:
        groups["visual_stages"] = TapGroupSpec.from_backbone(model.visual, model.stage_blocks, init_seed=INIT_SEED,
                                                             preprocessing=preprocessing)
    return FeatureManifest(task=task, setting=setting, groups=groups, num_segments=int(dataset.num_segments),
                           data_fingerprint=data_fingerprint(prepared), dtype=dtype,
                           keyed_by="media" if media_rows(dataset) is not None else "item")
