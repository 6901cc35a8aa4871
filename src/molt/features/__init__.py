"""Cached frozen-backbone taps: the chunked store (``store``) and extraction from a model (``extract``).

Part of molt-av (Apache-2.0). MoLT and Mettle read taps that are a pure function of the input clip, so they can
be computed once and read back every epoch. Submodules are imported on use; nothing here imports a task, a model
class or Lightning: :mod:`.extract` works on any model with the :class:`~molt.model.AudioVisualModel` attributes.
"""

__all__ = ["extract", "store"]
