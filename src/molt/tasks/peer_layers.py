"""The temporal transformer layers that DG-SCT's and AVMoE's own heads share (AVE's temporal attention, the AVS
decoders' per-scale gates): post-norm self-attention encoders and a decoder layer whose query attends over the
memory and itself, at width 256 with 4 heads and a 1024-wide feed-forward layer; and the count of a part the
peers' scripts build (:func:`parameter_count`).

Part of molt-av (Apache-2.0). Re-implemented from the facts of ``haoyi-duan/DG-SCT`` @211fc57
(``DG-SCT/AVE/nets/models.py``: ``Encoder``, ``EncoderLayer``, ``DecoderLayer``), no code copied; used by
:mod:`molt.tasks.ave.official` and :mod:`molt.tasks.avs.official`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TEMPORAL_WIDTH", "TEMPORAL_HEADS", "TEMPORAL_FEEDFORWARD", "MemoryDecoderLayer", "TemporalEncoder",
           "TemporalDecoder", "parameter_count"]

#: width ``d`` of the peers' temporal layers
TEMPORAL_WIDTH = 256
TEMPORAL_HEADS = 4
TEMPORAL_FEEDFORWARD = 1024


class MemoryDecoderLayer(nn.Module):
    """Post-norm decoder layer of the peers: the query ``(B, T, d)`` attends over ``[memory, query]`` along time,
    residual + LayerNorm, ReLU FFN, residual + LayerNorm."""

    def __init__(self, dim: int = TEMPORAL_WIDTH, heads: int = TEMPORAL_HEADS,
                 feedforward: int = TEMPORAL_FEEDFORWARD, dropout: float = 0.1) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, feedforward)
        self.linear2 = nn.Linear(feedforward, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        keys = torch.cat([memory, query], dim=1)
        query = self.norm1(query + self.dropout1(self.attention(query, keys, keys, need_weights=False)[0]))
        update = self.linear2(self.dropout(F.relu(self.linear1(query))))
        return self.norm2(query + self.dropout2(update))


class TemporalEncoder(nn.Module):
    """Linear to ``d``, then two post-norm self-attention layers over the ``T`` segments:
    ``(B, T, D_in) -> (B, T, d)``."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(in_dim, TEMPORAL_WIDTH)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(TEMPORAL_WIDTH, TEMPORAL_HEADS, dim_feedforward=TEMPORAL_FEEDFORWARD,
                                       dropout=0.1, activation="relu", batch_first=True, norm_first=False)
            for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        for layer in self.layers:
            x = layer(x)
        return x


class TemporalDecoder(nn.Module):
    """Linear to ``d``, then one :class:`MemoryDecoderLayer`: ``(B, T, D_in), memory (B, T, d) -> (B, T, d)``."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(in_dim, TEMPORAL_WIDTH)
        self.layer = MemoryDecoderLayer()

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return self.layer(self.project(query), memory)


def parameter_count(module: nn.Module) -> int:
    """All parameters of ``module``, trainable or not (what the peers' scripts count of a part they build)."""
    return sum(parameter.numel() for parameter in module.parameters())
