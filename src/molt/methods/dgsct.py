"""DG-SCT: dual-guided spatial-channel attention prompts inside the frozen blocks of both backbones.

Cross-modal Prompts: Adapting Large Pre-trained Models for Audio-Visual Downstream Tasks, Duan et al., NeurIPS 2023
(DG-SCT). Re-implemented from the facts of its public repository ``haoyi-duan/DG-SCT`` (``AVE/nets/net_trans.py``,
``AVQA/net_grd_avst/net_avst.py``, the AVS model and the run scripts) gathered in the project's PEERS.md; no code
copied. Placement, bridges, latent-token attention and bottleneck are the shared pieces of
:mod:`molt.methods.inblock`; this file adds what makes DG-SCT.

Each adapter (p1 beside the attention sub-layer, p2 beside the MLP, for each modality at each of the 12 paired
positions of Swin-V2-L + HTS-AT) reads its own tokens ``x`` ``(B, N, D)`` and the other modality's tokens bridged to
``(B, N, D)`` (``o``), and computes, in order:

1. the latent-token exchange ``x <- x + g_c * softmax(x t^T) t`` with ``t = T + softmax(T o^T) o`` (``K`` latent
   tokens ``T``, gate ``g_c`` at zero);
2. **channel attention guided by the other modality**: ``a = mean_tokens(o)``,
   ``m_c = sigmoid(W_c relu(W_b mean_tokens(relu(W_a1 a) * relu(W_v1 x))))`` ``(B, 1, D)``;
3. **spatial attention guided by it**: ``m_s = sigmoid(w_s (relu(W_v2 (x * (m_c + 1))) * relu(W_a2 a)))``
   ``(B, N, 1)`` (hidden width ``D / 2``);
4. ``x <- x * (alpha * m_c + beta * m_s + 1 - alpha)`` (``alpha, beta`` = 0.3, 0.05; 0.2, 0.1 for MS3);
5. LayerNorm, grouped 1x1-convolution bottleneck with BatchNorm (``batch_norm``) and ReLU, LayerNorm, times a gate
   at zero (the audio adapters only with ``audio_gate``).

With both gates at zero the backbones compute exactly what they compute alone.

Per task (:data:`DGSCT_TASK_SETTINGS`, applied by ``--method dgsct``, each entry citing its script): 32 latent tokens
for AVE and AVS, 2 for AVQA; reduction 8 (2 for MS3); 2 convolution groups (4 for AVQA); BatchNorm and the audio
adapters' output gate for AVE only (the AVQA and AVS scripts leave ``--is_bn`` and ``--is_gate`` at 0, so there the
audio adapters' update is not zero at initialisation).

Assumptions and departures:

* **Temporal prompts**: the paper's temporal part is not applied in the released code (the repository's issue #7);
  not built here either.
* The repository pools the final tokens with the last adapter's spatial map (a softmax over the tokens of the tanh
  of its spatial scores) before its heads; by default (``head="common"``) a LayerNorm + uni-modal distillation
  read-out gives ``(B', K, D)`` to the same task head every method uses, so the head is ours, not DG-SCT's (its AVE
  head is 12.6 M parameters as its script counts them, 7.9 M of them called). ``head="official"`` pools as the
  repository does (:meth:`DGSCT.pool_final`, with gradients into the last p2 adapters' spatial layers; the audio
  only on AVQA, whose head grounds over the visual grid) and trains DG-SCT's own head (``molt.tasks.ave.official``,
  ``molt.tasks.avqa.official``). The frozen final LayerNorm of Swin-V2-L, which the repository applies
  before pooling, is not applied (our backbones end at their last block).
* The repositories leave DropPath, SpecAugment and HTS-AT's ``bn0`` in training mode; ours stay frozen in
  inference mode (:class:`~molt.backbones.base.TapBackbone`).
* In the shared setting (one Swin reading both) the positions are every block and no bridge is needed; DG-SCT
  itself only ships the separate setting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..typed_config import ranged
from .inblock import BridgedAdapter, InBlockConfig, InBlockMethod, InBlockModel, build_in_block
from .registry import MethodSpec, register_method

__all__ = ["DGSCTConfig", "DualGuidedAttention", "DGSCTAdapter", "DGSCT", "DGSCT_TASK_SETTINGS"]

#: ``method_config`` defaults per task (``task`` or ``task:setting``) from the run scripts of ``haoyi-duan/DG-SCT``
#: (@211fc57, under ``DG-SCT/``) and the argparse defaults they leave in place; ``avs`` is S4, ``avs:ms3`` adds MS3's
#: changes to it
DGSCT_TASK_SETTINGS: dict[str, dict[str, Any]] = {
    # AVE/train.sh l.1, 3, 5: --Adapter_downsample=8, --is_bn=1, --is_gate=1, --num_conv_group=2, --num_tokens=32;
    # alpha, beta: AVE/nets/net_trans.py l.611
    "ave": {"num_latents": 32, "reduction": 8, "groups": 2, "batch_norm": True, "audio_gate": True,
            "alpha": 0.3, "beta": 0.05},
    # AVS/avs_scripts/avs_s4/train.sh l.8: --num_tokens 32 --Adapter_downsample 8; avs_s4/base_options.py l.57
    # (num_conv_group 2), l.60 (is_bn 0), l.61 (is_gate 0); alpha, beta: avs_s4/model/PVT_AVSModel.py l.246
    "avs": {"num_latents": 32, "reduction": 8, "groups": 2, "batch_norm": False, "audio_gate": False,
            "alpha": 0.3, "beta": 0.05},
    # AVS/avs_scripts/avs_ms3/train.sh passes none of them: avs_ms3/base_options.py l.56 (Adapter_downsample 2),
    # l.70 (num_tokens 32); alpha, beta: avs_ms3/model/PVT_AVSModel.py l.244
    "avs:ms3": {"reduction": 2, "alpha": 0.2, "beta": 0.1},
    # AVQA/train.sh l.4: --Adapter_downsample 8 --num_tokens 2; AVQA/net_grd_avst/base_options.py l.70
    # (num_conv_group 4), l.77 (is_bn 0), l.78 (is_gate 0); alpha, beta: AVQA/net_grd_avst/net_avst.py l.163
    "avqa": {"num_latents": 2, "reduction": 8, "groups": 4, "batch_norm": False, "audio_gate": False,
             "alpha": 0.3, "beta": 0.05},
}


@dataclass
class DGSCTConfig(InBlockConfig):
    """Hyper-parameters of DG-SCT (the defaults are its AVE setting): those of
    :class:`~molt.methods.inblock.InBlockConfig`, with 32 latent tokens, and

    Attributes:
        alpha: weight of the channel map.
        beta: weight of the spatial map.
    """

    num_latents: int = ranged(32, at_least=1, meaning="latent tokens per adapter")
    alpha: float = ranged(0.3, at_least=0, meaning="weight of the channel map")
    beta: float = ranged(0.05, at_least=0, meaning="weight of the spatial map")


class DualGuidedAttention(nn.Module):
    """Steps 2-4 of the module docstring: channel and spatial attention of ``x`` guided by the bridged ``other``.

    ``forward(x (B, N, D), other (B, N, D))`` -> rescaled ``x`` ``(B, N, D)``; the last maps are kept (detached)
    in ``channel_map`` ``(B, 1, D)`` and ``spatial_map`` ``(B, N, 1)``, and, when :attr:`keep_scores` is set, the
    spatial scores before the sigmoid, *with* their graph, in ``spatial_scores`` ``(B, N, 1)`` (what DG-SCT pools
    the final tokens with).
    """

    def __init__(self, dim: int, *, alpha: float, beta: float) -> None:
        super().__init__()
        hidden = max(1, dim // 2)
        self.alpha, self.beta = alpha, beta
        self.other_channel = nn.Linear(dim, dim)
        self.own_channel = nn.Linear(dim, dim)
        self.channel_bottleneck = nn.Linear(dim, hidden)
        self.channel_out = nn.Linear(hidden, dim)
        self.own_spatial = nn.Linear(dim, hidden)
        self.other_spatial = nn.Linear(dim, hidden)
        self.spatial_out = nn.Linear(hidden, 1)
        self.channel_map: torch.Tensor | None = None
        self.spatial_map: torch.Tensor | None = None
        self.keep_scores = False
        self.spatial_scores: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        guide = other.mean(dim=1, keepdim=True)                                             # (B, 1, D)
        joint = (torch.relu(self.other_channel(guide)) * torch.relu(self.own_channel(x))).mean(dim=1)
        channel = torch.sigmoid(self.channel_out(torch.relu(self.channel_bottleneck(joint))))[:, None]
        spatial_query = torch.relu(self.own_spatial(x * (channel + 1.0)))
        scores = self.spatial_out(spatial_query * torch.relu(self.other_spatial(guide)))
        spatial = torch.sigmoid(scores)
        self.channel_map, self.spatial_map = channel.detach(), spatial.detach()
        self.spatial_scores = scores if self.keep_scores else None
        return x * (self.alpha * channel + self.beta * spatial + 1.0 - self.alpha)


class DGSCTAdapter(BridgedAdapter):
    """Bridge + latent-token exchange + :class:`DualGuidedAttention` + gated bottleneck, for one sub-layer.

    ``forward(x (B, N, D), other (B, M, D_o))`` -> the residual update ``(B, N, D)``.
    """

    def guide(self, dim: int, config: DGSCTConfig) -> nn.Module:
        return DualGuidedAttention(dim, alpha=config.alpha, beta=config.beta)


class DGSCT(InBlockMethod):
    """DG-SCT's trainable parts: a ``(p1, p2)`` :class:`DGSCTAdapter` pair per position and modality, and the
    read-out; ``extras`` holds ``{"gates": {m: (2 * positions,)}}``."""

    display_name = "DG-SCT"
    adapter_class = DGSCTAdapter

    def __init__(self, config: DGSCTConfig, visual: nn.Module | None, audio: nn.Module | None) -> None:
        super().__init__(config, visual, audio)
        if self.official_head:
            for name in self.modalities:
                self._last_guide(name).keep_scores = True

    def _last_guide(self, name: str) -> DualGuidedAttention:
        return self.adapters[name][-1][1].core.guide

    def pool_final(self, name: str, tokens: torch.Tensor) -> torch.Tensor:
        """DG-SCT's pooling (``AVE/nets/net_trans.py``, ``forward_swin``): the final tokens ``(B', N, D_last)``
        weighted by ``softmax_N(tanh(s))``, ``s`` ``(B', N, 1)`` the spatial scores of the modality's last p2
        adapter in this forward pass -> ``(B', 1, D_last)``. The last position must be in the final stage (the
        token counts agree), as with Swin-V2-L + HTS-AT."""
        scores = self._last_guide(name).spatial_scores
        if scores is None or scores.shape[:2] != tokens.shape[:2]:
            shape = None if scores is None else tuple(scores.shape)
            raise ValueError(f"DG-SCT's official pooling needs the last {name} adapter's spatial scores over the "
                             f"final tokens {tuple(tokens.shape[:2])}, got {shape}")
        weights = torch.softmax(torch.tanh(scores).transpose(1, 2), dim=-1)     # (B', 1, N)
        return weights @ tokens


register_method(MethodSpec("dgsct", DGSCTConfig, build_in_block(DGSCT), InBlockModel, reads_taps=False,
                           heads_option="out_heads", task_settings=DGSCT_TASK_SETTINGS,
                           description="DG-SCT: dual-guided spatial-channel attention prompts inside the frozen "
                                       "blocks (not cacheable)"))
