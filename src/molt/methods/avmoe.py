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
  bottleneck *without* the ReLU (as the repository builds it), times a gate at zero. The self-attention is either
  a 4-head attention with dropout 0.2 (``uni_attention="multihead"``, the repository's
  ``--self_attention_version v1``) or the weight-free latent-token exchange of the own tokens with themselves
  through ``num_latents`` latent tokens, added with a gate at zero (``"latent"``, its ``v2``).

With the output gates (``audio_gate``; the visual experts always have them) every expert ends in a zero gate, so
before training the backbones compute what they compute alone. The mixture is dense (every expert runs; no top-k);
Gaussian noise (std ``router_noise``) is added to the router logits in training for AVS, as the repository does.

**Load balancing** (``load_balance_weight`` > 0, the MS3 recipe): each adapter adds the KL divergence of the uniform
distribution ``u`` from its routing weights averaged over the batch ``p``, ``sum_e u_e log(u_e / p_e)``; the sum over
all adapters, times the weight, is ``aux_losses["load_balance"]`` (``avs_ms3/model/PVT_AVSModel_v2.py``, the
``MoEAdapter`` load-balancing method, summed over adapters in the forward pass and weighted in ``train_v2.py``).

Per task (:data:`AVMOE_TASK_SETTINGS`, applied by ``--method avmoe``), from the repository's run scripts and the
argparse defaults they leave in place: experts cross/uni 1/1 for AVE and S4, 1/2 for AVQA, 2/2 for MS3; no adapters
in stages 2 and 4 for AVE and MS3 (8 of the 12 positions); reduction 8 (2 for MS3); bottleneck groups 2 (4 for
AVQA); BatchNorm and audio output gates only for AVE; 32 latent tokens for AVE, 2 for AVQA and 87 for AVS (the
AVS model builds its experts with the constructor's default, the run script's ``--num_tokens`` does not reach
them); the uni-modal self-attention on for AVS (multi-head for S4, latent-token for MS3); load balancing (0.01) for
MS3.

Assumptions and departures:

* **Initialisation.** The repository's AVE recipe starts from a trained DG-SCT checkpoint (its temporal attention and
  CMBS head); ours starts from scratch like every other method here.
* **Multi-head self-attention axis.** The repository's S4 model feeds ``(frames, tokens, width)`` to a sequence-first
  ``nn.MultiheadAttention``, so its attention runs across the frames of the batch at each token position; ours
  attends over the tokens of each frame (``batch_first``). The parameters are the same.
