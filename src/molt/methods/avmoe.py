"""AVMoE: a dense mixture of uni-modal and cross-modal adapter experts, with a router, inside the frozen blocks.

Mixture of Experts for Audio-Visual Learning, Cheng et al., NeurIPS 2024 (AVMoE). Re-implemented from the facts
of its public repository ``yingchengy/AVMOE`` (``AVE/nets/net_trans_v3.py``, ``AVQA/net_grd_avst/net_avst_v2.py``,
the AVS model) gathered in the project's PEERS.md; no code copied. Placement, bridges, latent-token attention and
bottleneck are the shared pieces of :mod:`molt.methods.inblock`.

Each adapter (p1 beside the attention sub-layer, p2 beside the MLP, per modality and paired position, as DG-SCT
places them) bridges the other modality's tokens to its own shape once, then mixes its experts::

    o      = Bridge(other)                                        # (B, N, D)
    p      = softmax(Router([mean_tokens(x), mean_tokens(o)]))    # (B, E): 2D -> 128 -> 32 -> E, ReLU between
    update = sum_e p_e * expert_e(x, o)

* **cross-modal experts** (:class:`~molt.methods.inblock.LatentTokenAdapter`): the latent-token exchange with a gate
  at zero, then LayerNorm / grouped 1x1-convolution bottleneck with BatchNorm and ReLU / LayerNorm, times a gate
  at zero;
* **uni-modal experts** (:class:`UniModalExpert`): optional self-attention over the own tokens, then the same
  bottleneck *without* the ReLU (as the repository builds it), times a gate at zero.

Every expert ends in its own zero gate, so before training the backbones compute what they compute alone. The
mixture is dense (every expert runs; no top-k); Gaussian noise (std ``router_noise``) is added to the router logits
in training for AVS, as the repository does.

Per task (:data:`AVMOE_TASK_SETTINGS`, applied by ``--method avmoe``): experts cross/uni 1/1 for AVE and S4, 1/2
for AVQA, 2/2 for MS3; no adapters in stages 2 and 4 for AVE and MS3 (8 of the 12 positions); reduction 8 (2 for
MS3); 32 latent tokens (2 for AVQA).

Assumptions and departures:

* **Initialisation.** The repository's AVE recipe starts from a trained DG-SCT checkpoint (its temporal attention and
  CMBS head); ours starts from scratch like every other method here.
* The load-balancing loss of its MS3 recipe (weight 0.01) is not built: its form could not be read here.
* The uni-modal experts' self-attention is off by default (``uni_self_attention``): which recipes enable it could
  not be read; at full width on 2,304 Swin tokens it would dominate the step's memory. When on, it is a 4-head
  attention over the tokens of one clip.
* Bottleneck groups follow DG-SCT's scripts (2; 4 for AVQA).
* Output: a LayerNorm + uni-modal distillation read-out to ``(B', K, D)`` for the common task heads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..typed_config import ranged
from .inblock import (ConvBottleneck, InBlockConfig, InBlockMethod, InBlockModel, LatentTokenAdapter, TokenBridge,
                      build_in_block)
from .registry import MethodSpec, register_method

__all__ = ["AVMoEConfig", "UniModalExpert", "AVMoEAdapter", "AVMoE", "AVMOE_TASK_SETTINGS"]

#: ``method_config`` defaults per task (``task`` or ``task:setting``) from the repository's scripts
AVMOE_TASK_SETTINGS: dict[str, dict[str, Any]] = {
    "ave": {"cross_experts": 1, "uni_experts": 1, "skip_stages": [1, 3], "num_latents": 32, "reduction": 8},
    "avs": {"cross_experts": 1, "uni_experts": 1, "skip_stages": [], "num_latents": 32, "reduction": 8,
            "router_noise": 0.01},
    "avs:ms3": {"cross_experts": 2, "uni_experts": 2, "skip_stages": [1, 3], "reduction": 2},
    "avqa": {"cross_experts": 1, "uni_experts": 2, "skip_stages": [], "num_latents": 2, "groups": 4},
}


@dataclass
class AVMoEConfig(InBlockConfig):
    """Hyper-parameters of AVMoE (the defaults are its AVE setting): those of
    :class:`~molt.methods.inblock.InBlockConfig`, with 32 latent tokens, and

    Attributes:
        cross_experts: cross-modal experts per adapter.
        uni_experts: uni-modal experts per adapter.
        skip_stages: stages (0-based) without adapters.
        router_noise: std of the Gaussian noise on the router logits in training (0: none).
        uni_self_attention: the uni-modal experts' self-attention over their tokens.
    """

    num_latents: int = ranged(32, at_least=1, meaning="latent tokens per cross-modal expert")
    cross_experts: int = ranged(1, at_least=0, meaning="cross-modal experts per adapter")
    uni_experts: int = ranged(1, at_least=0, meaning="uni-modal experts per adapter")
    skip_stages: list[int] = field(default_factory=lambda: [1, 3])
    router_noise: float = ranged(0.0, at_least=0, meaning="std of the router noise")
    uni_self_attention: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.skip_stages = [int(stage) for stage in self.skip_stages]
        if any(stage < 0 for stage in self.skip_stages):
            raise ValueError(f"skip_stages must be stage indices (0 = first), got {self.skip_stages}")
        if self.cross_experts + self.uni_experts < 1:
            raise ValueError(f"AVMoE needs at least one expert: cross_experts={self.cross_experts}, "
                             f"uni_experts={self.uni_experts}")


class UniModalExpert(nn.Module):
    """Optional self-attention, then a bottleneck without activation, times a gate at zero; ignores ``other``."""

    def __init__(self, dim: int, *, config: AVMoEConfig) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, 4 if dim % 4 == 0 else 1, batch_first=True) \
            if config.uni_self_attention else None
        self.bottleneck = ConvBottleneck(dim, reduction=config.reduction, groups=config.groups,
                                         batch_norm=config.batch_norm, activation=False)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        if self.attention is not None:
            x = self.attention(x, x, x, need_weights=False)[0]
        return self.gate * self.bottleneck(x)


class AVMoEAdapter(nn.Module):
    """Bridge + router + experts for one sub-layer (see the module docstring).

    ``forward(x (B, N, D), other (B, M, D_o))`` -> the residual update ``(B, N, D)``; the batch-mean routing
    weights of the last call are kept (detached) in ``last_weights`` ``(E,)``.
    """

    def __init__(self, dim: int, tokens: int, other_dim: int, other_tokens: int, *, config: AVMoEConfig) -> None:
        super().__init__()
        self.bridge = TokenBridge(in_tokens=other_tokens, in_dim=other_dim, out_tokens=tokens, out_dim=dim)
        self.experts = nn.ModuleList(
            [LatentTokenAdapter(dim, num_latents=config.num_latents, reduction=config.reduction,
                                groups=config.groups, batch_norm=config.batch_norm)
             for _ in range(config.cross_experts)]
            + [UniModalExpert(dim, config=config) for _ in range(config.uni_experts)])
        self.router = nn.Sequential(nn.Linear(2 * dim, 128), nn.ReLU(), nn.Linear(128, 32), nn.ReLU(),
                                    nn.Linear(32, len(self.experts)))
        self.router_noise = config.router_noise
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        other = self.bridge(other)
        logits = self.router(torch.cat([x.mean(dim=1), other.mean(dim=1)], dim=-1))
        if self.training and self.router_noise > 0:
            logits = logits + self.router_noise * torch.randn_like(logits)
        weights = torch.softmax(logits, dim=-1)                                              # (B, E)
        self.last_weights = weights.detach().mean(dim=0)
        outputs = torch.stack([expert(x, other) for expert in self.experts], dim=-1)      # (B, N, D, E)
        return (outputs * weights[:, None, None, :]).sum(dim=-1)


class AVMoE(InBlockMethod):
    """AVMoE's trainable parts: a ``(p1, p2)`` :class:`AVMoEAdapter` pair per position and modality, and the
    read-out; ``extras`` holds ``{"router": {m: (2 * positions, E)}}``, the last batch's mean routing weights."""

    display_name = "AVMoE"
    adapter_class = AVMoEAdapter

    def extras(self) -> dict:
        return {"router": {name: torch.stack([adapter.last_weights for pair in pairs for adapter in pair])
                           for name, pairs in self.adapters.items()
                           if all(adapter.last_weights is not None for pair in pairs for adapter in pair)}}


register_method(MethodSpec("avmoe", AVMoEConfig, build_in_block(AVMoE), InBlockModel, reads_taps=False,
                           heads_option="out_heads", task_settings=AVMOE_TASK_SETTINGS,
                           description="AVMoE: routed uni-/cross-modal adapter experts inside the frozen blocks "
                                       "(not cacheable)"))
