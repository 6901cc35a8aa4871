"""Mettle: Layer-Centric Distillation of every backbone layer into meta-tokens, fused by averaging.

Mettle: Meta-Token Learning for Memory-Efficient Audio-Visual Adaptation, Zhou et al., IEEE TPAMI 2025
(arXiv 2506.23271). Re-implemented here as a baseline for MoLT (Rho et al.), which describes it in Secs. 1 and 2.2
and Tab. 7: uni-modal distillation of *every* layer into meta-tokens, in parallel, with no cross-modal adapter and
no orthogonality regularization, the layer-wise meta-tokens being fused by a plain average.

Mettle's code could not be read for this project; what follows is built from the two papers' descriptions.
Every assumption is listed:

* **LCD = MoLT's uni-modal distillation adapter.** For each modality ``m`` and selected block ``l``, ``K``
  learnable meta-tokens read the frozen block's tokens by multi-head attention (the "task-specific adaptation"
  part) and a linear projection of the block's mean-pooled tokens is added to every meta-token (our reading of
  "pretrained knowledge preservation": a direct, attention-free path from the intact features). This is exactly
  :class:`~molt.methods.distillation_adapters.UniModalDistillationAdapter` (MoLT eq. 1), reused as is, with
  MoLT's optional pre-LayerNorm on the tap. Mettle's LCD may differ in detail (e.g. an extra
  feed-forward layer on the meta-tokens); its memory profile, which is what the benchmark compares, is the same:
  attention from a few tokens to each intact layer, no gradient through the backbone.
* **Every layer of each backbone** (``blocks_visual = blocks_audio = "all"`` by default): Swin-V2-L has 24 blocks
  and HTS-AT 12, so layers are **not paired**: each modality distils and averages its own layers.
* **Fusion by averaging** across layers, per modality (Mettle's "simple average pooling"; MoLT Tab. 7 "Avg.
  pool"), with :class:`~molt.methods.token_fusion.TokenFusion` in ``"avg"`` mode.
* **One set of meta-tokens per layer and segment**: LCD runs on every 1-s segment independently (``B' = B*T``
  rows), as Mettle applies LCD "at each timestamp".
* **Widths** (``lcd_width``): by default the meta-tokens live at each layer's own width ``D_l`` and one linear
  map per layer takes them to the common width ``D = dim``, so the layers can be averaged and any task head reads
  ``(B', K, D)``. At paper scale (Swin-V2-L + HTS-AT, every block, ``K = 8``, ``D = 256``, our AVE head) this
  gives 78.3 M trainable = 23.1 % of 338.4 M counted as the paper counts (Swin-V2-L with its ImageNet-22k head),
  against the published 23.0 % of 338.0 M (MoLT Tab. 3). ``lcd_width: common`` (LCDs straight to ``D``, as
  MoLT's adapters do) gives 24.1 M, a third of the published size: the difference is the ``D_l``-wide
  attention projections of the 18 768-wide and 2 1536-wide Swin blocks.
* **Meta-Token Injection (MTI)**, for segmentation (``injection: true``; ``--method mettle`` sets it for AVS
  together with LCD on the top block of each backbone only, as the abstract says). The most literal reading of
  "the audio and visual meta-tokens distilled from the top transformer layer guide the adaptation of the
  features of earlier layers" that keeps Mettle's memory profile (:class:`MetaTokenInjection`): the features of
  earlier layers are the visual stage outputs the segmentation decoder reads (the last block of each stage);
  each stage ``s`` gets ``F_s + g_s * Attn(LN(F_s), [Z_v; Z_a])``, its tokens attending (multi-head, learned
  ``W^Q, W^K, W^V`` at the stage's width) to the ``2K`` top-layer meta-tokens of the same segment, with a gate
  ``g_s`` at zero. The guidance changes the features the decoder reads, **not** the backbone's forward: no
  gradient enters the backbone, the stage features are frozen taps and can be cached (``molt extract``).
  Assumptions: which layers MTI touches (here: the decoder's four stage features), the operator (here: gated
  cross-attention, the same kind LCD uses), and that the audio and visual meta-tokens are used together.

Single-modality variants behave like MoLT's: the absent modality's tokens are zeros ``(B', K, D)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..backbones.taps import BlockSelection
from .base import (Method, MethodOutput, TapMethodConfig, TapReadingModel, check_method_taps, fuse_and_zero_fill,
                   resolve_tap_blocks)
from .distillation_adapters import LayerCentricDistillation, heads_dividing
from .registry import MethodSpec, register_method
from .token_distillation import TokenAttention
from .token_fusion import TokenFusion

__all__ = ["MettleConfig", "MetaTokenInjection", "Mettle", "build_mettle_method",
           "METTLE_TASK_SETTINGS", "LCD_WIDTHS"]

#: ``lcd_width`` values: meta-tokens at the common width, or at each layer's own width
LCD_WIDTHS = ("common", "layer")

#: ``method_config`` defaults per task: segmentation distils the top block only and injects its meta-tokens
METTLE_TASK_SETTINGS = {"avs": {"blocks_visual": 1, "blocks_audio": 1, "injection": True}}


@dataclass
class MettleConfig(TapMethodConfig):
    """Hyper-parameters of Mettle (plain data, JSON round-trip, see :class:`~molt.methods.base.TapMethodConfig`).

    Attributes:
        blocks_visual, blocks_audio: block selections (see :mod:`molt.backbones.taps`); Mettle: ``"all"``. The two
            modalities are not paired, so the selections may have different lengths.
        num_tokens: meta-tokens per modality and layer ``K``.
        num_tokens_audio: audio meta-tokens if different from ``num_tokens``.
        dim: common token width ``D`` (= heads x head width).
        num_heads: attention heads of every LCD.
        modalities: ``"both"``, ``"visual"`` or ``"audio"``.
        dropout: attention dropout.
        pre_norm: LayerNorm on each tap before its LCD.
        injection: Meta-Token Injection into the visual stage features of a dense head (segmentation).
        lcd_width: ``"layer"`` (default): meta-tokens at each layer's own width ``D_l`` (an LCD of width ``D_l``),
            then one linear map ``D_l -> D`` per layer so the layers can be averaged and read by the heads (see
            :class:`LayerCentricDistillation`); the reading whose size matches the published one. ``"common"``:
            every LCD distils its layer straight to the common width ``D`` (this project's first reading).
    """

    blocks_visual: BlockSelection = "all"
    blocks_audio: BlockSelection = "all"
    injection: bool = False
    lcd_width: str = "layer"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lcd_width not in LCD_WIDTHS:
            raise ValueError(f"lcd_width must be one of {', '.join(LCD_WIDTHS)}, got {self.lcd_width!r}")


class MetaTokenInjection(nn.Module):
    """MTI (see the module docstring): the top-layer meta-tokens guide each visual stage feature.

    Args:
        stage_dims: widths ``C_s`` of the stage features, finest first.
        dim: meta-token width ``D``.
        num_heads: maximum attention heads (the largest divisor of ``C_s`` not above it is used).

    ``forward(stages [(B', N_s, C_s)], meta_tokens (B', M, D))`` -> the guided stages, same shapes; with the gates
    at zero (the start) they are the input stages.
    """

    def __init__(self, stage_dims: Sequence[int], *, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(width) for width in stage_dims)
        self.attention = nn.ModuleList(
            TokenAttention(query_dim=width, kv_dim=dim, dim=width, num_heads=heads_dividing(width, num_heads))
            for width in stage_dims)
        self.gates = nn.Parameter(torch.zeros(len(stage_dims)))

    def forward(self, stages: Sequence[torch.Tensor], meta_tokens: torch.Tensor) -> list[torch.Tensor]:
        if len(stages) != len(self.norms):
            raise ValueError(f"Meta-Token Injection was built for {len(self.norms)} stage features, got {len(stages)}")
        return [stage + gate * attention(norm(stage), meta_tokens)
                for stage, norm, attention, gate in zip(stages, self.norms, self.attention, self.gates)]


class Mettle(Method):
    """Mettle's trainable side modules: one LCD per modality and selected block, averaged per modality.

    Args:
        config: :class:`MettleConfig`.
        visual_dims: widths of the selected visual blocks, in order (24 for Swin-V2-L "all").
        audio_dims: widths of the selected audio blocks, in order (12 for HTS-AT "all").

    ``forward(visual_taps, audio_taps)`` takes ``[(B', N_l, D_l)]`` per modality and returns a
    :class:`~molt.methods.base.MethodOutput` with ``visual`` / ``audio`` ``(B', K, D)`` (the mean of the layer-wise
    meta-tokens; zeros for an absent modality), no auxiliary loss, and ``extras``: ``layer_tokens``
    ``{m: (B', L_m, K, D)}`` and ``fusion_weights`` ``{m: (B', L_m)}`` (uniform).
    """

    def __init__(self, config: MettleConfig, visual_dims: Sequence[int], audio_dims: Sequence[int], *,
                 stage_dims: Sequence[int] = ()) -> None:
        super().__init__(config)
        self.visual_dims = [int(d) for d in visual_dims or []]
        self.audio_dims = [int(d) for d in audio_dims or []]
        dims = {"visual": self.visual_dims, "audio": self.audio_dims}
        for name in self.modalities:
            if not dims[name]:
                raise ValueError(f"Mettle needs at least one selected {name} block, got none")
        self.lcds = nn.ModuleDict({
            name: nn.ModuleList(
                LayerCentricDistillation(in_dim=width, dim=config.dim, num_tokens=self.num_tokens[name],
                                         num_heads=config.num_heads, attn_drop=config.dropout,
                                         pre_norm=config.pre_norm, layer_width=config.lcd_width == "layer")
                for width in dims[name])
            for name in self.modalities})
        self.fusion = nn.ModuleDict({
            name: TokenFusion(dim=config.dim, num_layers=len(dims[name]), fusion="avg") for name in self.modalities})
        if config.injection and not stage_dims:
            raise ValueError("Mettle's Meta-Token Injection needs the visual backbone's stage widths "
                             "(a visual backbone); set injection: false")
        self.injection = MetaTokenInjection(stage_dims, dim=config.dim, num_heads=config.num_heads) \
            if config.injection else None

    def inject_stages(self, stages: Sequence[torch.Tensor], output: MethodOutput) -> list[torch.Tensor]:
        """The visual stage features a dense head reads, guided by this batch's meta-tokens (MTI); unchanged when
        the config has no injection."""
        if self.injection is None:
            return list(stages)
        meta_tokens = torch.cat([getattr(output, name) for name in self.modalities], dim=1)
        return self.injection(stages, meta_tokens)

    def forward(self, visual_taps: Sequence[torch.Tensor] | None,
                audio_taps: Sequence[torch.Tensor] | None) -> MethodOutput:
        taps, batch = check_method_taps("Mettle", self.modalities, visual_taps, audio_taps, self.visual_dims,
                                        self.audio_dims)
        layer_tokens = {name: torch.stack([lcd(tap) for lcd, tap in zip(self.lcds[name], taps[name])], dim=1)
                        for name in self.modalities}
        fused, fusion_weights = fuse_and_zero_fill(self.fusion, layer_tokens, batch=batch, num_tokens=self.num_tokens,
                                                   dim=self.config.dim)
        return MethodOutput(visual=fused["visual"], audio=fused["audio"], aux_losses={},
                            extras={"layer_tokens": layer_tokens, "fusion_weights": fusion_weights})


def build_mettle_method(config: MettleConfig, visual: nn.Module | None,
                        audio: nn.Module | None) -> tuple[Mettle, list[int], list[int]]:
    """The :class:`Mettle` side modules for these backbones, with the resolved visual and audio block indices."""
    blocks, dims = resolve_tap_blocks("Mettle", config, visual, audio)
    stage_dims = [visual.block_dims[i] for i in visual.stage_end_blocks] if config.injection and visual else []
    return (Mettle(config, dims["visual"], dims["audio"], stage_dims=stage_dims), blocks["visual"],
            blocks["audio"])


register_method(MethodSpec("mettle", MettleConfig, build_mettle_method, TapReadingModel, reads_taps=True,
                           task_settings=METTLE_TASK_SETTINGS,
                           description="Mettle: layer-centric distillation of meta-tokens from every block "
                                       "(+ Meta-Token Injection for segmentation)"))
