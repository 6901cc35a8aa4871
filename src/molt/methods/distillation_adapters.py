"""Uni-modal (UDA, eq. 1) and cross-modal (CDA, eq. 3) distillation adapters of MoLT's Feature Distillation Module.

MoLT: Mixture of Layer-Wise Tokens for Efficient Audio-Visual Learning, Rho et al. (Sec. 3.2.1-3.2.2)::

    UDA:  z~_{m;u} = TD(z_{m;u}, f_m) + W_{m;u} f_m                                            (eq. 1)
    CDA:  z~_{m;c} = CA( TD(z_{m;c}, f_m), TD(z_{m̄;c}, f_m̄) ) + W_{m;c} f_m                   (eq. 3)

**Residual ``W f``.** ``TD`` returns ``N_tokens`` tokens but ``W f`` has one token per backbone token (``N_l``);
the paper does not say how the two meet. We mean-pool the layer's tokens, project the pooled token with ``W``
(``D_l -> D``, with bias) and add it to every latent token. Because ``W`` is linear this is exactly "project every
token with ``W`` (eq. 1) and average over the ``N_l`` tokens". Why this rather than pooling the ``N_l`` tokens down to
``N_tokens`` groups: the latent tokens are an unordered set produced by attention, which is itself
permutation-invariant over the ``N_l`` tokens; grouping a raster-scanned Swin grid (or a folded HTS-AT
spectrogram) into ``N_tokens`` consecutive chunks would tie each latent token to an arbitrary image strip, and it
would make the adapter depend on ``N_l`` being divisible-ish by ``N_tokens``. The mean works for any ``N_l``
(including resolutions other than the nominal one) and gives each token a stable global-context skip path.

**CDA layout.** ``z~_{a;c}`` needs ``TD(z_{v;c}, f_v)`` and ``z~_{v;c}`` needs ``TD(z_{a;c}, f_a)``: one
:class:`CrossModalDistillationAdapter` holds both modalities' latent tokens, TDs, cross-attentions and residuals
and returns both outputs at once, so each TD runs once. ``CA`` is multi-head attention of the same form as eq. 2
(:class:`~molt.methods.token_distillation.TokenAttention`, width ``D`` -> ``D``, no output projection).
"""
from __future__ import annotations

import torch
from torch import nn

from .token_distillation import ProjectedTap, TokenAttention, TokenDistillation

__all__ = ["UniModalDistillationAdapter", "CrossModalDistillationAdapter", "LayerCentricDistillation",
           "pooled_residual", "heads_dividing"]


