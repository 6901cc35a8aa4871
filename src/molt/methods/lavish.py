"""LAVisH-style cross-modal adapters inside every block of the frozen backbones (the memory-heavy baseline).

Vision Transformers are Parameter-Efficient Audio-Visual Learners, Lin et al., CVPR 2023 (LAVisH). Re-implemented
here, from the paper's description and the facts in the project's PEERS.md (no code copied), as the conventional
PEFT baseline that MoLT (Rho et al., Secs. 1 and 2.2, Tabs. 1-3) compares with: adapters sit *after every block*
of both frozen backbones, change what the next block sees, and are therefore trained by back-propagation
**through** the frozen backbones, which keeps every intermediate activation of both backbones alive for the
backward pass.

The backbones are not patched: :class:`LavishModel` walks them block by block itself with
:meth:`~molt.backbones.base.TapBackbone.embed` / ``run_block`` / ``to_sequence`` with autograd enabled (the
backbone parameters keep ``requires_grad=False``) and applies an adapter to each block's output.

Adapter (one per block and modality, :class:`LavishAdapter`)::

    h     = Down(LN(x))                            # bottleneck, width r = D_l // reduction
    lat   = TD(latents, g)                         # a few latent tokens attend to the other modality's tokens g
    h     = h + TokenAttention(h, lat)             # every token of this block reads the latent tokens
    x_new = x + gate * Up(GELU(h))                 # gate: a learnable scalar, 0 at start

so at initialisation the model computes exactly the frozen backbones. Choices and assumptions:

* **Latent-token cross-attention** (LAVisH's way of making cross-modal attention cheap) reuses MoLT's
  :class:`~molt.methods.token_distillation.TokenDistillation` (latents over the other modality, projected to
  ``r``) and :class:`~molt.methods.token_distillation.TokenAttention` (tokens over the latents).
* The cross-modal term is computed and added **inside the bottleneck** (width ``r = max(1, D_l // reduction)``),
  i.e. the bottleneck's input is the block's (down-projected) tokens plus the cross-modal term. Attending at the
  full block width instead would need ``~4 D_l^2`` parameters per adapter (about 100 M for Swin-V2-L + HTS-AT,
  far from an adapter); heads: the largest divisor of ``r`` not above ``num_heads``.
* **Block pairing.** Audio (HTS-AT, 12 blocks) and visual (Swin-V2-L, 24) block counts differ. Stages are found
  as runs of blocks with equal ``(block_dims, block_tokens)``; when both backbones have the same number of stages,
  blocks are paired stage by stage, proportionally inside a stage (Swin stage 3 has 18 blocks, HTS-AT 6: audio
  block ``j`` pairs with visual blocks ``3j, 3j+1, 3j+2``); otherwise proportionally over the whole depth. The
  shallower modality's block ``j`` runs together with the *first* block of its group, so every adapter reads the
  output of exactly its paired block (the peers place the interaction at the *last* block of each group; either
  placement keeps the whole graph alive, which is what the efficiency benchmark measures). When both blocks of
  a step run, both adapters read the other's block output *before* its adapter.
* **Native layout.** Backbones keep tokens channel-last (Swin-V2 NHWC, HTS-AT ``(B, N, C)``); an adapter works on
  ``to_sequence(tokens)`` and its update is reshaped back to the native shape.
* **Output.** The adapted final-block tokens of each modality are the method's "taps"
  (:meth:`LavishModel.compute_taps`); :class:`Lavish` turns them into ``K`` tokens of width ``D`` with a LayerNorm
  plus a uni-modal distillation adapter (MoLT eq. 1), like one Mettle LCD, so every task head reads
  ``(B', K, D)`` as for MoLT. LAVisH itself pools the final features; a learnable read-out keeps the heads
  identical across methods.
* **Shared setting**: the same Swin runs twice (frames, spectrogram image), with separate adapters per modality.
* Single-modality variants run one backbone with adapters that have no cross-modal term; the absent modality's
  output tokens are zeros.

These taps depend on trainable weights, so LAVisH cannot train from a feature cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .base import MethodConfigMixin
from .mettle import LayerCentricDistillation
from .molt import MODALITIES, MethodOutput, MoLTModel
from .registry import MethodSpec, register_method
from .token_distillation import TokenAttention, TokenDistillation

__all__ = ["LavishConfig", "LavishAdapter", "Lavish", "LavishModel", "pair_blocks", "build_lavish_method"]


@dataclass
class LavishConfig(MethodConfigMixin):
    """Hyper-parameters of the LAVisH-style baseline.

    Attributes:
        num_latents: latent tokens per adapter for the cross-modal attention (LAVisH uses a handful).
        reduction: bottleneck reduction factor (bottleneck width ``D_l // reduction``).
        num_heads: maximum attention heads of the adapters' attentions.
        gate_init: initial value of every adapter gate (0: the model starts as the frozen backbones).
        num_tokens: output tokens per modality ``K``.
        num_tokens_audio: audio output tokens if different from ``num_tokens``.
        dim: output token width ``D``.
        out_heads: attention heads of the read-out distillation.
        modalities: ``"both"``, ``"visual"`` or ``"audio"``.
    """

    num_latents: int = 2
    reduction: int = 8
    num_heads: int = 4
    gate_init: float = 0.0
    num_tokens: int = 8
    num_tokens_audio: int | None = None
    dim: int = 512
    out_heads: int = 8
    modalities: str = "both"

    def __post_init__(self) -> None:
        if self.modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {', '.join(MODALITIES)}, got {self.modalities!r}")
        for name in ("num_latents", "reduction", "num_heads", "num_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_tokens_audio is not None and self.num_tokens_audio < 1:
            raise ValueError(f"num_tokens_audio must be at least 1, got {self.num_tokens_audio}")
        if self.dim < 1 or self.out_heads < 1 or self.dim % self.out_heads:
            raise ValueError(f"dim ({self.dim}) must be a positive multiple of out_heads ({self.out_heads})")


def _heads(width: int, max_heads: int) -> int:
    """The largest number of heads ``<= max_heads`` that divides ``width``."""
    return next(h for h in range(min(max_heads, width), 0, -1) if width % h == 0)


class LavishAdapter(nn.Module):
    """Gated bottleneck adapter with a latent-token cross-modal term, for one block's output.

    Args:
        dim: width ``D_l`` of this block's tokens.
        other_dim: width of the other modality's tokens (``None``: no cross-modal term).
        num_latents: latent tokens that summarise the other modality.
        reduction: bottleneck reduction factor.
        num_heads: maximum attention heads.
        gate_init: initial gate value.

    ``forward(x (B, N, D_l), other (B, M, D_o) | None)`` -> ``(B, N, D_l)``.
    """

    def __init__(self, *, dim: int, other_dim: int | None, num_latents: int, reduction: int, num_heads: int,
                 gate_init: float = 0.0) -> None:
        super().__init__()
        hidden = max(1, dim // reduction)
        heads = _heads(hidden, num_heads)
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, hidden)
        if other_dim is not None:
            self.latents = TokenDistillation(in_dim=other_dim, dim=hidden, num_tokens=num_latents, num_heads=heads)
            self.cross = TokenAttention(query_dim=hidden, kv_dim=hidden, dim=hidden, num_heads=heads)
        else:
            self.latents = self.cross = None
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        self.gate = nn.Parameter(torch.full((1,), float(gate_init)))

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.down(self.norm(x))
        if self.cross is not None:
            if other is None:
                raise ValueError("this adapter has a cross-modal term: pass the other modality's tokens")
            hidden = hidden + self.cross(hidden, self.latents(other))
        return x + self.gate * self.up(self.act(hidden))


def _stages(dims: Sequence[int], tokens: Sequence[int]) -> list[list[int]]:
    """Block indices grouped into stages: runs of equal ``(width, token count)``."""
    stages: list[list[int]] = []
    for index, key in enumerate(zip(dims, tokens)):
        if stages and key == (dims[stages[-1][0]], tokens[stages[-1][0]]):
            stages[-1].append(index)
        else:
            stages.append([index])
    return stages


def _pair_group(visual: list[int], audio: list[int]) -> list[tuple[int | None, int | None, int, int]]:
    large, small = (visual, audio) if len(visual) >= len(audio) else (audio, visual)
    steps = []
    for i, block in enumerate(large):
        j = i * len(small) // len(large)
        first = i == 0 or (i - 1) * len(small) // len(large) != j
        small_block = small[j] if first else None
        if large is visual:
            steps.append((block, small_block, block, small[j]))
        else:
            steps.append((small_block, block, small[j], block))
    return steps


def pair_blocks(visual_dims: Sequence[int], visual_tokens: Sequence[int], audio_dims: Sequence[int],
                audio_tokens: Sequence[int]) -> list[tuple[int | None, int | None, int, int]]:
    """Joint execution schedule of two backbones (see the module docstring).

    Returns one step per block of the deeper backbone in each group: ``(visual block run at this step or None,
    audio block run at this step or None, visual block paired, audio block paired)``. Every block of each backbone
    runs exactly once, in order.
    """
    visual_stages = _stages(visual_dims, visual_tokens)
    audio_stages = _stages(audio_dims, audio_tokens)
    if len(visual_stages) != len(audio_stages):
        visual_stages = [list(range(len(visual_dims)))]
        audio_stages = [list(range(len(audio_dims)))]
    steps = []
    for visual, audio in zip(visual_stages, audio_stages):
        steps.extend(_pair_group(visual, audio))
    return steps


class Lavish(nn.Module):
    """LAVisH's trainable parts: one adapter after every block of each backbone, and the read-out to ``(K, D)``.

    Args:
        config: :class:`LavishConfig`.
        visual_dims, visual_tokens: ``block_dims`` / ``block_tokens`` of the visual backbone (empty if absent).
        audio_dims, audio_tokens: the same for the audio backbone.

    :meth:`run_backbones` walks the frozen backbones with the adapters and returns the adapted final-block tokens;
    ``forward(visual_taps, audio_taps)`` (one tap each, ``(B', N_last, D_last)``) returns a
    :class:`~molt.methods.molt.MethodOutput` ``(B', K, D)`` per modality, no auxiliary loss, and ``extras``
    ``{"gates": {m: (L_m,)}}`` (detached).
    """

    def __init__(self, config: LavishConfig, *, visual_dims: Sequence[int], visual_tokens: Sequence[int],
                 audio_dims: Sequence[int], audio_tokens: Sequence[int]) -> None:
        super().__init__()
        self.config = config
        self.modalities = config.active_modalities
        self.output_dim = config.dim
        self.num_tokens = {"visual": config.tokens_visual, "audio": config.tokens_audio}
        dims = {"visual": [int(d) for d in visual_dims or []], "audio": [int(d) for d in audio_dims or []]}
        tokens = {"visual": [int(n) for n in visual_tokens or []], "audio": [int(n) for n in audio_tokens or []]}
        for name in self.modalities:
            if not dims[name] or len(dims[name]) != len(tokens[name]):
                raise ValueError(f"LAVisH needs the {name} backbone's block_dims and block_tokens (same length), "
                                 f"got {len(dims[name])} and {len(tokens[name])}")
        self.dims = dims
        both = self.modalities == ["visual", "audio"]
        if both:
            self.schedule = pair_blocks(dims["visual"], tokens["visual"], dims["audio"], tokens["audio"])
        else:
            only = self.modalities[0]
            self.schedule = [(i, None, i, 0) if only == "visual" else (None, i, 0, i) for i in range(len(dims[only]))]
        paired = {"visual": {}, "audio": {}}
        for _, _, visual_block, audio_block in self.schedule:
            paired["visual"].setdefault(visual_block, audio_block)
            paired["audio"].setdefault(audio_block, visual_block)
        other = {"visual": "audio", "audio": "visual"}
        self.adapters = nn.ModuleDict({
            name: nn.ModuleList(
                LavishAdapter(dim=width,
                              other_dim=dims[other[name]][paired[name][index]] if both else None,
                              num_latents=config.num_latents, reduction=config.reduction,
                              num_heads=config.num_heads, gate_init=config.gate_init)
                for index, width in enumerate(dims[name]))
            for name in self.modalities})
        self.readout = nn.ModuleDict({
            name: LayerCentricDistillation(in_dim=dims[name][-1], dim=config.dim, num_tokens=self.num_tokens[name],
                                           num_heads=config.out_heads)
            for name in self.modalities})

    def run_backbones(self, backbones: dict[str, nn.Module],
                      inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Adapted final-block tokens ``{m: (B', N_last, D_last)}`` of the active modalities.

        ``backbones[m]`` is a :class:`~molt.backbones.base.TapBackbone`, ``inputs[m]`` what its ``embed`` takes.
        Runs with autograd enabled (unless the caller disabled it): gradients reach the adapters through the
        frozen blocks.
        """
        states = {name: backbones[name].embed(inputs[name]) for name in self.modalities}
        for visual_block, audio_block, _, _ in self.schedule:
            ran = {name: block for name, block in (("visual", visual_block), ("audio", audio_block))
                   if block is not None and name in states}
            for name, block in ran.items():
                states[name] = backbones[name].run_block(block, states[name])
            sequences = {name: backbones[name].to_sequence(states[name]) for name in self.modalities}
            for name, block in ran.items():
                native = states[name]
                sequence = sequences[name]
                if sequence.numel() != native.numel() or sequence.shape[-1] != native.shape[-1]:
                    raise ValueError(f"LAVisH needs channel-last tokens: {name} block {block} gives "
                                     f"{tuple(native.shape)} but to_sequence gives {tuple(sequence.shape)}")
                partner = sequences["audio" if name == "visual" else "visual"] if len(self.modalities) == 2 else None
                states[name] = self.adapters[name][block](sequence, partner).reshape(native.shape)
        return {name: backbones[name].to_sequence(states[name]) for name in self.modalities}

    def forward(self, visual_taps: Sequence[torch.Tensor] | None,
                audio_taps: Sequence[torch.Tensor] | None) -> MethodOutput:
        raw = {"visual": visual_taps, "audio": audio_taps}
        fused = {}
        for name in self.modalities:
            taps = raw[name]
            width = self.dims[name][-1]
            if taps is None or len(taps) != 1 or taps[0].ndim != 3 or taps[0].shape[-1] != width:
                got = "None" if taps is None else [tuple(t.shape) for t in taps]
                raise ValueError(f"LAVisH expects one adapted final-block {name} tap (B', N, {width}), got {got}")
            fused[name] = self.readout[name](taps[0])
        reference = next(iter(fused.values()))
        for name in ("visual", "audio"):
            if name not in fused:
                fused[name] = reference.new_zeros(reference.shape[0], self.num_tokens[name], self.config.dim)
        gates = {name: torch.cat([adapter.gate for adapter in self.adapters[name]]).detach()
                 for name in self.modalities}
        return MethodOutput(visual=fused["visual"], audio=fused["audio"], aux_losses={}, extras={"gates": gates})


class LavishModel(MoLTModel):
    """Frozen backbones walked block by block with LAVisH adapters: same interface as
    :class:`~molt.methods.molt.MoLTModel`.

    Args:
        visual, audio: frozen :class:`~molt.backbones.base.TapBackbone` objects (may share weights).
        molt: the trainable :class:`Lavish` part (named like MoLTModel's so trainers and adapter files treat
            every method alike).
        visual_blocks, audio_blocks: ``[last block]`` of each backbone (what :meth:`compute_taps` returns).
    """

    def compute_taps(self, frames: torch.Tensor | None,
                     waveform: torch.Tensor | None) -> tuple[list[torch.Tensor] | None, list[torch.Tensor] | None]:
        """Adapted final-block tokens ``([visual (B', N, D)], [audio (B', N, D)])`` (``None`` for an absent
        modality), computed *with* autograd through the frozen backbones."""
        backbones = {"visual": self.visual, "audio": self.audio}
        raw = {"visual": frames, "audio": waveform}
        inputs = {}
        for name in self.method.modalities:
            if raw[name] is None or backbones[name] is None:
                raise ValueError(f"LAVisH with {name} input needs a {name} backbone and input, got None")
            preprocess = getattr(backbones[name], "preprocess", None)
            inputs[name] = preprocess(raw[name]) if callable(preprocess) else raw[name]
        final = self.method.run_backbones(backbones, inputs)
        return ([final["visual"]] if "visual" in final else None), ([final["audio"]] if "audio" in final else None)


    def compute_inputs(self, frames: torch.Tensor | None, waveform: torch.Tensor | None, *,
                       stage_blocks: Sequence[int] = ()) -> dict[str, list[torch.Tensor] | None]:
        """As :meth:`MoLTModel.compute_inputs`; the stage features come from a separate pass through the
        *unadapted* frozen visual backbone (the adapted stream is only exposed at its final block)."""
        visual_taps, audio_taps = self.compute_taps(frames, waveform)
        stages = self._taps(self.visual, frames, list(stage_blocks)) if stage_blocks else None
        return {"visual_taps": visual_taps, "audio_taps": audio_taps, "visual_stages": stages}


def build_lavish_method(config: LavishConfig, visual: nn.Module | None,
                        audio: nn.Module | None) -> tuple[Lavish, list[int], list[int]]:
    """The :class:`Lavish` trainable part for these backbones, with ``[last block]`` of each active backbone."""
    backbones = {"visual": visual, "audio": audio}
    for name in config.active_modalities:
        if backbones[name] is None:
            raise ValueError(f"LAVisH with modalities={config.modalities!r} needs a {name} backbone, got None")

    def info(name: str) -> tuple[list[int], list[int]]:
        backbone = backbones[name]
        if name not in config.active_modalities:
            return [], []
        return list(backbone.block_dims), list(backbone.block_tokens)

    (visual_dims, visual_tokens), (audio_dims, audio_tokens) = info("visual"), info("audio")
    method = Lavish(config, visual_dims=visual_dims, visual_tokens=visual_tokens, audio_dims=audio_dims,
                    audio_tokens=audio_tokens)
    last = {name: [len(method.dims[name]) - 1] if name in config.active_modalities else [] for name in backbones}
    return method, last["visual"], last["audio"]


register_method(MethodSpec("lavish", LavishConfig, build_lavish_method, LavishModel, reads_taps=False,
                           heads_option="out_heads",
                           description="LAVisH: latent-token adapters inside the frozen blocks (not cacheable)"))
