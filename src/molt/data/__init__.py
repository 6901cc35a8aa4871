"""Task-free data pieces every task builds on: decoding (``media``), the prepared-clips base with its index commit
and skipped list (``prepared``) and the procedural generator's shared primitives (``synthetic``).

Part of molt-av (Apache-2.0). Nothing here imports a task: each task's reader, prepared format and generator live
in its own package (``molt.tasks.<task>``), and the cache of frozen-backbone taps in :mod:`molt.features`.
Submodules are imported on use, so ``import molt.data`` stays cheap (no PyAV, no torch).
"""

__all__ = ["media", "prepared", "synthetic"]
