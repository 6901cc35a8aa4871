"""MoLT: the Feature Distillation Modules, the Token Fusion Modules and Token Orthogonality Regularization, composed.

MoLT: Mixture of Layer-Wise Tokens for Efficient Audio-Visual Learning, Rho et al. (Sec. 3). For every selected
layer pair (visual block ``l_v``, audio block ``l_a``) one Feature Distillation Module (FDM) turns the two frozen
taps into layer-wise tokens ``z~_v^(l)`` ``(B, K_v, D)`` and ``z~_a^(l)`` ``(B, K_a, D)`` with ``N_UDA`` uni-modal and
``N_CDA`` cross-modal distillation adapters mixed by a router (eqs. 1-5); a modality-specific Token Fusion Module
fuses the layers (eqs. 6-7); TOR (eq. 8) is returned as an auxiliary loss.

Widths. Audio and visual taps have different widths (Swin-V2-L late blocks 1536, HTS-AT late blocks 768) and
layers of different stages may be selected. Every adapter projects to the common width ``D = config.dim`` inside
itself: ``W^Q``/``W^K``/``W^V`` map ``D_l -> H*d_H = D`` (so TD's output is already in ``D``) and the residual
``W`` maps ``D_l -> D``. The router reads the pooled taps in their own widths.

Additions to the paper's equations (documented choices):

* ``pre_norm`` (default on): a LayerNorm per modality and layer on the tap before the adapters and the router.
  Late Swin-V2 blocks (res-post-norm) emit large, unnormalised activations; the norm keeps the attention logits
  and the router input in a sane range. ``pre_norm=False`` gives the literal equations.
* ``dropout``: attention dropout inside every TD and CA (0 by default).
* Each adapter (expert) has its own projections and latent tokens, as in a usual mixture of experts. (Eq. 2
  writes ``W^Q_m`` without an adapter index; sharing the projections across a modality's adapters is another
  reading that we do not implement.)

Single-modality variants (``modalities="visual"`` or ``"audio"``, e.g. the audio-only / visual-only AVE rows):
only that modality's FDMs (UDAs only; CDAs need both senses, so ``num_cda`` is ignored), router (on that
modality's pooled tap) and TFM exist; the other modality's taps are ignored (may be ``None``) and its backbone is
never run by :class:`~molt.methods.base.TapReadingModel`. The absent modality's fused tokens are **zeros** of shape
``(B', K, D)`` so that every task head runs unchanged (attention over all-zero keys/values yields zeros); they carry
no gradient (:func:`~molt.methods.base.fuse_and_zero_fill`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..typed_config import ranged
from .base import (Method, MethodOutput, TapMethodConfig, TapReadingModel, check_method_taps, fuse_and_zero_fill,
                   resolve_tap_blocks)
from .distillation_adapters import CrossModalDistillationAdapter, UniModalDistillationAdapter
from .orthogonality import token_orthogonality_loss
from .registry import MethodSpec, register_method
from .router import Router, mix_experts
from .token_distillation import SharedProjections
from .token_fusion import FUSION_MODES, TokenFusion

__all__ = ["MoLTConfig", "FeatureDistillationModule", "MoLT", "build_molt", "build_molt_method", "SHARE_PROJECTIONS"]

#: values of :attr:`MoLTConfig.share_projections`
SHARE_PROJECTIONS = ("adapter", "modality")


@dataclass
class MoLTConfig(TapMethodConfig):
    """Hyper-parameters of MoLT (PEFT-style: plain data, JSON round-trip).

    Attributes:
        blocks_visual, blocks_audio: block selections (see :mod:`molt.backbones.taps`); paired layer by layer,
            so both must resolve to the same number of blocks when ``modalities="both"``. Paper: ``"late"``.
        num_tokens: latent tokens per modality and layer ``K`` (paper: 2, 4, 6, 8; best 8 for AVE/AVQA).
        num_tokens_audio: audio latent tokens if different from ``num_tokens``.
        num_uda, num_cda: uni-modal / cross-modal distillation adapters per FDM (paper best: 2 and 2).
        dim: common token width ``D`` (= heads x head width).
        num_heads: attention heads ``H`` of every TD and CA.
        fusion: ``"mlp"`` (TFM, eqs. 6-7), ``"avg"`` or ``"gates"`` (Tab. 7 alternatives).
        tor_weight: weight of the TOR loss (eq. 8), summed over the two modalities; 0 disables it (Tab. 8). The
            paper gives no value; 0.1 keeps it below a cross-entropy of ~1-3 once tokens have separated (N(N-1)
            = 240 for 16 identical tokens, about 0.5 for random 512-d tokens). At initialisation the K tokens
            of a layer are nearly identical (near-uniform attention plus a shared residual), so TOR starts near
            ``L*K*(K-1)`` (about 112 per modality for L=2, K=8); with TOR alone and Adam at lr 5e-4 it falls
            to ~5 within 20-30 steps on synthetic structured taps.
        modalities: ``"both"``, ``"visual"`` or ``"audio"`` (single-modality variants, see module docstring).
        dropout: attention dropout in TD and CA.
        pre_norm: LayerNorm on each tap before its FDM (see module docstring).
        router_hidden, fusion_hidden: hidden widths of the router and TFM MLPs (default ``dim``).
        share_projections: ``"adapter"``: every TD has its own ``W^Q``, ``W^K``, ``W^V``; ``"modality"``: the
            literal reading of eq. 2 (``W^Q_m, W^K_m, W^V_m`` carry the modality index only): one set per modality
            and layer, shared by its UDAs and CDAs, so each tap is projected to keys and values once; latent
            tokens, residual ``W`` and the CDAs' cross-attentions stay per adapter.
    """

    num_uda: int = ranged(2, at_least=0, meaning="uni-modal distillation adapters per layer")
    num_cda: int = ranged(2, at_least=0, meaning="cross-modal distillation adapters per layer")
    fusion: str = "mlp"
    tor_weight: float = ranged(0.1, at_least=0, meaning="weight of the token orthogonality loss, 0: off")
    router_hidden: int | None = ranged(None, at_least=1, meaning="hidden width of the router, null: dim")
    fusion_hidden: int | None = ranged(None, at_least=1, meaning="hidden width of the token fusion, null: dim")
    share_projections: str = "adapter"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.share_projections not in SHARE_PROJECTIONS:
            raise ValueError(f"share_projections must be one of {', '.join(SHARE_PROJECTIONS)}, got "
                             f"{self.share_projections!r}")
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {', '.join(FUSION_MODES)}, got {self.fusion!r}")
        if self.modalities == "both" and self.num_uda + self.num_cda < 1:
            raise ValueError("MoLT needs at least one distillation adapter per layer (num_uda + num_cda >= 1)")
        if self.modalities != "both" and self.num_uda < 1:
            raise ValueError(f"the single-modality variant ({self.modalities}) has no cross-modal adapters: "
                             f"it needs num_uda >= 1, got {self.num_uda}")

    @property
    def num_cda_active(self) -> int:
        return self.num_cda if self.modalities == "both" else 0

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w") as handle:
            handle.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MoLTConfig":
        with open(path) as handle:
            return cls.from_json(handle.read(), source=os.fspath(path))


class FeatureDistillationModule(nn.Module):
    """One FDM (Sec. 3.2): ``N_UDA`` UDAs per modality, ``N_CDA`` CDAs, a router, for one layer pair.

    Args:
        visual_dim, audio_dim: tap widths of this layer (``None`` for an absent modality).
        dim: output width ``D``.
        num_tokens_visual, num_tokens_audio: latent tokens ``K`` per modality.
        num_uda, num_cda: adapter counts (``num_cda`` must be 0 when a modality is absent).
        num_heads: attention heads.
        attn_drop: attention dropout.
        pre_norm: LayerNorm on each tap first.
        router_hidden: hidden width of the router MLP (default ``dim``).
        share_projections: ``"adapter"`` or ``"modality"`` (see :class:`MoLTConfig`).

    ``forward(visual (B, N_v, D_v) | None, audio (B, N_a, D_a) | None)`` -> ``(tokens, weights)`` with
    ``tokens[m]`` ``(B, K_m, D)`` for each present modality (eq. 5) and router ``weights`` ``(B, N_UDA + N_CDA)``
    (eq. 4), shared by the two modalities.
    """

    def __init__(self, *, visual_dim: int | None, audio_dim: int | None, dim: int, num_tokens_visual: int,
                 num_tokens_audio: int, num_uda: int, num_cda: int, num_heads: int, attn_drop: float = 0.0,
                 pre_norm: bool = True, router_hidden: int | None = None,
                 share_projections: str = "adapter") -> None:
        super().__init__()
        dims = {"visual": visual_dim, "audio": audio_dim}
        tokens = {"visual": num_tokens_visual, "audio": num_tokens_audio}
        self.modalities = [name for name, width in dims.items() if width is not None]
        if not self.modalities:
            raise ValueError("an FDM needs at least one modality")
        if num_cda and len(self.modalities) < 2:
            raise ValueError("cross-modal distillation adapters need both modalities")
        if num_uda + num_cda < 1:
            raise ValueError("an FDM needs at least one distillation adapter (num_uda + num_cda >= 1)")
        self.num_uda, self.num_cda = num_uda, num_cda
        self.norms = nn.ModuleDict({
            name: nn.LayerNorm(dims[name]) if pre_norm else nn.Identity() for name in self.modalities})
        own = share_projections == "adapter"
        self.shared = None if own else nn.ModuleDict({
            name: SharedProjections(in_dim=dims[name], dim=dim, num_heads=num_heads) for name in self.modalities})
        self.udas = nn.ModuleDict({
            name: nn.ModuleList(UniModalDistillationAdapter(in_dim=dims[name], dim=dim, num_tokens=tokens[name],
                                                            num_heads=num_heads, attn_drop=attn_drop,
                                                            own_projections=own)
                                for _ in range(num_uda))
            for name in self.modalities})
        self.cdas = nn.ModuleList(
            CrossModalDistillationAdapter(visual_dim=visual_dim, audio_dim=audio_dim, dim=dim,
                                          num_tokens_visual=num_tokens_visual, num_tokens_audio=num_tokens_audio,
                                          num_heads=num_heads, attn_drop=attn_drop, own_projections=own)
            for _ in range(num_cda))
        self.router = Router(in_dims=[dims[name] for name in self.modalities], num_experts=num_uda + num_cda,
                             hidden_dim=router_hidden or dim)

    def expert_outputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Adapter outputs ``{m: (B, N_UDA + N_CDA, K_m, D)}`` for normalised ``inputs`` ``{m: (B, N_m, D_m)}``,
        ordered UDAs then CDAs."""
        projected = ({} if self.shared is None
                     else {name: self.shared[name].project(inputs[name]) for name in self.modalities})
        outputs: dict[str, list[torch.Tensor]] = {
            name: [uda(inputs[name], projected.get(name)) for uda in self.udas[name]] for name in self.modalities}
        for cda in self.cdas:
            visual, audio = cda(inputs["visual"], inputs["audio"], projected or None)
            outputs["visual"].append(visual)
            outputs["audio"].append(audio)
        return {name: torch.stack(values, dim=1) for name, values in outputs.items()}

    def forward(self, visual: torch.Tensor | None,
                audio: torch.Tensor | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        raw = {"visual": visual, "audio": audio}
        inputs = {name: self.norms[name](raw[name]) for name in self.modalities}
        weights = self.router([inputs[name] for name in self.modalities])
        experts = self.expert_outputs(inputs)
        return {name: mix_experts(experts[name], weights) for name in self.modalities}, weights


class MoLT(Method):
    """MoLT's trainable side modules: one FDM per selected layer pair, one TFM per modality, TOR.

    Args:
        config: :class:`MoLTConfig`.
        visual_dims: widths of the selected visual blocks, in order (``[1536, 1536]`` for Swin-V2-L "late").
        audio_dims: widths of the selected audio blocks, in order (``[768, 768]`` for HTS-AT "late").

    The module owns no backbone; ``forward(visual_taps, audio_taps)`` takes the taps of the selected blocks,
    ``[(B', N_l, D_l)]``, paired layer by layer, and returns a :class:`MethodOutput` with

    * ``visual`` / ``audio``: fused tokens ``(B', K, D)`` (zeros for an absent modality);
    * ``aux_losses["tor"]``: ``tor_weight * (TOR_visual + TOR_audio)`` (absent when ``tor_weight == 0``);
    * ``extras``: ``router_weights`` ``(B', L, N_UDA + N_CDA)``, ``fusion_weights`` ``{m: (B', L)}``,
      ``layer_tokens`` ``{m: (B', L, K, D)}``, ``tor`` ``{m: unweighted detached TOR}`` (when enabled).
    """

    def __init__(self, config: MoLTConfig, visual_dims: Sequence[int], audio_dims: Sequence[int]) -> None:
        super().__init__(config)
        self.visual_dims = [int(d) for d in visual_dims or []]
        self.audio_dims = [int(d) for d in audio_dims or []]
        dims = {"visual": self.visual_dims, "audio": self.audio_dims}
        lengths = {name: len(dims[name]) for name in self.modalities}
        if any(length == 0 for length in lengths.values()):
            raise ValueError(f"MoLT needs at least one selected block per modality, got {lengths}")
        if len(set(lengths.values())) > 1:
            raise ValueError(f"visual and audio block selections must have the same length to be paired layer by "
                             f"layer: got {lengths['visual']} visual blocks ({config.blocks_visual!r}) and "
                             f"{lengths['audio']} audio blocks ({config.blocks_audio!r})")
        self.num_layers = next(iter(lengths.values()))
        self.fdms = nn.ModuleList(
            FeatureDistillationModule(
                visual_dim=self.visual_dims[index] if "visual" in self.modalities else None,
                audio_dim=self.audio_dims[index] if "audio" in self.modalities else None,
                dim=config.dim, num_tokens_visual=config.tokens_visual, num_tokens_audio=config.tokens_audio,
                num_uda=config.num_uda, num_cda=config.num_cda_active, num_heads=config.num_heads,
                attn_drop=config.dropout, pre_norm=config.pre_norm, router_hidden=config.router_hidden,
                share_projections=config.share_projections)
            for index in range(self.num_layers))
        self.fusion = nn.ModuleDict({
            name: TokenFusion(dim=config.dim, num_layers=self.num_layers, fusion=config.fusion,
                              hidden_dim=config.fusion_hidden)
            for name in self.modalities})

    def forward(self, visual_taps: Sequence[torch.Tensor] | None,
                audio_taps: Sequence[torch.Tensor] | None) -> MethodOutput:
        taps, batch = check_method_taps("MoLT", self.modalities, visual_taps, audio_taps, self.visual_dims,
                                        self.audio_dims)

        layer_tokens: dict[str, list[torch.Tensor]] = {name: [] for name in self.modalities}
        router_weights = []
        for index, fdm in enumerate(self.fdms):
            tokens, weights = fdm(taps["visual"][index] if "visual" in taps else None,
                                  taps["audio"][index] if "audio" in taps else None)
            for name in self.modalities:
                layer_tokens[name].append(tokens[name])
            router_weights.append(weights)
        stacked = {name: torch.stack(values, dim=1) for name, values in layer_tokens.items()}

        fused, fusion_weights = fuse_and_zero_fill(self.fusion, stacked, batch=batch, num_tokens=self.num_tokens,
                                                   dim=self.config.dim)

        extras: dict[str, Any] = {"router_weights": torch.stack(router_weights, dim=1),
                                  "fusion_weights": fusion_weights, "layer_tokens": stacked}
        aux_losses: dict[str, torch.Tensor] = {}
        if self.config.tor_weight > 0:
            tor = {name: token_orthogonality_loss(stacked[name].flatten(1, 2)) for name in self.modalities}
            aux_losses["tor"] = self.config.tor_weight * sum(tor.values())
            extras["tor"] = {name: value.detach() for name, value in tor.items()}
        return MethodOutput(visual=fused["visual"], audio=fused["audio"], aux_losses=aux_losses, extras=extras)


def build_molt(visual: nn.Module | None, audio: nn.Module | None,
               config: MoLTConfig | None = None) -> TapReadingModel:
    """Wire frozen backbones (``num_blocks``, ``block_dims``, ``resolve_blocks``, ``forward_taps``) and new MoLT
    side modules into a :class:`~molt.methods.base.TapReadingModel`. In a single-modality variant the absent
    backbone may be ``None``."""
    method, visual_blocks, audio_blocks = build_molt_method(config or MoLTConfig(), visual, audio)
    return TapReadingModel(visual=visual, audio=audio, method=method, visual_blocks=visual_blocks,
                     audio_blocks=audio_blocks)


def build_molt_method(config: MoLTConfig, visual: nn.Module | None,
                      audio: nn.Module | None) -> tuple[MoLT, list[int], list[int]]:
    """The :class:`MoLT` side modules for these backbones, with the resolved visual and audio block indices."""
    blocks, dims = resolve_tap_blocks("MoLT", config, visual, audio)
    if config.modalities == "both" and len(blocks["visual"]) != len(blocks["audio"]):
        raise ValueError(f"visual and audio block selections must have the same length to be paired layer by layer: "
                         f"blocks_visual={config.blocks_visual!r} -> {blocks['visual']}, "
                         f"blocks_audio={config.blocks_audio!r} -> {blocks['audio']}")
    return MoLT(config, dims["visual"], dims["audio"]), blocks["visual"], blocks["audio"]


register_method(MethodSpec("molt", MoLTConfig, build_molt_method, TapReadingModel, reads_taps=True,
                           description="MoLT: layer-wise tokens of the late blocks, router of UDA/CDA adapters, TFM"))
