"""``molt extract`` and training from a feature cache: the glue between a model and :mod:`molt.data.feature_cache`.

Part of molt-av (Apache-2.0). The frozen backbones' taps of MoLT and Mettle do not depend on anything trainable, so
:func:`extract` runs the backbones once per split and stores what the model reads from them (the method's taps
and, for dense heads, the visual stage features). :func:`cached_splits` opens such a cache for training after
checking that it was built for the same task, data, backbones, weights, blocks and preprocessing as the run.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from .config import ExperimentConfig
from .data.feature_cache import (CachedDataset, ExtractReport, FeatureCache, FeatureManifest, TapGroupSpec,
                                 data_fingerprint, extract_features)
from .model import AudioVisualModel, build_model
from .task_registry import get_task_spec

__all__ = ["expected_manifest", "extract", "cached_splits"]

_logger = logging.getLogger(__name__)

INIT_SEED = 0  # the seed build_backbones initialises random-weight backbones with


def expected_manifest(config: ExperimentConfig, model: AudioVisualModel, prepared: Path, dataset: Any, *,
                      dtype: str = "float16") -> FeatureManifest:
    """What a cache for this run must hold: one tap group per backbone input the model reads."""
    preprocessing = {"image_size": int(dataset.image_size), "sample_rate": int(dataset.sample_rate)}
    features = model.features
    modalities = features.molt.modalities
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
    return FeatureManifest(task=config.task, setting=config.setting, groups=groups,
                           num_segments=int(dataset.num_segments), data_fingerprint=data_fingerprint(prepared),
                           dtype=dtype)


def extract(config: ExperimentConfig, *, data: str | os.PathLike, out_dir: str | os.PathLike,
            splits: tuple[str, ...] = ("train", "val", "test"), dtype: str = "float16", batch_size: int = 8,
            chunk_size: int = 256, device: str | None = None, verify_existing: bool = False,
            show_progress: bool = True) -> dict[str, ExtractReport]:
    """Run the frozen backbones of ``config`` once over each split of ``data`` and store the taps in ``out_dir``.

    Resumable: complete chunks of an earlier (killed) run are kept; a cache built for another setup is refused.
    """
    from .train import open_split

    if config.method == "lavish":
        raise ValueError("LAVisH adapters change what the backbone computes, so there is nothing to cache for it")
    spec = get_task_spec(config.task)
    prepared = spec.prepare(data, setting=spec.check_setting(config.setting))
    datasets = {split: open_split(spec, prepared, split) for split in splits}
    first = next(iter(datasets.values()))
    model = build_model(config, first.task_options()).eval()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    manifest = expected_manifest(config, model, prepared, first, dtype=dtype)
    manifest.chunk_size = chunk_size

    def compute(batch: dict[str, Any]) -> dict[str, list[torch.Tensor]]:
        inputs = model.compute_inputs({"frames": batch["frames"].to(device), "audio": batch["audio"].to(device)})
        return {key: inputs[key] for key in manifest.groups}

    reports = {}
    for split, dataset in datasets.items():
        with torch.no_grad():
            reports[split] = extract_features(dataset, compute, out_dir, manifest, split=split,
                                              batch_size=batch_size, show_progress=show_progress,
                                              verify_existing=verify_existing)
        _logger.info("%s: %s", split, reports[split].summary())
    return reports


def cached_splits(config: ExperimentConfig, model: AudioVisualModel, prepared: Path,
                  datasets: dict[str, Any], features: str | os.PathLike) -> dict[str, CachedDataset]:
    """Wrap each split's dataset so its items carry cached taps instead of frames and audio.

    Raises a ``ValueError`` listing every difference when the cache was built for another setup.
    """
    cache_dir = Path(features)
    manifest_file = cache_dir / "manifest.json"
    if not manifest_file.is_file():
        raise FileNotFoundError(f"--features {cache_dir}: no manifest.json there; build the cache with "
                                f"`molt extract {config.task} --data ... --out {cache_dir}`")
    first = next(iter(datasets.values()))
    stored = FeatureManifest.load(manifest_file)
    expected = expected_manifest(config, model, prepared, first, dtype=stored.dtype)
    wrapped = {}
    for split, dataset in datasets.items():
        cache = FeatureCache(cache_dir, split, expected=expected, groups=list(expected.groups))
        if len(cache) != len(dataset):
            raise ValueError(f"feature cache {cache_dir} holds {len(cache)} items for split {split!r} but the data "
                             f"has {len(dataset)}; run molt extract again")
        wrapped[split] = CachedDataset(dataset, cache)
    return wrapped
