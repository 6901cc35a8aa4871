"""Progress bars: one updating line on a terminal, nothing in logs or pipes.

Part of molt-av (Apache-2.0).
"""
from __future__ import annotations

from typing import Any, Iterable

__all__ = ["progress_bar"]


def progress_bar(iterable: Iterable[Any] | None = None, *, show: bool = True, **options: Any):
    """A tqdm bar over ``iterable`` (or a manual one with ``total=``), shown only when ``show`` and the output is a
    terminal; ``options`` go to tqdm (``desc``, ``total``, ``unit``, ...)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None if show else True, **options)