def pooled_residual(projection: nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """``W f`` averaged over the ``N_l`` tokens: ``(B, N_l, D_l)`` -> ``(B, 1, D)``, broadcast over the latent
    tokens by the caller (see the module docstring)."""
    return projection(features.mean(dim=1, keepdim=True))


class UniModalDistillationAdapter(nn.Module):
    """UDA (eq. 1) for one modality: ``TD(z_u, f) + W_u mean_n(f)``.

    Args:
        in_dim: width ``D_l`` of the layer's tokens.
        dim: output width ``D``.
        num_tokens: number of latent tokens.
        num_heads: attention heads of TD.
        attn_drop: attention dropout.
        own_projections: ``False``: TD's ``W^Q`` / ``W^K`` / ``W^V`` are the modality's shared ones, passed to
            ``forward`` as a :class:`~molt.methods.token_distillation.ProjectedTap`.

    ``forward(f (B, N_l, D_l), projected=None)`` -> ``(B, num_tokens, D)``.
    """

    def __init__(self, *, in_dim: int, dim: int, num_tokens: int, num_heads: int, attn_drop: float = 0.0,
                 own_projections: bool = True) -> None:
        super().__init__()
        self.distill = TokenDistillation(in_dim=in_dim, dim=dim, num_tokens=num_tokens, num_heads=num_heads,
                                         attn_drop=attn_drop, own_projections=own_projections)
        self.residual = nn.Linear(in_dim, dim)

    def forward(self, features: torch.Tensor, projected: ProjectedTap | None = None) -> torch.Tensor:
        return self.distill(features, projected=projected) + pooled_residual(self.residual, features)


class CrossModalDistillationAdapter(nn.Module):
    """CDA (eq. 3) for both modalities at once.

    Args:
        visual_dim, audio_dim: widths of the visual and audio layer tokens.
        dim: output width ``D``.
        num_tokens_visual, num_tokens_audio: latent tokens per modality.
        num_heads: heads of the TDs and the cross-attentions.
        attn_drop: attention dropout.
        own_projections: ``False``: the TDs use their modality's shared projections (see the UDA).

    ``forward(f_v (B, N_v, D_v), f_a (B, N_a, D_a), projected=None)`` -> ``(z~_{v;c} (B, K_v, D), z~_{a;c}
    (B, K_a, D))``, where the visual output uses the visual distilled tokens as queries over the audio distilled
    tokens and vice versa; ``projected`` maps ``"visual"`` / ``"audio"`` to the taps' shared projections.
    """

    def __init__(self, *, visual_dim: int, audio_dim: int, dim: int, num_tokens_visual: int, num_tokens_audio: int,
                 num_heads: int, attn_drop: float = 0.0, own_projections: bool = True) -> None:
        super().__init__()
        self.distill_visual = TokenDistillation(in_dim=visual_dim, dim=dim, num_tokens=num_tokens_visual,
                                                num_heads=num_heads, attn_drop=attn_drop,
                                                own_projections=own_projections)
        self.distill_audio = TokenDistillation(in_dim=audio_dim, dim=dim, num_tokens=num_tokens_audio,
                                               num_heads=num_heads, attn_drop=attn_drop,
                                               own_projections=own_projections)
        self.cross_visual = TokenAttention(query_dim=dim, kv_dim=dim, dim=dim, num_heads=num_heads,
                                           attn_drop=attn_drop)
        self.cross_audio = TokenAttention(query_dim=dim, kv_dim=dim, dim=dim, num_heads=num_heads,
                                          attn_drop=attn_drop)
        self.residual_visual = nn.Linear(visual_dim, dim)
        self.residual_audio = nn.Linear(audio_dim, dim)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor,
                projected: dict[str, ProjectedTap] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        projected = projected or {}
        distilled_visual = self.distill_visual(visual, projected=projected.get("visual"))
        distilled_audio = self.distill_audio(audio, projected=projected.get("audio"))
        out_visual = self.cross_visual(distilled_visual, distilled_audio) + pooled_residual(self.residual_visual,
                                                                                            visual)
        out_audio = self.cross_audio(distilled_audio, distilled_visual) + pooled_residual(self.residual_audio, audio)
        return out_visual, out_audio


def heads_dividing(width: int, max_heads: int) -> int:
    """The largest number of heads ``<= max_heads`` that divides ``width``."""
    return next(h for h in range(min(max_heads, width), 0, -1) if width % h == 0)


class LayerCentricDistillation(nn.Module):
    """Mettle's Layer-Centric Distillation (LCD) for one modality and one layer, also the in-block methods'
    read-out: optional LayerNorm, then a uni-modal distillation adapter.

    Args:
        in_dim: width ``D_l`` of the layer's tokens.
        dim: output width ``D``.
        num_tokens: meta-tokens ``K``.
        num_heads: attention heads.
        attn_drop: attention dropout.
        pre_norm: LayerNorm on the tap first.
        layer_width: meta-tokens at the layer's own width ``D_l`` (heads: the largest divisor of ``D_l`` not above
            ``num_heads``), then a linear map ``D_l -> D``.

    ``forward(f (B, N_l, D_l))`` -> meta-tokens ``(B, K, D)``.
    """

    def __init__(self, *, in_dim: int, dim: int, num_tokens: int, num_heads: int, attn_drop: float = 0.0,
                 pre_norm: bool = True, layer_width: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim) if pre_norm else nn.Identity()
        width = in_dim if layer_width else dim
        heads = heads_dividing(width, num_heads) if layer_width else num_heads
        self.distill = UniModalDistillationAdapter(in_dim=in_dim, dim=width, num_tokens=num_tokens, num_heads=heads,
                                                   attn_drop=attn_drop)
        self.to_common = nn.Linear(in_dim, dim) if layer_width else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        tokens = self.distill(self.norm(features))
        return tokens if self.to_common is None else self.to_common(tokens)
