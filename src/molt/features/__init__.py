"""Cached frozen-backbone taps: extract once, train adapters many times.

Part of molt-av (Apache-2.0). MoLT and Mettle read taps that are a pure function of the input clip, so they can
be computed once and read back every epoch instead of running the frozen backbones on every batch (LAVisH-style
adapters live inside the blocks and cannot use a cache; the paper trains online). The cache, split along its
seams:

* :mod:`.manifest`: what a cache holds (:class:`FeatureManifest`, :class:`TapGroupSpec`), its layout on disk, and
  what a model expects in it (:func:`expected_manifest`);
* :mod:`.chunks`: the chunk files (names, integrity checks, storage dtypes, the writer of one chunk);
* :mod:`.writer`: extraction (:func:`extract_splits` for a model, :func:`extract_features` for any tap function);
* :mod:`.reader`: reading a cache as a dataset (:class:`FeatureCache`, :class:`CachedDataset`,
  :func:`cached_splits`).

Nothing here imports a task, a model class or Lightning: the model is duck-typed (the
:class:`~molt.model.AudioVisualModel` attributes).
"""
from .manifest import (DONE_FILE, DTYPES, FORMAT, FORMAT_VERSION, INIT_SEED, MANIFEST_FILE, SPLIT_FILE,
                       FeatureManifest, MediaView, TapGroupSpec, data_fingerprint, expected_manifest, media_rows)
from .reader import MEDIA_KEYS, CachedDataset, FeatureCache, cached_splits
from .writer import ExtractReport, extract_features, extract_splits

__all__ = ["CachedDataset", "ExtractReport", "FeatureCache", "FeatureManifest", "MediaView", "TapGroupSpec",
           "cached_splits", "data_fingerprint", "expected_manifest", "extract_features", "extract_splits",
           "media_rows", "DONE_FILE", "DTYPES", "FORMAT", "FORMAT_VERSION", "INIT_SEED", "MANIFEST_FILE",
           "MEDIA_KEYS", "SPLIT_FILE"]
