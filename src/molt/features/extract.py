"""Extraction of a model's frozen-backbone taps into a feature cache, and the cached splits it trains from.

Part of molt-av (Apache-2.0). The frozen backbones' taps of MoLT and Mettle do not depend on anything trainable, so
:func:`extract_splits` runs the backbones once per split and stores what the model reads from them (the method's
taps and, for dense heads, the visual stage features). :func:`cached_splits` opens such a cache for training after
checking that it was built for the same task, data, backbones, weights, blocks and preprocessing as the run.

**One backbone pass per video.** A dataset whose items share media rows (MUSIC-AVQA: several questions per
video; prepared datasets list each item's ``media_index`` in ``rows`` and decode a row with ``clip``) is cached by
video: the manifest says ``keyed_by: media``, entry ``j`` holds the ``j``-th distinct media row in item order, and
:func:`cached_splits` maps every item to its video's entry.

Single process; the model is duck-typed (any object with the :class:`~molt.model.AudioVisualModel` attributes
``features``, ``visual``, ``audio``, ``stage_blocks`` and ``compute_inputs``), so this module imports no model,
task or trainer.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.utils.data import Dataset

from .store import (MANIFEST_FILE, CachedDataset, ExtractReport, FeatureCache, FeatureManifest, TapGroupSpec,
                    data_fingerprint, extract_features)

__all__ = ["expected_manifest", "extract_splits", "cached_splits", "media_rows", "MediaView", "INIT_SEED"]

_logger = logging.getLogger(__name__)

INIT_SEED = 0  # the seed build_backbones initialises random-weight backbones with


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


def extract_splits(model: Any, datasets: Mapping[str, Any], out_dir: str | os.PathLike, *, task: str,
                   setting: str | None, prepared: str | os.PathLike, dtype: str = "float16", batch_size: int = 8,
                   chunk_size: int = 256, device: str | None = None, verify_existing: bool = False,
                   show_progress: bool = True, shard: tuple[int, int] = (0, 1)) -> dict[str, ExtractReport]:
    """Run ``model``'s frozen backbones once over each dataset (split name -> dataset) and store the taps.

    Resumable: complete chunks of an earlier (killed) run are kept; a cache built for another setup is refused.
    ``shard=(rank, world size)`` computes only this process's share of the chunks (see
    :func:`~molt.features.store.extract_features`).
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


def cached_splits(model: Any, datasets: Mapping[str, Any], features: str | os.PathLike, *, task: str,
                  setting: str | None, prepared: str | os.PathLike) -> dict[str, CachedDataset]:
    """Wrap each split's dataset so its items carry cached taps instead of frames and audio.

    Raises a ``ValueError`` listing every difference when the cache was built for another setup.
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
        positions = MediaView(dataset).positions() if expected.keyed_by == "media" else None
        wrapped[split] = CachedDataset(dataset, cache, positions=positions)   # checks the number of entries
    return wrapped
