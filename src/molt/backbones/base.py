"""Common interface of the frozen backbones: per-block taps, frozen parameters, eval mode forever.

A backbone is described by three per-block methods that :meth:`TapBackbone.forward_taps` loops over:

* :meth:`~TapBackbone.embed`: input -> tokens entering block 0, in the backbone's native layout;
* :meth:`~TapBackbone.run_block`: tokens entering block ``i`` -> tokens leaving it (a stage's patch merging
  is applied by the block that needs its output, wherever the original model places it);
* :meth:`~TapBackbone.to_sequence`: native layout -> ``(B, N, D)``.

Methods that must run *inside* the backbone (LAVisH, DG-SCT, AVMoE) use the same methods with gradients enabled,
plus the split of a block into its two residual sub-layers (:meth:`~TapBackbone.enter_block`,
:meth:`~TapBackbone.attention_sublayer`, :meth:`~TapBackbone.mlp_sublayer`; ``run_block(i, x)`` equals
``mlp_sublayer(i, attention_sublayer(i, enter_block(i, x)))``) to add their adapters beside each sub-layer.
MoLT and Mettle only call :meth:`forward_taps`, which never builds an autograd graph.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from .taps import BlockSelection, resolve_blocks

__all__ = ["TapBackbone", "BACKBONE_DTYPES", "hooked_taps", "default_device_is_meta", "error_gist"]

#: ``backbone_dtype`` names -> the dtype the frozen weights are stored and run in
BACKBONE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                           "float16": torch.float16}


def default_device_is_meta() -> bool:
    """Whether new tensors land on the ``meta`` device (a ``with torch.device("meta"):`` build: read no weights)."""
    return torch.empty(0).device.type == "meta"


def error_gist(error: BaseException) -> str:
    """The gist of a wrapped library's error in one line (its first line, and the next one when the first only
    announces it), for the one-line messages the backbones raise."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    text = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
    return text[:300]


class _StopForward(Exception):
    """Raised by the hook of the last selected block to end the model's forward pass there."""


def hooked_taps(name: str, modules: Sequence[nn.Module], indices: Sequence[int], run: Callable[[], Any],
                convert: Callable[[int, Any], torch.Tensor]) -> list[torch.Tensor]:
    """Taps read with forward hooks while a wrapped model runs its own forward: ``run()`` runs it (without
    autograd), the hook on ``modules[i]`` turns that block's output into a tap with ``convert(i, output)`` for each
    ``i`` in ``indices`` (sorted), and the forward stops after the last of them. ``name`` names the backbone in the
    errors: a block that runs twice, or one that never ran."""
    last, captured = indices[-1], {}

    def make_hook(index: int):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if index in captured:
                raise RuntimeError(f"{name}: block {index} ran twice in one forward pass")
            captured[index] = convert(index, output)
            if index == last:
                raise _StopForward
        return hook

    handles = [modules[index].register_forward_hook(make_hook(index)) for index in indices]
    try:
        with torch.no_grad():
            run()
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    absent = [index for index in indices if index not in captured]
    if absent:
        raise RuntimeError(f"{name}: blocks {absent} did not run in the model's forward pass")
    return [captured[index] for index in indices]


def _cast_inputs(dtype: torch.dtype):
    """A forward pre-hook giving a module its floating inputs in ``dtype``."""
    def cast(value: Any) -> Any:
        return value.to(dtype) if torch.is_tensor(value) and value.is_floating_point() and value.dtype != dtype \
            else value

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return tuple(cast(a) for a in args), {key: cast(v) for key, v in kwargs.items()}
    return hook


class TapBackbone(nn.Module):
    """Frozen transformer whose block outputs can be tapped.

    Subclasses set ``block_dims`` (channel width of each block's output) and ``block_tokens`` (number of tokens
    of each block's output for the nominal input size), implement ``embed``, ``run_block`` and ``to_sequence``,
    and call :meth:`freeze` at the end of ``__init__``.
    """

    block_dims: list[int]
    block_tokens: list[int]
    #: submodules (attribute names) that stay float32 whatever :attr:`compute_dtype` is: signal front ends whose
    #: operations (STFT, log, BatchNorm over mel bins) need it
    float32_modules: tuple[str, ...] = ()
    compute_dtype: torch.dtype = torch.float32
    #: whether :meth:`embed`, :meth:`enter_block`, :meth:`attention_sublayer` and :meth:`mlp_sublayer` are
    #: implemented, i.e. whether in-block methods (LAVisH, DG-SCT, AVMoE) can run inside this backbone
    has_sublayers: bool = True

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

    def set_compute_dtype(self, dtype: torch.dtype | str) -> "TapBackbone":
        """Store and run the frozen backbone in ``dtype`` (``float32``, ``bfloat16``, ``float16``), except its
        :attr:`float32_modules`. Every module holding tensors casts its floating inputs to its own dtype (forward
        pre-hooks), so activations change dtype where the weights do; taps leave :meth:`forward_taps` in float32.
        The backbone's own buffers (input normalisation) stay float32."""
        dtype = BACKBONE_DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
        if dtype not in BACKBONE_DTYPES.values():
            raise ValueError(f"backbone dtype must be one of {', '.join(BACKBONE_DTYPES)}, got {dtype}")
        kept = {id(m) for name in self.float32_modules for m in getattr(self, name).modules()}
        for module in self.modules():
            if isinstance(module, TapBackbone):      # this one, or a wrapped one: their input normalisation
                continue
            target = torch.float32 if id(module) in kept else dtype
            own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
            floating = [(name, tensor) for name, tensor in own if tensor.is_floating_point()]
            if not floating:
                continue
            for name, tensor in floating:
                if name in module._parameters:
                    tensor.data = tensor.data.to(target)
                else:
                    module._buffers[name] = tensor.to(target)
            previous = getattr(module, "_molt_cast_hook", None)
            if previous is not None:
                previous.remove()
            module._molt_cast_hook = module.register_forward_pre_hook(_cast_inputs(target), with_kwargs=True)
        self.compute_dtype = dtype
        return self

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

    def final_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """The backbone's own normalisation after its last block, on ``(B, N, D)`` tokens (the identity for a
        backbone without one)."""
        return tokens

    def add_to_sequence(self, tokens: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """``tokens`` (native layout) plus ``update`` ``(B, N, D)`` on the tokens :meth:`to_sequence` reads (an
        in-block adapter's residual update); tokens it does not read (a ViT's class token) are left as they are."""
        return tokens + update.reshape(tokens.shape)

    def _no_sublayers(self) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} does not expose its blocks' sub-layers, which in-block "
                                   f"methods (lavish, dgsct, avmoe) need; use a tap-reading method (molt, mettle)")

    def enter_block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens entering block ``index`` proper: the stage's patch merging applied when ``index`` opens a stage
        whose merging comes first (native layout in and out)."""
        raise self._no_sublayers()

    def attention_sublayer(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` plus block ``index``'s attention residual branch (native layout in and out)."""
        raise self._no_sublayers()

    def mlp_sublayer(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` plus block ``index``'s MLP residual branch (native layout in and out)."""
        raise self._no_sublayers()

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
        if self.compute_dtype != torch.float32:
            taps = [tap.float() for tap in taps]
        return taps

    def forward(self, x: torch.Tensor, blocks: BlockSelection | Sequence[int] = "all") -> list[torch.Tensor]:
        return self.forward_taps(x, blocks)
