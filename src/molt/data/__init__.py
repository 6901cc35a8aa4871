"""Data: decoding (``media``), dataset readers (``ave``, ``avsbench``, ``music_avqa``, ``llp``), the prepared
memory-mapped formats (``prepared``, ``prepared_avs``, ``prepared_avqa``, ``prepared_llp``), procedural audio-visual
data in real layouts (``synthetic``, ``synthetic_avs``, ``synthetic_avqa``, ``synthetic_llp``) and the cache of
frozen-backbone taps (``feature_cache``).

Part of molt-av (Apache-2.0). Submodules are imported on use, so ``import molt.data`` stays cheap (no PyAV, no
torch); import what you need, e.g. ``from molt.data.ave import AVEAnnotations``.
"""

__all__ = ["ave", "avsbench", "feature_cache", "llp", "media", "music_avqa", "prepared", "prepared_avqa",
           "prepared_avs", "prepared_llp", "synthetic", "synthetic_avqa", "synthetic_avs", "synthetic_llp"]
