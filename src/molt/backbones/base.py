"""Common interface of the frozen backbones: per-block taps, frozen parameters, eval mode forever.

A backbone is described by three per-block methods that :meth:`TapBackbone.forward_taps` loops over:

* :meth:`~TapBackbone.embed`: input -> tokens entering block 0, in the backbone's native layout;
* :meth:`~TapBackbone.run_block`: tokens entering block ``i`` -> tokens leaving it (a stage's patch merging
  is applied by the block that needs its output, wherever the original model places it);
* :meth:`~TapBackbone.to_sequence`: native layout -> ``(B, N, D)``.

Methods that must run *inside* the backbone (LAVisH-style sequential adapters) use the same three methods
with gradients enabled; MoLT and Mettle only call :meth:`forward_taps`, which never builds an autograd graph.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .taps import BlockSelection, resolve_blocks

__all__ = ["TapBackbone"]


class TapBackbone(nn.Module):
    """Frozen transformer whose block outputs can be tapped.

    Subclasses set ``block_dims`` (channel width of each block's output) and ``block_tokens`` (number of tokens
    of each block's output for the nominal input size), implement ``embed``, ``run_block`` and ``to_sequence``,
    and call :meth:`freeze` at the end of ``__init__``.
    """

    block_dims: list[int]
    block_tokens: list[int]

    @property
    def num_blocks(self) -> int:
        return len(self.block_dims)

    @property
    def stage_end_blocks(self) -> list[int]:
        """Index of the last block of each stage (a stage ends where the next block changes the token grid or
        width), finest to coarsest: what dense heads (segmentation) read as multi-scale features."""
        ends = [i for i in range(self.num_blocks - 1)
                if (self.block_tokens[i], self.block_dims[i]) != (self.block_tokens[i + 1], self.block_dims[i + 1])]
        return ends + [self.num_blocks - 1]

    def freeze(self) -> "TapBackbone":
        """Stop gradients to every parameter and put every submodule in eval mode."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        super().train(False)
        return self

    @property
    def is_meta(self) -> bool:
        """Built on the ``meta`` device (shapes only), e.g. to train from a feature cache."""
        return any(parameter.is_meta for parameter in self.parameters())

    def _apply(self, fn, recurse: bool = True):
        # a meta backbone has no data to move: .to(device) / .cpu() by a parent (Lightning moves the whole model)
        # leaves it as it is instead of failing
        if self.is_meta:
            return self
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> "TapBackbone":
        """Frozen backbones ignore ``train(True)``: dropout, drop-path, SpecAugment and BatchNorm statistics stay
        in inference behaviour even when a parent module is switched to training mode."""
        return super().train(False)

    def resolve_blocks(self, blocks: BlockSelection) -> list[int]:
        """Resolve a selection (``"late"``, ``-2``, ``[22, 23]``, ...) to sorted block indices."""
        return resolve_blocks(blocks, self.num_blocks)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def run_block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_sequence(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_taps(self, x: torch.Tensor, blocks: BlockSelection | Sequence[int]) -> list[torch.Tensor]:
        """Tokens leaving each selected block, ``[(B, N_l, D_l) for l in blocks]``, in block order.

        Computation stops after the last selected block, and no autograd graph is kept.
        """
        indices = self.resolve_blocks(blocks)
        wanted = set(indices)
        taps = []
        with torch.no_grad():
            tokens = self.embed(x)
            for index in range(indices[-1] + 1):
                tokens = self.run_block(index, tokens)
                if index in wanted:
                    taps.append(self.to_sequence(tokens))
        return taps

    def forward(self, x: torch.Tensor, blocks: BlockSelection | Sequence[int] = "all") -> list[torch.Tensor]:
        return self.forward_taps(x, blocks)
