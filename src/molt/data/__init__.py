"""Data: decoding (``media``), dataset readers (``ave``), the prepared memory-mapped format (``prepared``) and
procedural audio-visual data in real layouts (``synthetic``).

Part of molt-av (Apache-2.0). Submodules are imported on use, so ``import molt.data`` stays cheap (no PyAV, no
torch); import what you need, e.g. ``from molt.data.ave import AVEAnnotations``.
"""

__all__ = ["ave", "media", "prepared", "synthetic"]
