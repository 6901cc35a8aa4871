"""What the in-block methods (LAVisH, DG-SCT, AVMoE) share: where their adapters sit, the pieces they are built of,
and the walk through the frozen blocks.

Part of molt-av (Apache-2.0). Built from the facts of the public repositories ``GenjiB/LAVISH``
(``AVE/nets/net_trans.py``), ``haoyi-duan/DG-SCT`` (``AVE/nets/net_trans.py``) and ``yingchengy/AVMOE``
(``AVE/nets/net_trans_v3.py``) gathered in the project's PEERS.md; no code copied.

**Positions** (:func:`adapter_positions`). Blocks are grouped into stages (runs of equal width and token count).
When both backbones have as many stages, stage ``s`` pairs block ``i`` with block ``i`` if the stages are equally
deep; otherwise the shallower stage's block ``j`` pairs with the deeper stage's *last* block of its group,
``(j + 1) * L // S - 1`` (Swin-V2-L stage 3, 18 blocks, with HTS-AT's 6: Swin block ``3j + 2``, as DG-SCT and
AVMoE pair them). Swin-V2-L + HTS-AT therefore has 12 positions; the shared setting (one Swin reading both) has
one position per block (24). Blocks not at a position run unadapted.

**At a position** (:func:`walk_blocks`), with ``x_v``, ``x_a`` the tokens entering the paired blocks::

    r1_v, r1_a = p1_v(x_v, x_a), p1_a(x_a, x_v)          # both from the block inputs
    x_v = attention_v(x_v) + r1_v                         # beside the attention sub-layer
    x_a = attention_a(x_a) + r1_a     (shared setting)    # or, with HTS-AT: x_a = block_a(x_a) + r1_a
    r2_v, r2_a = p2_v(x_v, x_a), p2_a(x_a, x_v)          # from the updated tokens
    x_v = mlp_v(x_v) + r2_v
    x_a = mlp_a(x_a) + r2_a           (shared setting)    # or, with HTS-AT: x_a = x_a + r2_a

An adapter returns a residual update ``(B, N, D)`` that ends in a gate initialised at zero, so before training
the frozen backbones compute exactly what they compute alone. The repositories' AVQA and AVS scripts build the
*audio* adapters without that gate (``--is_gate`` left at 0; the visual ones always have it): with
``audio_gate=False`` the audio stream is changed from the first step, as there. Gradients reach the adapters
*through* the frozen blocks (their parameters keep ``requires_grad=False``): every activation of both backbones
stays alive for the backward pass, which is what the efficiency benchmark measures against MoLT.

**Pieces.** :class:`TokenBridge` maps the other modality's tokens to this adapter's token count (a 1x1
convolution over the token axis, with bias) and width (a linear layer), and is absent where the shapes already
agree (the shared setting); :func:`latent_token_attention` is the weight-free exchange through ``K`` latent
tokens at the block's full width; :class:`ConvBottleneck` is the LayerNorm / grouped 1x1 convolution (no bias) /
BatchNorm / ReLU / grouped 1x1 convolution / BatchNorm / LayerNorm bottleneck (the BatchNorms only with
``batch_norm=True``: the repositories' AVE scripts pass ``--is_bn 1``, their AVQA and AVS scripts leave it at 0).

**Read-out.** With ``head="common"`` (the default) the adapted final-block tokens of each modality go through a
LayerNorm and one uni-modal distillation adapter (MoLT eq. 1) to ``(B', K, D)``, so every task head reads the same
input for every method. With ``head="official"`` there is no read-out: each modality's final tokens are pooled as
the peer's script pools them, to ``(B', 1, D_last)`` (:meth:`InBlockMethod.pool_final`: the mean over the tokens
for LAVisH and AVMoE, the last adapter's spatial map for DG-SCT), and the model builder gives them to the peer's
own head for the task (``TaskSpec.official_head``). Dense heads (AVS) read the *adapted* visual tokens at the
stage ends.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from ..typed_config import ranged
from .base import Method, MethodConfig, MethodModel, MethodOutput, preprocess_input
from .distillation_adapters import LayerCentricDistillation

__all__ = ["AdapterPosition", "stages_of", "adapter_positions", "TokenBridge", "latent_token_attention",
           "ConvBottleneck", "walk_blocks", "InBlockMethod", "InBlockModel", "shares_weights", "build_in_block",
           "InBlockConfig", "LatentTokenAdapter", "BridgedAdapter", "HEAD_KINDS"]

#: ``head`` of an in-block method's config: our common task head behind a read-out, or the peer's own head
HEAD_KINDS = ("common", "official")

@dataclass(frozen=True)
class AdapterPosition:
    """One place where adapters sit: the visual and the audio block run together, and the stage they are in."""

    visual_block: int
    audio_block: int
    stage: int


def stages_of(dims: Sequence[int], tokens: Sequence[int]) -> list[list[int]]:
    """Block indices grouped into stages: runs of equal ``(width, token count)``."""
    stages: list[list[int]] = []
    for index, key in enumerate(zip(dims, tokens)):
        if stages and key == (dims[stages[-1][0]], tokens[stages[-1][0]]):
            stages[-1].append(index)
        else:
            stages.append([index])
    return stages


def adapter_positions(visual_dims: Sequence[int], visual_tokens: Sequence[int], audio_dims: Sequence[int],
                      audio_tokens: Sequence[int], *, skip_stages: Sequence[int] = ()) -> list[AdapterPosition]:
    """The paired blocks of two backbones (see the module docstring), without the stages in ``skip_stages``.

    When the stage counts differ, the whole depth is one group.
    """
    visual_stages = stages_of(visual_dims, visual_tokens)
    audio_stages = stages_of(audio_dims, audio_tokens)
    if len(visual_stages) != len(audio_stages):
        visual_stages, audio_stages = [list(range(len(visual_dims)))], [list(range(len(audio_dims)))]
    positions = []
    for stage, (visual, audio) in enumerate(zip(visual_stages, audio_stages)):
        if stage in skip_stages:
            continue
        deep, shallow = (visual, audio) if len(visual) >= len(audio) else (audio, visual)
        for j, block in enumerate(shallow):
            partner = deep[(j + 1) * len(deep) // len(shallow) - 1]
            pair = (partner, block) if deep is visual else (block, partner)
            positions.append(AdapterPosition(*pair, stage=stage))
    return positions


class TokenBridge(nn.Module):
    """The other modality's tokens ``(B, M, D_o)`` -> ``(B, N, D)``: a 1x1 convolution over the token axis
    (``M`` -> ``N`` channels, with bias) when the counts differ, then a linear ``D_o`` -> ``D`` when the widths
    differ; an identity where both agree."""

    def __init__(self, *, in_tokens: int, in_dim: int, out_tokens: int, out_dim: int) -> None:
        super().__init__()
        self.tokens = nn.Conv1d(in_tokens, out_tokens, 1) if in_tokens != out_tokens else None
        self.width = nn.Linear(in_dim, out_dim) if in_dim != out_dim else None

    def forward(self, other: torch.Tensor) -> torch.Tensor:
        if self.tokens is not None:
            other = self.tokens(other)
        if self.width is not None:
            other = self.width(other)
        return other


def latent_token_attention(x: torch.Tensor, latents: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """The weight-free cross-modal exchange: latent tokens ``(K, D)`` absorb ``other`` ``(B, M, D)``
    (``t + softmax(t o^T) o``), then every token of ``x`` ``(B, N, D)`` reads them (``softmax(x t^T) t``).

    Unscaled dot products, as in the repositories. Returns ``(B, N, D)``.
    """
    tokens = latents.expand(x.shape[0], -1, -1)
    tokens = tokens + torch.softmax(tokens @ other.transpose(1, 2), dim=-1) @ other
    return torch.softmax(x @ tokens.transpose(1, 2), dim=-1) @ tokens


class ConvBottleneck(nn.Module):
    """``(B, N, D)`` -> ``(B, N, D)``: LayerNorm, grouped 1x1 convolution to ``D // reduction`` (no bias),
    BatchNorm, ReLU (optional), grouped 1x1 convolution back (no bias), BatchNorm, LayerNorm.

    Args:
        dim: token width ``D``.
        reduction: bottleneck reduction factor.
        groups: convolution groups; where ``D`` or ``D // reduction`` is not a multiple (the tiny test
            backbones), their greatest common divisor with ``groups`` is used.
        batch_norm: the two BatchNorms (statistics over batch and tokens).
        activation: the ReLU between the convolutions (AVMoE's uni-modal experts have none).
    """

    def __init__(self, dim: int, *, reduction: int, groups: int, batch_norm: bool = True,
                 activation: bool = True) -> None:
        super().__init__()
        hidden = dim // reduction
        if hidden < 1:
            raise ValueError(f"a bottleneck of width {dim} with reduction {reduction} has no channel left; "
                             f"lower reduction to at most {dim}")
        groups = math.gcd(groups, math.gcd(dim, hidden))
        self.norm_before = nn.LayerNorm(dim)
        self.down = nn.Conv1d(dim, hidden, 1, groups=groups, bias=False)
        self.bn_down = nn.BatchNorm1d(hidden) if batch_norm else nn.Identity()
        self.activation = nn.ReLU() if activation else nn.Identity()
        self.up = nn.Conv1d(hidden, dim, 1, groups=groups, bias=False)
        self.bn_up = nn.BatchNorm1d(dim) if batch_norm else nn.Identity()
        self.norm_after = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.down(self.norm_before(x).transpose(1, 2))
        z = self.up(self.activation(self.bn_down(z)))
        return self.norm_after(self.bn_up(z).transpose(1, 2))


def shares_weights(visual: nn.Module, audio: nn.Module) -> bool:
    """Whether the audio backbone's blocks run on the visual backbone's parameters (the shared-Swin setting; the
    audio branch has a front end of its own)."""
    visual_ids = {id(p) for p in visual.parameters()}
    return any(id(p) in visual_ids for p in audio.parameters())


def walk_blocks(backbones: Mapping[str, nn.Module], inputs: Mapping[str, torch.Tensor],
                positions: Sequence[AdapterPosition], adapters: Mapping[str, nn.ModuleList], *,
                audio_after_block: bool, keep_visual: Sequence[int] = ()) -> tuple[dict[str, torch.Tensor],
                                                                                    list[torch.Tensor]]:
    """Run both backbones with the adapters at ``positions`` (see the module docstring).

    ``adapters[m][k]`` is the ``(p1, p2)`` pair of modality ``m`` at position ``k``; ``audio_after_block=True``
    adds the audio p1 update after the whole audio block and p2 after it too (the HTS-AT placement of DG-SCT and
    AVMoE). Returns the final tokens ``{m: (B', N_last, D_last)}`` and the adapted visual tokens leaving the blocks
    ``keep_visual``, in that order.
    """
    names = ("visual", "audio")
    states = {name: backbones[name].embed(inputs[name]) for name in names}
    done = {name: 0 for name in names}
    kept: dict[int, torch.Tensor] = {}

    def finish(name: str, block: int, state: torch.Tensor) -> None:
        states[name] = state
        done[name] = block + 1
        if name == "visual" and block in keep_visual:
            kept[block] = backbones[name].to_sequence(state)

    def catch_up(name: str, until: int) -> None:
        while done[name] < until:
            finish(name, done[name], backbones[name].run_block(done[name], states[name]))

    visual, audio = backbones["visual"], backbones["audio"]
    for index, position in enumerate(positions):
        visual_block, audio_block = position.visual_block, position.audio_block
        catch_up("visual", visual_block)
        catch_up("audio", audio_block)
        (first_visual, second_visual), (first_audio, second_audio) = adapters["visual"][index], adapters["audio"][index]
        x_visual = visual.enter_block(visual_block, states["visual"])
        x_audio = audio.enter_block(audio_block, states["audio"])
        seq_visual, seq_audio = visual.to_sequence(x_visual), audio.to_sequence(x_audio)
        update_visual, update_audio = first_visual(seq_visual, seq_audio), first_audio(seq_audio, seq_visual)
        # adapters work on (B, N, D), blocks on their own layout
        x_visual = visual.add_to_sequence(visual.attention_sublayer(visual_block, x_visual), update_visual)
        x_audio = audio.attention_sublayer(audio_block, x_audio)
        if audio_after_block:
            x_audio = audio.mlp_sublayer(audio_block, x_audio)
        x_audio = audio.add_to_sequence(x_audio, update_audio)
        seq_visual, seq_audio = visual.to_sequence(x_visual), audio.to_sequence(x_audio)
        update_visual, update_audio = second_visual(seq_visual, seq_audio), second_audio(seq_audio, seq_visual)
        finish("visual", visual_block,
               visual.add_to_sequence(visual.mlp_sublayer(visual_block, x_visual), update_visual))
        if not audio_after_block:
            x_audio = audio.mlp_sublayer(audio_block, x_audio)
        finish("audio", audio_block, audio.add_to_sequence(x_audio, update_audio))
    for name in names:
        catch_up(name, backbones[name].num_blocks)
    final = {name: backbones[name].to_sequence(states[name]) for name in names}
    return final, [kept[block] for block in keep_visual]


def _gate_value(gate: nn.Parameter | None) -> torch.Tensor:
    """A gate's value, detached, as a 1-element tensor (1 where there is no gate)."""
    return torch.ones(1) if gate is None else gate.detach().reshape(-1)


class InBlockMethod(Method):
    """Base of the in-block methods' trainable parts: a ``(p1, p2)`` adapter pair per modality and position, and
    the read-out to ``(B', K, D)``.

    Subclasses set :attr:`adapter_class`, built as ``adapter_class(dim, tokens, other_dim, other_tokens,
    config=config, gated=...)`` and called as ``adapter(x (B, N, D), other (B, M, D_o)) -> (B, N, D)``, the residual
    update; ``gated`` (whether the update ends in an output gate) is true for the visual adapters and
    ``config.audio_gate`` for the audio ones.
    Positions in the stages of ``config.skip_stages`` (when the config has it) get no adapters.

    Args:
        config: the method's :class:`InBlockConfig`.
        visual, audio: the frozen backbones (only their shapes are read here).
    """

    display_name = "in-block method"
    adapter_class: type[nn.Module]

    def __init__(self, config: InBlockConfig, visual: nn.Module | None, audio: nn.Module | None) -> None:
        super().__init__(config)
        if config.modalities != "both":
            raise ValueError(f"{self.display_name} exchanges information between the two backbones inside their "
                             f"blocks: modalities must be 'both', got {config.modalities!r}; use molt or mettle "
                             f"for a single-modality variant")
        if visual is None or audio is None:
            raise ValueError(f"{self.display_name} needs both a visual and an audio backbone")
        self.dims = {"visual": list(visual.block_dims), "audio": list(audio.block_dims)}
        self.tokens = {"visual": list(visual.block_tokens), "audio": list(audio.block_tokens)}
        skip_stages = list(getattr(config, "skip_stages", ()))
        self.positions = adapter_positions(self.dims["visual"], self.tokens["visual"], self.dims["audio"],
                                           self.tokens["audio"], skip_stages=skip_stages)
        if not self.positions:
            raise ValueError(f"{self.display_name}: no adapter position left (skip_stages={skip_stages})")
        self.audio_after_block = not shares_weights(visual, audio)
        self.official_head = config.head == "official"
        #: with ``head="official"``: the modalities whose final tokens are pooled (the model builder sets the
        #: head's ``pooled_modalities``); the others reach the head as they leave the last block
        self.pooled_modalities: tuple[str, ...] = tuple(self.modalities)
        self.readout = None if self.official_head else nn.ModuleDict({
            name: LayerCentricDistillation(in_dim=self.dims[name][-1], dim=config.dim,
                                           num_tokens=self.num_tokens[name], num_heads=config.out_heads)
            for name in self.modalities})
        other = {"visual": "audio", "audio": "visual"}
        adapters = {}
        for name in self.modalities:
            pairs = []
            for position in self.positions:
                blocks = {"visual": position.visual_block, "audio": position.audio_block}
                shape = (self.dims[name][blocks[name]], self.tokens[name][blocks[name]],
                         self.dims[other[name]][blocks[other[name]]], self.tokens[other[name]][blocks[other[name]]])
                gated = name == "visual" or config.audio_gate
                pairs.append(nn.ModuleList([self.adapter_class(*shape, config=config, gated=gated)
                                            for _ in range(2)]))
            adapters[name] = nn.ModuleList(pairs)
        self.adapters = nn.ModuleDict(adapters)

    def run_backbones(self, backbones: Mapping[str, nn.Module], inputs: Mapping[str, torch.Tensor], *,
                      keep_visual: Sequence[int] = ()) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """Adapted final tokens of both modalities and the adapted visual tokens at ``keep_visual``
        (:func:`walk_blocks`)."""
        return walk_blocks(backbones, inputs, self.positions, self.adapters, audio_after_block=self.audio_after_block,
                           keep_visual=keep_visual)

    def extras(self) -> dict:
        """Detached diagnostics for :class:`~molt.methods.base.MethodOutput`: every adapter's output gate,
        ``{"gates": {m: (2 * positions,)}}`` in (p1, p2) order, 1 for an adapter built without one (its update
        passes unscaled); subclasses without one gate per adapter override this."""
        return {"gates": {name: torch.cat([_gate_value(adapter.gate) for pair in pairs for adapter in pair])
                          for name, pairs in self.adapters.items()}}

    def aux_losses(self) -> dict[str, torch.Tensor]:
        """Auxiliary losses of the last forward pass (none by default)."""
        return {}

    @property
    def final_dims(self) -> dict[str, int]:
        """Width of each modality's final tokens ``D_last`` (what an official head reads)."""
        return {name: self.dims[name][-1] for name in self.modalities}

    def pool_final(self, name: str, tokens: torch.Tensor) -> torch.Tensor:
        """The peer's pooling of modality ``name``'s final tokens ``(B', N, D_last)`` -> ``(B', 1, D_last)`` before
        its own head (``head="official"``): the mean over the tokens (LAVisH ``AVE/nets/net_trans.py``, AVMoE
        ``AVE/nets/net_trans_v3.py``); subclasses that pool otherwise override it."""
        return tokens.mean(dim=1, keepdim=True)

    def forward(self, visual_taps: Sequence[torch.Tensor] | None,
                audio_taps: Sequence[torch.Tensor] | None) -> MethodOutput:
        """One adapted final-block tap per modality ``(B', N, D_last)`` -> ``(B', K, D)`` per modality (with
        ``head="official"``: ``(B', 1, D_last)`` pooled by :meth:`pool_final` for the modalities in
        :attr:`pooled_modalities`, the tokens ``(B', N, D_last)`` themselves for the others)."""
        fused = {}
        for name, taps in (("visual", visual_taps), ("audio", audio_taps)):
            width = self.dims[name][-1]
            if taps is None or len(taps) != 1 or taps[0].ndim != 3 or taps[0].shape[-1] != width:
                got = "None" if taps is None else [tuple(t.shape) for t in taps]
                raise ValueError(f"{self.display_name} expects one adapted final-block {name} tap "
                                 f"(B', N, {width}), got {got}")
            if self.readout is not None:
                fused[name] = self.readout[name](taps[0])
            else:
                fused[name] = self.pool_final(name, taps[0]) if name in self.pooled_modalities else taps[0]
        return MethodOutput(visual=fused["visual"], audio=fused["audio"], aux_losses=self.aux_losses(),
                            extras=self.extras())


class InBlockModel(MethodModel):
    """Frozen backbones walked block by block with an in-block method's adapters (gradients flow through the
    frozen blocks, so nothing can be cached).

    Args:
        visual, audio: frozen :class:`~molt.backbones.base.TapBackbone` objects (may share weights).
        method: the trainable :class:`InBlockMethod`.
        visual_blocks, audio_blocks: ``[last block]`` of each backbone (what :meth:`compute_final_tokens` returns).
    """

    def _inputs(self, frames: torch.Tensor | None, waveform: torch.Tensor | None) -> dict[str, torch.Tensor]:
        inputs = {}
        for name, backbone, raw in (("visual", self.visual, frames), ("audio", self.audio, waveform)):
            if raw is None:
                raise ValueError(f"{self.method.display_name} needs {name} input, got None")
            inputs[name] = preprocess_input(backbone, raw)
        return inputs

    def _backbones(self) -> dict[str, nn.Module]:
        return {"visual": self.visual, "audio": self.audio}

    def compute_final_tokens(self, frames: torch.Tensor | None,
                             waveform: torch.Tensor | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Adapted final-block tokens ``([visual (B', N, D)], [audio (B', N, D)])``, computed *with* autograd
        through the frozen backbones."""
        final, _ = self.method.run_backbones(self._backbones(), self._inputs(frames, waveform))
        return [final["visual"]], [final["audio"]]

    def compute_inputs(self, frames: torch.Tensor | None, waveform: torch.Tensor | None, *,
                       stage_blocks: Sequence[int] = ()) -> dict[str, list[torch.Tensor] | None]:
        """As :meth:`~molt.methods.base.MethodModel.compute_inputs`, in one adapted pass: ``visual_taps`` and
        ``audio_taps`` are the adapted final-block tokens, ``visual_stages`` the adapted visual tokens leaving
        ``stage_blocks``."""
        if not stage_blocks:
            visual, audio = self.compute_final_tokens(frames, waveform)
            return {"visual_taps": visual, "audio_taps": audio, "visual_stages": None}
        final, stages = self.method.run_backbones(self._backbones(), self._inputs(frames, waveform),
                                                  keep_visual=list(stage_blocks))
        return {"visual_taps": [final["visual"]], "audio_taps": [final["audio"]], "visual_stages": stages}


def build_in_block(method_class: type[InBlockMethod]):
    """A registry builder for ``method_class``: ``(config, visual, audio) -> (method, [last visual block],
    [last audio block])``."""
    def build(config, visual: nn.Module | None, audio: nn.Module | None):
        method = method_class(config, visual, audio)
        return method, [len(method.dims["visual"]) - 1], [len(method.dims["audio"]) - 1]
    build.__name__ = f"build_{method_class.__name__.lower()}"
    return build


@dataclass
class InBlockConfig(MethodConfig):
    """The hyper-parameters every in-block method has (subclasses add theirs and set their defaults).

    Attributes:
        num_latents: latent tokens per adapter (or cross-modal expert).
        reduction: bottleneck reduction factor.
        groups: groups of the bottleneck's 1x1 convolutions.
        batch_norm: BatchNorm after each bottleneck convolution (``--is_bn``: 1 in the repositories' AVE scripts,
            0 in their AVQA and AVS ones).
        audio_gate: the audio adapters end in an output gate initialised at zero (``--is_gate``: 1 in the
            repositories' AVE scripts, 0 in their AVQA and AVS ones, where the audio update is not zero at
            initialisation); the visual adapters always have it. Files saved before this field existed were
            trained with it on.
        head: ``"common"`` (default): our read-out to ``(B', K, D)`` and the task's common head, as for every
            method; ``"official"``: no read-out, the peer's own pooling and head for the task (what its scripts
            train and count; see :meth:`InBlockMethod.pool_final` and ``TaskSpec.official_head``).
        num_tokens: read-out tokens per modality ``K`` (what the task head reads).
        num_tokens_audio: audio read-out tokens if different from ``num_tokens``.
        dim: read-out width ``D``.
        out_heads: attention heads of the read-out.
        modalities: must be ``"both"`` (checked when the method is built).
    """

    num_latents: int = ranged(2, at_least=1, meaning="latent tokens per adapter")
    reduction: int = ranged(8, at_least=1, meaning="bottleneck reduction factor")
    groups: int = ranged(2, at_least=1, meaning="groups of the bottleneck convolutions")
    batch_norm: bool = True
    audio_gate: bool = True
    out_heads: int = ranged(8, at_least=1, meaning="attention heads of the read-out, dividing dim")
    head: str = "common"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head not in HEAD_KINDS:
            raise ValueError(f"head must be one of {', '.join(HEAD_KINDS)}, got {self.head!r}")
        if self.dim % self.out_heads:
            raise ValueError(f"dim ({self.dim}) must be a positive multiple of out_heads ({self.out_heads})")


class LatentTokenAdapter(nn.Module):
    """The adapter core of LAVisH (and DG-SCT's and AVMoE's cross-modal parts) on already bridged tokens.

    ``x <- x + gate_cross * latent_token_attention(x, latents, other)``, then an optional ``guide(x, other)``
    (DG-SCT's channel and spatial attention), then ``gate * ConvBottleneck(x)`` (``ConvBottleneck(x)`` alone with
    ``gate=False``). Both gates start at zero; the latent tokens start uniform in ``[0, 1)`` as in the
    repositories.

    ``forward(x (B, N, D), other (B, N', D))`` -> ``(B, N, D)``.
    """

    def __init__(self, dim: int, *, num_latents: int, reduction: int, groups: int, batch_norm: bool = True,
                 activation: bool = True, guide: nn.Module | None = None, gate: bool = True) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.rand(num_latents, dim))
        self.gate_cross = nn.Parameter(torch.zeros(1))
        self.guide = guide
        self.bottleneck = ConvBottleneck(dim, reduction=reduction, groups=groups, batch_norm=batch_norm,
                                         activation=activation)
        self.gate = nn.Parameter(torch.zeros(1)) if gate else None

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        x = x + self.gate_cross * latent_token_attention(x, self.latents, other)
        if self.guide is not None:
            x = self.guide(x, other)
        update = self.bottleneck(x)
        return update if self.gate is None else self.gate * update


class BridgedAdapter(nn.Module):
    """:class:`TokenBridge` (where the shapes differ) + :class:`LatentTokenAdapter`, for one sub-layer: LAVisH's
    adapter, and DG-SCT's with its :meth:`guide`.

    ``forward(x (B, N, D), other (B, M, D_o))`` -> the residual update ``(B, N, D)``; ``gated=False`` builds it
    without the output gate.
    """

    def __init__(self, dim: int, tokens: int, other_dim: int, other_tokens: int, *, config: InBlockConfig,
                 gated: bool = True) -> None:
        super().__init__()
        self.bridge = TokenBridge(in_tokens=other_tokens, in_dim=other_dim, out_tokens=tokens, out_dim=dim)
        self.core = LatentTokenAdapter(dim, num_latents=config.num_latents, reduction=config.reduction,
                                       groups=config.groups, batch_norm=config.batch_norm,
                                       guide=self.guide(dim, config), gate=gated)

    def guide(self, dim: int, config: InBlockConfig) -> nn.Module | None:
        """The module run between the latent-token exchange and the bottleneck (none here)."""
        return None

    @property
    def gate(self) -> nn.Parameter | None:
        return self.core.gate

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return self.core(x, self.bridge(other))
