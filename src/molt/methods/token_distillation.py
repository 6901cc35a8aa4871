"""Token distillation (TD): multi-head attention from a few latent tokens to a layer's tokens.

MoLT: Mixture of Layer-Wise Tokens for Efficient Audio-Visual Learning, Rho et al. (Sec. 3.2.1, eq. 2)::

    TD(z, f) = softmax( z W^Q (f W^K)^T / sqrt(d_H) ) f W^V            (computed per head, heads concatenated)

with latent tokens ``z`` (N_tokens, D_q) as queries and the layer's tokens ``f`` (B, N_l, D_l) as keys and values;
``W^Q`` (D_q -> H*d_H), ``W^K`` and ``W^V`` (D_l -> H*d_H) project to ``H`` heads of width ``d_H``.

Choices (the paper leaves them open):

* ``H * d_H = dim``, the common width ``D`` of every MoLT token: the projections map each backbone's own width
  ``D_l`` straight to ``D``, so the TD output already lives in ``D`` and no output projection is needed.
* No output projection and no bias in ``W^Q``, ``W^K``, ``W^V``: exactly eq. 2. (The adapters add a residual
  linear projection of their own, eqs. 1 and 3.)
* As in the paper, the latent tokens have the width of the layer they read (``D_l``), so ``W^Q`` is ``D_l -> D``.
* Latent tokens start as unit-variance Gaussians (as learned query embeddings usually do), not with the 0.02
  scale of a ViT class token: they enter ``W^Q`` un-normalised, and tiny queries give near-uniform attention, so
  every latent token of a layer starts as the same average and takes hundreds of steps to separate (measured:
  TOR of 2 layers x 8 tokens stays at its collapsed value ~112 for 30 Adam steps at lr 5e-4 with std 0.02,
  and drops to ~5 within 20-30 steps with std 1).

:class:`TokenAttention` is the attention core with queries supplied by the caller (the cross-attention of the
cross-modal adapter, eq. 3, uses it); :class:`TokenDistillation` adds the learnable latent tokens.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TokenAttention", "TokenDistillation", "SharedProjections", "ProjectedTap"]


class ProjectedTap(NamedTuple):
    """A layer's tokens projected once by its modality's shared ``W^K`` / ``W^V``, with the shared ``W^Q`` that
    every adapter's latent tokens go through (``share_projections="modality"``)."""

    q_proj: nn.Linear
    keys: torch.Tensor      # (B, H, N_l, d_H)
    values: torch.Tensor    # (B, H, N_l, d_H)


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    # (B, N, H*d_H) -> (B, H, N, d_H)
    return x.unflatten(-1, (num_heads, x.shape[-1] // num_heads)).transpose(1, 2)


def _attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, num_heads: int,
               dropout: float) -> torch.Tensor:
    """Projected ``queries`` ``(1 or B, N_q, D)`` over split ``keys`` / ``values`` ``(B, H, N_l, d_H)`` ->
    ``(B, N_q, D)``."""
    queries = _split_heads(queries, num_heads).expand(keys.shape[0], -1, -1, -1)
    out = F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout)
    return out.transpose(1, 2).flatten(2)


