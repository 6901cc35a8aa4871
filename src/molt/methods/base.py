"""The method contract: config base classes, :class:`MethodOutput`, the wrappers that run a method on the frozen
backbones, tap checks, the fuse-and-zero-fill step and parameter counting.

Part of molt-av (Apache-2.0). A method (MoLT, Mettle, LAVisH, DG-SCT, AVMoE) is a trainable ``nn.Module`` with a
``config`` (a :class:`MethodConfig`), ``modalities``, ``output_dim`` and ``forward(visual_taps, audio_taps) ->
MethodOutput``; a :class:`MethodModel` runs it on the frozen backbones: :class:`TapReadingModel` for methods that
only read block outputs (their taps can be cached), :class:`~molt.methods.inblock.InBlockModel` for methods whose
adapters sit inside the blocks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..backbones.taps import BlockSelection
from ..typed_config import TypedConfig, ranged

__all__ = ["MODALITIES", "MethodConfig", "TapMethodConfig", "MethodOutput", "Method", "MethodModel",
           "TapReadingModel", "check_taps", "check_method_taps", "resolve_tap_blocks", "fuse_and_zero_fill",
           "count_parameters", "format_parameter_count", "print_trainable_parameters", "preprocess_input"]

_logger = logging.getLogger(__name__)

MODALITIES = ("both", "visual", "audio")


@dataclass
class MethodConfig(TypedConfig):
    """The hyper-parameters every method has (each method's config derives from it and adds its own).

    Attributes:
        dim: common token width ``D`` of the fused tokens a task head reads.
        num_tokens: tokens per modality ``K`` the head reads.
        num_tokens_audio: audio tokens if different from ``num_tokens``.
        modalities: ``"both"``, ``"visual"`` or ``"audio"`` (single-modality variants).
    """

    dim: int = ranged(512, at_least=1, meaning="width of the fused tokens")
    num_tokens: int = ranged(8, at_least=1, meaning="tokens per modality")
    num_tokens_audio: int | None = ranged(None, at_least=1, meaning="audio tokens, null: num_tokens")
    modalities: str = "both"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {', '.join(MODALITIES)}, got {self.modalities!r}")

    @property
    def tokens_visual(self) -> int:
        return self.num_tokens

    @property
    def tokens_audio(self) -> int:
        return self.num_tokens if self.num_tokens_audio is None else self.num_tokens_audio

    @property
    def active_modalities(self) -> list[str]:
        return ["visual", "audio"] if self.modalities == "both" else [self.modalities]


@dataclass
class TapMethodConfig(MethodConfig):
    """What the tap-reading methods (MoLT, Mettle) add: the block selections and their attention.

    Attributes:
        blocks_visual, blocks_audio: block selections (see :mod:`molt.backbones.taps`).
        num_heads: attention heads ``H`` of every adapter (must divide ``dim``).
        dropout: attention dropout.
        pre_norm: LayerNorm on each tap before its adapters.
    """

    blocks_visual: BlockSelection = "late"
    blocks_audio: BlockSelection = "late"
    num_heads: int = ranged(8, at_least=1, meaning="attention heads, dividing dim")
    dropout: float = ranged(0.0, at_least=0, below=1, meaning="attention dropout probability")
    pre_norm: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("blocks_visual", "blocks_audio"):
            value = getattr(self, name)
            if isinstance(value, tuple):
                setattr(self, name, list(value))
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be a positive multiple of num_heads ({self.num_heads})")


@dataclass
class MethodOutput:
    """What a method (MoLT, Mettle, ...) hands to a task head.

    Attributes:
        visual: fused visual tokens ``(B', K, D)``.
        audio: fused audio tokens ``(B', K, D)``.
        aux_losses: auxiliary losses, already weighted, to add to the task loss (MoLT: ``"tor"``).
        extras: analysis tensors (router weights, fusion weights, layer-wise tokens, ...).
    """

    visual: torch.Tensor
    audio: torch.Tensor
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


class Method(nn.Module):
    """Base of a method's trainable modules (MoLT, Mettle, the in-block methods).

    Sets what the framework reads: ``config``, ``modalities`` (the active ones, ``["visual", "audio"]`` for
    ``"both"``), ``output_dim`` (``D``) and ``num_tokens`` (``K`` per modality). Subclasses implement
    ``forward(visual_taps, audio_taps) -> MethodOutput`` with fused tokens ``(B', K, D)`` per modality.
    """

    def __init__(self, config: MethodConfig) -> None:
        super().__init__()
        self.config = config
        self.modalities = config.active_modalities
        self.output_dim = config.dim
        self.num_tokens = {"visual": config.tokens_visual, "audio": config.tokens_audio}

    def forward(self, visual_taps: Sequence[torch.Tensor] | None,
                audio_taps: Sequence[torch.Tensor] | None) -> MethodOutput:
        raise NotImplementedError


def check_taps(method: str, name: str, taps: Sequence[torch.Tensor] | None,
               widths: Sequence[int]) -> list[torch.Tensor]:
    """One ``(B, N, D_l)`` tap per selected block of modality ``name``, with the widths the method was built for."""
    if taps is None or len(taps) != len(widths):
        got = "None" if taps is None else f"{len(taps)} taps"
        raise ValueError(f"{method} expects {len(widths)} {name} taps (one per selected block), got {got}")
    for index, (tap, width) in enumerate(zip(taps, widths)):
        if tap.ndim != 3 or tap.shape[-1] != width:
            raise ValueError(f"{name} tap {index}: expected shape (B, N, {width}), got {tuple(tap.shape)}")
    return list(taps)


def check_method_taps(method: str, modalities: Sequence[str], visual_taps: Sequence[torch.Tensor] | None,
                      audio_taps: Sequence[torch.Tensor] | None, visual_dims: Sequence[int],
                      audio_dims: Sequence[int]) -> tuple[dict[str, list[torch.Tensor]], int]:
    """Check the taps of every active modality (:func:`check_taps`) and that they share one batch size ``B'``.

    Returns the taps by modality name and ``B'``.
    """
    given = {"visual": (visual_taps, visual_dims), "audio": (audio_taps, audio_dims)}
    taps = {name: check_taps(method, name, *given[name]) for name in modalities}
    batch_sizes = {tap.shape[0] for values in taps.values() for tap in values}
    if len(batch_sizes) != 1:
        raise ValueError(f"all taps must share the batch size B', got sizes {sorted(batch_sizes)}")
    return taps, batch_sizes.pop()


def resolve_tap_blocks(method: str, config: TapMethodConfig, visual: nn.Module | None,
                       audio: nn.Module | None) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """The block indices ``config`` selects in each active modality's backbone, and their widths.

    Returns ``(blocks, dims)``, each ``{"visual": [...], "audio": [...]}`` (empty lists for an absent modality).
    """
    backbones = {"visual": visual, "audio": audio}
    selections = {"visual": config.blocks_visual, "audio": config.blocks_audio}
    blocks: dict[str, list[int]] = {"visual": [], "audio": []}
    dims: dict[str, list[int]] = {"visual": [], "audio": []}
    for name in config.active_modalities:
        backbone = backbones[name]
        if backbone is None:
            raise ValueError(f"{method} with modalities={config.modalities!r} needs a {name} backbone, got None")
        blocks[name] = backbone.resolve_blocks(selections[name])
        dims[name] = [backbone.block_dims[index] for index in blocks[name]]
    return blocks, dims


def fuse_and_zero_fill(fusion: Mapping[str, nn.Module], layer_tokens: Mapping[str, torch.Tensor], *, batch: int,
                       num_tokens: Mapping[str, int],
                       dim: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Fuse each present modality's layer-wise tokens ``(B', L, K, D)`` with its fusion module (``-> (B', K, D)``
    and weights ``(B', L)``); an absent modality gets zeros ``(B', K, D)`` (no gradient), so every head runs.

    Returns the fused tokens of both modalities and the fusion weights of the present ones.
    """
    fused, weights = {}, {}
    for name, tokens in layer_tokens.items():
        fused[name], weights[name] = fusion[name](tokens)
    reference = next(iter(fused.values()))
    for name in ("visual", "audio"):
        if name not in fused:
            fused[name] = reference.new_zeros(batch, num_tokens[name], dim)
    return fused, weights


def count_parameters(*modules: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts of ``modules``, each tensor counted once (shared backbones,
    tied weights). Needs no forward pass and works on the ``meta`` device."""
    seen: set[int] = set()
    trainable = total = 0
    for module in modules:
        for parameter in module.parameters():
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            total += parameter.numel()
            if parameter.requires_grad:
                trainable += parameter.numel()
    return trainable, total


def format_parameter_count(trainable: int, total: int) -> str:
    share = 100.0 * trainable / total if total else 0.0
    return f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {share:.4f}"


def print_trainable_parameters(*modules: nn.Module) -> str:
    """Log (INFO) and return ``"trainable params: X || all params: Y || trainable%: Z"`` (PEFT style)."""
    line = format_parameter_count(*count_parameters(*modules))
    _logger.info(line)
    return line


def preprocess_input(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` through the backbone's ``preprocess`` when it has one."""
    function = getattr(backbone, "preprocess", None)
    return function(x) if callable(function) else x


class MethodModel(nn.Module):
    """Frozen backbones + a method's trainable modules: ``(frames, waveform)`` -> :class:`MethodOutput`.

    Args:
        visual, audio: frozen :class:`~molt.backbones.base.TapBackbone` objects (may share parameters, or be the
            same object, in the shared-Swin setting); the absent one may be ``None`` in a single-modality variant.
        method: the trainable :class:`Method`.
        visual_blocks, audio_blocks: resolved block indices the method reads.

    Subclasses implement :meth:`compute_inputs`.
    """

    def __init__(self, *, visual: nn.Module | None, audio: nn.Module | None, method: nn.Module,
                 visual_blocks: list[int], audio_blocks: list[int]) -> None:
        super().__init__()
        self.visual = visual
        self.audio = audio
        self.method = method
        self.visual_blocks = list(visual_blocks)
        self.audio_blocks = list(audio_blocks)

    @property
    def config(self) -> MethodConfig:
        return self.method.config

    def compute_inputs(self, frames: torch.Tensor | None, waveform: torch.Tensor | None, *,
                       stage_blocks: Sequence[int] = ()) -> dict[str, list[torch.Tensor] | None]:
        """Everything a batch needs from the backbones: ``visual_taps`` and ``audio_taps`` (what the method reads,
        lists of ``(B', N, D)`` or ``None`` for an absent modality) and ``visual_stages``, the visual tokens leaving
        ``stage_blocks`` ``[(B', N_s, C_s)]`` (``None`` when ``stage_blocks`` is empty)."""
        raise NotImplementedError

    def forward(self, frames: torch.Tensor | None, waveform: torch.Tensor | None) -> MethodOutput:
        """``frames`` ``(B', 3, H, W)``, ``waveform`` ``(B', S)`` -> fused tokens and aux losses."""
        inputs = self.compute_inputs(frames, waveform)
        return self.method(inputs["visual_taps"], inputs["audio_taps"])

    def forward_from_taps(self, visual_taps: Sequence[torch.Tensor] | None,
                          audio_taps: Sequence[torch.Tensor] | None) -> MethodOutput:
        """Same as :meth:`forward` from precomputed (e.g. cached) method inputs."""
        return self.method(visual_taps, audio_taps)

    def count_parameters(self) -> tuple[int, int]:
        return count_parameters(self)

    def print_trainable_parameters(self) -> str:
        return print_trainable_parameters(self)


class TapReadingModel(MethodModel):
    """A :class:`MethodModel` for methods that only read the outputs of the selected blocks (MoLT, Mettle): the
    backbones run unchanged, so their taps are a pure function of the input and can be cached.

    Each backbone's ``preprocess`` (when it has one) is applied to its input before ``forward_taps``.
    """

    def _taps(self, backbone: nn.Module, x: torch.Tensor, blocks: list[int]) -> list[torch.Tensor]:
        return backbone.forward_taps(preprocess_input(backbone, x), blocks)

    def _audio_taps(self, waveform: torch.Tensor | None) -> list[torch.Tensor] | None:
        if "audio" not in self.method.modalities:
            return None
        if waveform is None:
            raise ValueError("a method with audio input needs a waveform (B', S), got None")
        return self._taps(self.audio, waveform, self.audio_blocks)

    def compute_taps(self, frames: torch.Tensor | None,
                     waveform: torch.Tensor | None) -> tuple[list[torch.Tensor] | None, list[torch.Tensor] | None]:
        """Taps ``[(B', N_l, D_l)]`` of the selected blocks of each active modality (``None`` for an absent one)."""
        visual_taps = None
        if "visual" in self.method.modalities:
            if frames is None:
                raise ValueError("a method with visual input needs frames (B', 3, H, W), got None")
            visual_taps = self._taps(self.visual, frames, self.visual_blocks)
        return visual_taps, self._audio_taps(waveform)

    def compute_inputs(self, frames: torch.Tensor | None, waveform: torch.Tensor | None, *,
                       stage_blocks: Sequence[int] = ()) -> dict[str, list[torch.Tensor] | None]:
        """As :meth:`MethodModel.compute_inputs`, one pass per backbone (the stage blocks are read with the taps)."""
        if not stage_blocks:
            visual_taps, audio_taps = self.compute_taps(frames, waveform)
            return {"visual_taps": visual_taps, "audio_taps": audio_taps, "visual_stages": None}
        if frames is None or self.visual is None:
            raise ValueError("the task needs visual stage features, so frames and a visual backbone are required")
        visual_used = "visual" in self.method.modalities
        wanted = sorted(set(stage_blocks) | (set(self.visual_blocks) if visual_used else set()))
        by_block = dict(zip(wanted, self._taps(self.visual, frames, wanted)))
        return {"visual_taps": [by_block[i] for i in self.visual_blocks] if visual_used else None,
                "audio_taps": self._audio_taps(waveform), "visual_stages": [by_block[i] for i in stage_blocks]}
