"""Block selection for per-block taps.

Blocks are numbered across stages from 0 (Swin-V2-L: 2+2+18+2 = 24 blocks; HTS-AT: 2+2+6+2 = 12).
A selection resolves to a sorted list of block indices, with timm's ``indices`` semantics:

* ``int n``: the last ``n`` blocks.
* a sequence of ints: those blocks; negative values count from the end.
* ``"late"``: the last ``LATE_BLOCKS`` blocks (paper Sec. 4.3.1: the final two layers).
* ``"early"``: the first ``EARLY_BLOCKS`` blocks (paper: the first four layers).
* ``"mid"``: every block between early and late.
* ``"all"``: every block.
* names joined with ``+`` (``"early+late"``): the union of those stages (paper Tab. 4's combinations).
* a string of comma-separated ints (``"-2,-1"`` or ``"20,21"``), as written on a command line.

``"auto"`` in a config asks ``molt train`` to measure the backbone's layer similarity on a few training clips
(paper Fig. 4) and take the late blocks it suggests; it is resolved there, before the model is built, and is not
a selection this module resolves.
"""
from __future__ import annotations

from typing import Sequence, Union

__all__ = ["BlockSelection", "resolve_blocks", "EARLY_BLOCKS", "LATE_BLOCKS", "NAMED_SELECTIONS", "AUTO_BLOCKS"]

EARLY_BLOCKS = 4
LATE_BLOCKS = 2
NAMED_SELECTIONS = ("early", "mid", "late", "all")

AUTO_BLOCKS = "auto"

BlockSelection = Union[int, str, Sequence[int]]


def resolve_blocks(selection: BlockSelection, num_blocks: int) -> list[int]:
    """Resolve a block selection to sorted, unique, non-negative block indices.

    Args:
        selection: see the module docstring.
        num_blocks: number of blocks of the backbone.

    Raises:
        ValueError: the selection is empty, names an unknown stage, or indexes outside ``[-num_blocks, num_blocks)``.
    """
    if num_blocks <= 0:
        raise ValueError(f"num_blocks must be positive, got {num_blocks}")
    if isinstance(selection, bool):
        raise ValueError(f"block selection must be an int, a name or a list of ints, got {selection!r}")
    if isinstance(selection, int):
        if not 0 < selection <= num_blocks:
            raise ValueError(f"block selection {selection} asks for the last {selection} blocks; "
                             f"expected 1..{num_blocks}")
        return list(range(num_blocks - selection, num_blocks))
    if isinstance(selection, str):
        name = selection.strip().lower()
        if name == AUTO_BLOCKS:
            raise ValueError("block selection 'auto' is chosen from data by molt train (or read off molt analyze "
                             "layers); building a model directly needs explicit blocks, e.g. late or -2,-1")
        if name in NAMED_SELECTIONS:
            return _named(name, num_blocks)
        if "+" in name:
            parts = [part.strip() for part in name.split("+")]
            unknown = [part for part in parts if part not in NAMED_SELECTIONS]
            if unknown:
                raise ValueError(f"unknown stage name(s) {', '.join(map(repr, unknown))} in {selection!r}; "
                                 f"join names from {', '.join(NAMED_SELECTIONS)} with '+'")
            return sorted({index for part in parts for index in _named(part, num_blocks)})
        try:
            selection = [int(part) for part in name.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"unknown block selection {selection!r}: use one of {', '.join(NAMED_SELECTIONS)}, "
                             f"an int n (last n blocks) or comma-separated indices such as '-2,-1'") from None
    indices = []
    for index in selection:
        index = int(index)
        if not -num_blocks <= index < num_blocks:
            raise ValueError(f"block index {index} is out of range for a backbone with {num_blocks} blocks "
                             f"(valid: {-num_blocks}..{num_blocks - 1})")
        indices.append(index % num_blocks)
    if not indices:
        raise ValueError("block selection is empty: select at least one block")
    return sorted(set(indices))


def _named(name: str, num_blocks: int) -> list[int]:
    early = min(EARLY_BLOCKS, num_blocks)
    late = min(LATE_BLOCKS, num_blocks)
    if name == "all":
        return list(range(num_blocks))
    if name == "early":
        return list(range(early))
    if name == "late":
        return list(range(num_blocks - late, num_blocks))
    mid = list(range(early, num_blocks - late))
    if not mid:
        raise ValueError(f"a backbone with {num_blocks} blocks has no 'mid' blocks "
                         f"(early = first {EARLY_BLOCKS}, late = last {LATE_BLOCKS})")
    return mid
