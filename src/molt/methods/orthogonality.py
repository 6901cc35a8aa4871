"""Token Orthogonality Regularization (TOR) of MoLT (eq. 8).

MoLT: Mixture of Layer-Wise Tokens for Efficient Audio-Visual Learning, Rho et al. (Sec. 3.4)::

    L_TOR = || C - I_N ||_F^2,   C_ij = z_i . z_j / (||z_i|| ||z_j||)                              (eq. 8)

over the ``N = L * K`` layer-wise latent tokens of one modality (all selected layers concatenated). ``N``
identical tokens give ``N (N - 1)``; orthogonal tokens give 0. The loss is averaged over the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["token_orthogonality_loss", "token_cosine_similarity"]


def token_cosine_similarity(tokens: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine-similarity matrix ``C`` ``(B, N, N)`` of ``tokens`` ``(B, N, D)`` (also used for paper Fig. 5a)."""
    if tokens.ndim != 3:
        raise ValueError(f"expected tokens of shape (B, N, D), got {tuple(tokens.shape)}")
    normalised = F.normalize(tokens, dim=-1, eps=eps)
    return normalised @ normalised.transpose(1, 2)


def token_orthogonality_loss(tokens: torch.Tensor) -> torch.Tensor:
    """Eq. 8: ``||C - I_N||_F^2`` for ``tokens`` ``(B, N, D)``, averaged over the batch -> scalar."""
    similarity = token_cosine_similarity(tokens.float())
    identity = torch.eye(similarity.shape[-1], device=similarity.device, dtype=similarity.dtype)
    return (similarity - identity).pow(2).sum(dim=(1, 2)).mean()
