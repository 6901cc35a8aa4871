"""Router of MoLT's Feature Distillation Module (eqs. 4-5).

MoLT: Mixture of Layer-Wise Tokens for Efficient Audio-Visual Learning, Rho et al. (Sec. 3.2.3)::

    w_i = exp(R_i(f_{v;a})) / sum_j exp(R_j(f_{v;a})),   j = 1 .. N_UDA + N_CDA                   (eq. 4)
    z~_m = sum_i w_{u_i} z~_{m;u_i} + sum_j w_{c_j} z~_{m;c_j}                                      (eq. 5)

``R`` is an MLP (Linear -> GELU -> Linear) on the concatenation of the layer's visual and audio embeddings; each
modality's ``(B, N_l, D_l)`` tokens are mean-pooled over ``N_l`` first, so the router sees one ``D_v + D_a`` vector
per sample. Eq. 4 computes one weight per adapter from the joint input, so **one set of weights is shared by the
audio and the visual outputs** of the layer (an adapter index ``i`` covers both modalities of that adapter).
Adapters are ordered ``[UDA_1 .. UDA_{N_UDA}, CDA_1 .. CDA_{N_CDA}]``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["Router", "mix_experts"]


class Router(nn.Module):
    """Softmax router over ``num_experts`` adapters (eq. 4).

    Args:
        in_dims: widths of the inputs that are pooled and concatenated (visual first, then audio; a single
            entry in the single-modality variant).
        num_experts: ``N_UDA + N_CDA``.
        hidden_dim: width of the MLP's hidden layer.

    ``forward([f_v (B, N_v, D_v), f_a (B, N_a, D_a)])`` -> weights ``(B, num_experts)``, positive, summing to 1.
    """

    def __init__(self, *, in_dims: Sequence[int], num_experts: int, hidden_dim: int) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"the router needs at least one adapter, got num_experts={num_experts}")
        self.in_dims = list(in_dims)
        self.num_experts = num_experts
        self.mlp = nn.Sequential(nn.Linear(sum(self.in_dims), hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, num_experts))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.in_dims):
            raise ValueError(f"router expects {len(self.in_dims)} inputs, got {len(features)}")
        pooled = torch.cat([tokens.mean(dim=1) for tokens in features], dim=-1)
        return self.mlp(pooled).softmax(dim=-1)


def mix_experts(outputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 5: ``outputs`` ``(B, E, K, D)`` weighted by ``weights`` ``(B, E)`` -> ``(B, K, D)``."""
    return torch.einsum("bekd,be->bkd", outputs, weights)