* Output: a LayerNorm + uni-modal distillation read-out to ``(B', K, D)`` for the common task heads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..typed_config import ranged
from .inblock import (ConvBottleneck, InBlockConfig, InBlockMethod, InBlockModel, LatentTokenAdapter, TokenBridge,
                      build_in_block, latent_token_attention)
from .registry import MethodSpec, register_method

__all__ = ["AVMoEConfig", "UniModalExpert", "AVMoEAdapter", "AVMoE", "AVMOE_TASK_SETTINGS", "UNI_ATTENTIONS",
           "load_balance_loss"]

#: ``method_config`` defaults per task (``task`` or ``task:setting``) from the run scripts of ``yingchengy/AVMOE``
#: (@edd2383) and the argparse defaults they leave in place; ``avs`` is S4, ``avs:ms3`` adds MS3's changes to it
AVMOE_TASK_SETTINGS: dict[str, dict[str, Any]] = {
    # AVE/train.sh l.7-16 and 36: experts 1/1, skip_num=2 (stages 2, 4 skipped), is_gate=1, is_bn=1,
    # num_conv_group=2, Adapter_downsample=8, self-attention 0, --num_tokens=32 (passed to the experts,
    # AVE/nets/net_trans_v3.py l.605)
    "ave": {"cross_experts": 1, "uni_experts": 1, "skip_stages": [1, 3], "num_latents": 32, "reduction": 8,
            "groups": 2, "batch_norm": True, "audio_gate": True, "uni_self_attention": False},
    # AVS/avs_scripts/avs_s4/train_v2.sh l.6-11 and 26: experts 1/1, skip_num=1, self-attention 1,
    # --Adapter_downsample 8; avs_s4/base_options.py l.57, 60, 61, 88: num_conv_group 2, is_bn 0, is_gate 0,
    # self_attention_version v1 (multi-head); 87 latent tokens: the MoEAdapter default (avs_s4/model/
    # PVT_AVSModel_v2.py l.255), which the model never overrides; router noise 0.01 in training (l.295)
    "avs": {"cross_experts": 1, "uni_experts": 1, "skip_stages": [], "num_latents": 87, "reduction": 8,
            "groups": 2, "batch_norm": False, "audio_gate": False, "uni_self_attention": True,
            "uni_attention": "multihead", "router_noise": 0.01},
    # AVS/avs_scripts/avs_ms3/train_v2.sh l.7-15: experts 2/2, skip_num=2, load balancing 1 with weight 0.01,
    # self-attention 1, version v2 (latent tokens); no --Adapter_downsample: avs_ms3/base_options.py l.56 (2)
    "avs:ms3": {"cross_experts": 2, "uni_experts": 2, "skip_stages": [1, 3], "reduction": 2,
                "uni_attention": "latent", "load_balance_weight": 0.01},
    # AVQA/train_v2.sh l.3-13, 33, 36: experts 1/2, skip_num=1, num_tokens=2, --Adapter_downsample 8, --is_gate 0,
    # self-attention 0; AVQA/net_grd_avst/base_options.py l.71, 78: num_conv_group 4, is_bn 0; no router noise
    "avqa": {"cross_experts": 1, "uni_experts": 2, "skip_stages": [], "num_latents": 2, "reduction": 8, "groups": 4,
             "batch_norm": False, "audio_gate": False, "uni_self_attention": False},
}

#: the uni-modal experts' self-attention kinds (``--self_attention_version`` v1, v2 of the repository)
UNI_ATTENTIONS = ("multihead", "latent")


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
        uni_attention: which self-attention, ``"multihead"`` (4 heads) or ``"latent"`` (the weight-free exchange
            through ``num_latents`` latent tokens, gated); see the module docstring.
        load_balance_weight: weight of the load-balancing loss (0: none; 0.01 in the MS3 recipe).
    """

    num_latents: int = ranged(32, at_least=1, meaning="latent tokens per cross-modal expert")
    cross_experts: int = ranged(1, at_least=0, meaning="cross-modal experts per adapter")
    uni_experts: int = ranged(1, at_least=0, meaning="uni-modal experts per adapter")
    skip_stages: list[int] = field(default_factory=lambda: [1, 3])
    router_noise: float = ranged(0.0, at_least=0, meaning="std of the router noise")
    uni_self_attention: bool = False
    uni_attention: str = "multihead"
    load_balance_weight: float = ranged(0.0, at_least=0, meaning="weight of the load-balancing loss")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.skip_stages = [int(stage) for stage in self.skip_stages]
        if any(stage < 0 for stage in self.skip_stages):
            raise ValueError(f"skip_stages must be stage indices (0 = first), got {self.skip_stages}")
        if self.cross_experts + self.uni_experts < 1:
            raise ValueError(f"AVMoE needs at least one expert: cross_experts={self.cross_experts}, "
                             f"uni_experts={self.uni_experts}")
        if self.uni_attention not in UNI_ATTENTIONS:
            raise ValueError(f"uni_attention must be one of {', '.join(UNI_ATTENTIONS)}, got {self.uni_attention!r}")


class UniModalExpert(nn.Module):
    """Optional self-attention (``config.uni_attention``), then a bottleneck without activation, times a gate at
    zero (none with ``gated=False``); ignores ``other``."""

    def __init__(self, dim: int, *, config: AVMoEConfig, gated: bool = True) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, 4 if dim % 4 == 0 else 1, dropout=0.2, batch_first=True) \
            if config.uni_self_attention and config.uni_attention == "multihead" else None
        latent = config.uni_self_attention and config.uni_attention == "latent"
        self.latents = nn.Parameter(torch.rand(config.num_latents, dim)) if latent else None
        self.gate_self = nn.Parameter(torch.zeros(1)) if latent else None
        self.bottleneck = ConvBottleneck(dim, reduction=config.reduction, groups=config.groups,
                                         batch_norm=config.batch_norm, activation=False)
        self.gate = nn.Parameter(torch.zeros(1)) if gated else None

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        if self.attention is not None:
            x = self.attention(x, x, x, need_weights=False)[0]
        if self.latents is not None:
            x = x + self.gate_self * latent_token_attention(x, self.latents, x)
        update = self.bottleneck(x)
        return update if self.gate is None else self.gate * update


class AVMoEAdapter(nn.Module):
    """Bridge + router + experts for one sub-layer (see the module docstring).

    ``forward(x (B, N, D), other (B, M, D_o))`` -> the residual update ``(B, N, D)``; the batch-mean routing
    weights of the last call are kept in ``mean_weights`` ``(E,)`` (in the graph, for the load-balancing loss) and,
    detached, in ``last_weights``. ``gated=False`` builds the experts without their output gates.
    """

    def __init__(self, dim: int, tokens: int, other_dim: int, other_tokens: int, *, config: AVMoEConfig,
                 gated: bool = True) -> None:
        super().__init__()
        self.bridge = TokenBridge(in_tokens=other_tokens, in_dim=other_dim, out_tokens=tokens, out_dim=dim)
        self.experts = nn.ModuleList(
            [LatentTokenAdapter(dim, num_latents=config.num_latents, reduction=config.reduction,
                                groups=config.groups, batch_norm=config.batch_norm, gate=gated)
             for _ in range(config.cross_experts)]
            + [UniModalExpert(dim, config=config, gated=gated) for _ in range(config.uni_experts)])
        self.router = nn.Sequential(nn.Linear(2 * dim, 128), nn.ReLU(), nn.Linear(128, 32), nn.ReLU(),
                                    nn.Linear(32, len(self.experts)))
        self.router_noise = config.router_noise
        self.mean_weights: torch.Tensor | None = None
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        other = self.bridge(other)
        logits = self.router(torch.cat([x.mean(dim=1), other.mean(dim=1)], dim=-1))
        if self.training and self.router_noise > 0:
            logits = logits + self.router_noise * torch.randn_like(logits)
        weights = torch.softmax(logits, dim=-1)                                              # (B, E)
        self.mean_weights = weights.mean(dim=0)
        self.last_weights = self.mean_weights.detach()
        outputs = torch.stack([expert(x, other) for expert in self.experts], dim=-1)      # (B, N, D, E)
        return (outputs * weights[:, None, None, :]).sum(dim=-1)


def load_balance_loss(mean_weights: torch.Tensor) -> torch.Tensor:
    """``KL(u || p) = sum_e u_e log(u_e / p_e)`` of the uniform distribution ``u`` from the batch-mean routing
    weights ``p`` ``(E,)`` (the repository's MS3 load-balancing term, ``kl_div`` with ``batchmean`` over one row)."""
    uniform = torch.full_like(mean_weights, 1.0 / mean_weights.numel())
    return (uniform * (uniform.log() - mean_weights.log())).sum()


class AVMoE(InBlockMethod):
    """AVMoE's trainable parts: a ``(p1, p2)`` :class:`AVMoEAdapter` pair per position and modality, and the
    read-out; ``extras`` holds ``{"router": {m: (2 * positions, E)}}``, the last batch's mean routing weights, and
    ``aux_losses`` ``{"load_balance": ...}`` when ``load_balance_weight`` > 0."""

    display_name = "AVMoE"
    adapter_class = AVMoEAdapter

    def aux_losses(self) -> dict[str, torch.Tensor]:
        """``load_balance_weight`` times the sum of :func:`load_balance_loss` over every adapter of the last forward
        pass (nothing when the weight is 0)."""
        weight = self.config.load_balance_weight
        means = [adapter.mean_weights for pairs in self.adapters.values() for pair in pairs for adapter in pair]
        if weight == 0 or any(mean is None for mean in means):
            return {}
        return {"load_balance": weight * sum(load_balance_loss(mean) for mean in means)}

    def extras(self) -> dict:
        return {"router": {name: torch.stack([adapter.last_weights for pair in pairs for adapter in pair])
                           for name, pairs in self.adapters.items()
                           if all(adapter.last_weights is not None for pair in pairs for adapter in pair)}}


register_method(MethodSpec("avmoe", AVMoEConfig, build_in_block(AVMoE), InBlockModel, reads_taps=False,
                           heads_option="out_heads", task_settings=AVMOE_TASK_SETTINGS,
                           description="AVMoE: routed uni-/cross-modal adapter experts inside the frozen blocks "
                                       "(not cacheable)"))