class SharedProjections(nn.Module):
    """The literal reading of eq. 2's ``W^Q_m, W^K_m, W^V_m``: one set per modality and layer, shared by all of
    its UDAs and CDAs, so each tap is projected to keys and values once (:meth:`project`)."""

    def __init__(self, *, in_dim: int, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(in_dim, dim, bias=False)
        self.k_proj = nn.Linear(in_dim, dim, bias=False)
        self.v_proj = nn.Linear(in_dim, dim, bias=False)

    def project(self, features: torch.Tensor) -> ProjectedTap:
        return ProjectedTap(self.q_proj, _split_heads(self.k_proj(features), self.num_heads),
                            _split_heads(self.v_proj(features), self.num_heads))


class TokenAttention(nn.Module):
    """Multi-head attention without output projection: ``softmax(q W^Q (f W^K)^T / sqrt(d_H)) f W^V`` (eq. 2).

    Args:
        query_dim: width ``D_q`` of the queries.
        kv_dim: width ``D_l`` of the tokens attended to (keys and values).
        dim: output width ``D = H * d_H``.
        num_heads: number of heads ``H``; must divide ``dim``.
        attn_drop: dropout on the attention probabilities (training only).
        own_projections: ``False`` builds no ``W^Q`` / ``W^K`` / ``W^V``: the caller passes a :class:`ProjectedTap`
            of :class:`SharedProjections` instead.
    """

    def __init__(self, *, query_dim: int, kv_dim: int, dim: int, num_heads: int, attn_drop: float = 0.0,
                 own_projections: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        if own_projections:
            self.q_proj = nn.Linear(query_dim, dim, bias=False)
            self.k_proj = nn.Linear(kv_dim, dim, bias=False)
            self.v_proj = nn.Linear(kv_dim, dim, bias=False)

    def attend(self, queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Queries already projected by ``W^Q`` ``(B or 1, N_q, D)`` attend to ``features`` ``(B, N_l, D_l)``."""
        keys = _split_heads(self.k_proj(features), self.num_heads)
        values = _split_heads(self.v_proj(features), self.num_heads)
        return self.attend_projected(queries, keys, values)

    def attend_projected(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Projected queries over keys and values already projected and split into heads."""
        return _attention(queries, keys, values, self.num_heads, self.attn_drop if self.training else 0.0)

    def forward(self, queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``queries`` ``(B, N_q, D_q)`` or ``(N_q, D_q)`` (shared by the batch), ``features`` ``(B, N_l, D_l)``
        -> ``(B, N_q, D)``."""
        if features.ndim != 3:
            raise ValueError(f"expected features of shape (B, N, D), got {tuple(features.shape)}")
        if queries.ndim == 2:
            queries = queries.unsqueeze(0)
        if queries.ndim != 3 or queries.shape[0] not in (1, features.shape[0]):
            raise ValueError(f"expected queries of shape (N_q, D_q) or (B, N_q, D_q) with B = {features.shape[0]}, "
                             f"got {tuple(queries.shape)}")
        return self.attend(self.q_proj(queries), features)


class TokenDistillation(TokenAttention):
    """Token distillation, eq. 2: ``num_tokens`` learnable latent tokens (queries) read a layer's tokens.

    Args:
        in_dim: width ``D_l`` of the layer's tokens; the latent tokens have this width too (paper: ``z`` in
            ``R^{N x D_l}``).
        dim: output width ``D = H * d_H``.
        num_tokens: number of latent tokens ``N_tokens``.
        num_heads: number of heads ``H``.
        attn_drop: dropout on the attention probabilities (training only).

    ``forward(features)`` -> ``(B, N_tokens, D)``; ``forward(features, queries)`` uses the given queries instead
    of the latent tokens.
    """

    def __init__(self, *, in_dim: int, dim: int, num_tokens: int, num_heads: int, attn_drop: float = 0.0,
                 own_projections: bool = True) -> None:
        super().__init__(query_dim=in_dim, kv_dim=in_dim, dim=dim, num_heads=num_heads, attn_drop=attn_drop,
                         own_projections=own_projections)
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be at least 1, got {num_tokens}")
        self.num_tokens = num_tokens
        self.latent_tokens = nn.Parameter(torch.empty(num_tokens, in_dim))
        nn.init.normal_(self.latent_tokens, std=1.0)

    def forward(self, features: torch.Tensor, queries: torch.Tensor | None = None,  # type: ignore[override]
                projected: ProjectedTap | None = None) -> torch.Tensor:
        """``features`` ``(B, N_l, D_l)`` -> distilled tokens ``(B, N_tokens, D)``; with ``projected`` (the same
        features through the modality's :class:`SharedProjections`) the shared ``W^Q`` projects the latent tokens
        and the keys and values are not computed again."""
        if projected is not None:
            latent = self.latent_tokens if queries is None else queries
            return self.attend_projected(projected.q_proj(latent).unsqueeze(0) if latent.ndim == 2
                                         else projected.q_proj(latent), projected.keys, projected.values)
        return super().forward(self.latent_tokens if queries is None else queries, features)
