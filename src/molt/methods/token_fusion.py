"""Token Fusion Module (TFM) of MoLT (eqs. 6-7) and the fusion alternatives of the paper's Tab. 7.

MoLT: Mixture of Layer-Wise Tokens for Efficient Audio-Visual Learning, Rho et al. (Sec. 3.3)::

    alpha^(l) = exp(MLP(z~^(l))) / sum_k exp(MLP(z~^(k)))                                           (eq. 6)
    Z^ = sum_l alpha^(l) z~^(l)                                                                      (eq. 7)

Eq. 6 gives one weight per layer, while ``z~^(l)`` holds ``K`` tokens: the MLP (Linear -> GELU -> Linear to a
scalar) scores the **mean of the layer's K tokens**, so every layer gets one input-dependent score whatever ``K``
is. One module per modality (the paper's TFM is modality-specific).

Modes (``fusion=``):

* ``"mlp"`` (default, eqs. 6-7): input-dependent weights from the MLP.
* ``"avg"``: plain average over layers (Mettle's choice, Tab. 7 "Avg. pool").
* ``"gates"``: one learnable logit per layer, softmax-normalised, the same for every input (Tab. 7
  "Learnable gates"); starts uniform.
* ``"mlp_token"``: the other literal reading of eq. 6: the same MLP scores **every token** of every layer and the
  softmax runs over layers *per token* (``alpha^(l)_k``), so token ``k`` of ``Z^`` mixes the layers with its own
  weights. The weights returned for plots and logs are their mean over the ``K`` tokens (still a distribution
  over layers).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["TokenFusion", "FUSION_MODES"]

FUSION_MODES = ("mlp", "avg", "gates", "mlp_token")


class TokenFusion(nn.Module):
    """Fuse layer-wise tokens ``(B, L, K, D)`` into ``(B, K, D)``.

    Args:
        dim: token width ``D``.
        num_layers: number of layers ``L`` (needed by ``"gates"``; checked for every mode).
        fusion: ``"mlp"``, ``"avg"``, ``"gates"`` or ``"mlp_token"``.
        hidden_dim: hidden width of the scoring MLP (``"mlp"`` and ``"mlp_token"``); defaults to ``dim``.

    ``forward(tokens)`` -> ``(fused (B, K, D), weights (B, L))``; weights are positive and sum to 1 over layers.
    """

    def __init__(self, *, dim: int, num_layers: int, fusion: str = "mlp", hidden_dim: int | None = None) -> None:
        super().__init__()
        if fusion not in FUSION_MODES:
            raise ValueError(f"unknown fusion {fusion!r}: expected one of {', '.join(FUSION_MODES)}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.dim = dim
        self.num_layers = num_layers
        self.fusion = fusion
        if fusion in ("mlp", "mlp_token"):
            hidden_dim = hidden_dim or dim
            # no bias on the scalar output: one constant added to every layer's logit cancels in the softmax
            self.score = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 1, bias=False))
        elif fusion == "gates":
            self.gate_logits = nn.Parameter(torch.zeros(num_layers))

    def token_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token fusion weights ``(B, L, K)`` (softmax over ``L``) of the ``"mlp_token"`` mode."""
        return self.score(tokens).squeeze(-1).softmax(dim=1)

    def layer_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """Fusion weights ``(B, L)`` for ``tokens`` ``(B, L, K, D)`` (eq. 6 in ``"mlp"`` mode; the token mean of
        :meth:`token_weights` in ``"mlp_token"`` mode)."""
        batch, num_layers = tokens.shape[:2]
        if self.fusion == "mlp_token":
            return self.token_weights(tokens).mean(dim=2)
        if self.fusion == "mlp":
            return self.score(tokens.mean(dim=2)).squeeze(-1).softmax(dim=-1)
        if self.fusion == "gates":
            return self.gate_logits.softmax(dim=0).unsqueeze(0).expand(batch, -1)
        return tokens.new_full((batch, num_layers), 1.0 / num_layers)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tokens.ndim != 4 or tokens.shape[1] != self.num_layers or tokens.shape[-1] != self.dim:
            raise ValueError(f"expected layer-wise tokens (B, L={self.num_layers}, K, D={self.dim}), "
                             f"got {tuple(tokens.shape)}")
        if self.fusion == "mlp_token":
            per_token = self.token_weights(tokens)
            return torch.einsum("blkd,blk->bkd", tokens, per_token), per_token.mean(dim=2)
        weights = self.layer_weights(tokens)
        return torch.einsum("blkd,bl->bkd", tokens, weights), weights
