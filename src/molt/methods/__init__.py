"""Methods that turn frozen backbone taps into fused audio and visual tokens.

MoLT (Rho et al., "MoLT: Mixture of Layer-Wise Tokens for Efficient Audio-Visual Learning") is built from one small
module per idea: token distillation (eq. 2), uni-/cross-modal distillation adapters (eqs. 1, 3), the router
(eqs. 4-5), the Token Fusion Module (eqs. 6-7) and Token Orthogonality Regularization (eq. 8).
"""
from __future__ import annotations

from .base import (MODALITIES, Method, MethodConfig, MethodModel, MethodOutput, TapMethodConfig, TapReadingModel,
                   count_parameters, format_parameter_count, print_trainable_parameters)
from .distillation_adapters import CrossModalDistillationAdapter, LayerCentricDistillation, UniModalDistillationAdapter
# the methods register in import order, which method_names() keeps: molt, mettle, lavish, dgsct, avmoe
from .molt import FeatureDistillationModule, MoLT, MoLTConfig, build_molt, build_molt_method
from .mettle import Mettle, MettleConfig, build_mettle_method
from .lavish import LAVISH_TASK_SETTINGS, Lavish, LavishAdapter, LavishConfig
from .dgsct import DGSCT, DGSCT_TASK_SETTINGS, DGSCTAdapter, DGSCTConfig, DualGuidedAttention
from .avmoe import AVMOE_TASK_SETTINGS, AVMoE, AVMoEAdapter, AVMoEConfig, UniModalExpert, load_balance_loss
from .inblock import (AdapterPosition, ConvBottleneck, InBlockMethod, InBlockModel, LatentTokenAdapter, TokenBridge,
                      adapter_positions, latent_token_attention, walk_blocks)
from .orthogonality import token_cosine_similarity, token_orthogonality_loss
from .registry import MethodSpec, build_method, get_method, method_names, register_method
from .router import Router, mix_experts
from .token_distillation import TokenAttention, TokenDistillation
from .token_fusion import FUSION_MODES, TokenFusion

__all__ = [
    "MethodConfig", "TapMethodConfig", "MethodOutput", "Method", "MethodModel", "TapReadingModel",
    "MoLTConfig", "MoLT", "FeatureDistillationModule", "build_molt",
    "build_molt_method", "build_method", "MODALITIES", "MethodSpec", "register_method", "get_method", "method_names",
    "TokenAttention", "TokenDistillation", "UniModalDistillationAdapter", "CrossModalDistillationAdapter",
    "Router", "mix_experts", "TokenFusion", "FUSION_MODES", "token_orthogonality_loss", "token_cosine_similarity",
    "count_parameters", "format_parameter_count", "print_trainable_parameters",
    "MettleConfig", "Mettle", "LayerCentricDistillation", "build_mettle_method",
    "LavishConfig", "Lavish", "LavishAdapter", "LAVISH_TASK_SETTINGS",
    "DGSCTConfig", "DGSCT", "DGSCTAdapter", "DualGuidedAttention", "DGSCT_TASK_SETTINGS",
    "AVMoEConfig", "AVMoE", "AVMoEAdapter", "UniModalExpert", "AVMOE_TASK_SETTINGS", "load_balance_loss",
    "AdapterPosition", "adapter_positions", "TokenBridge", "latent_token_attention", "ConvBottleneck",
    "LatentTokenAdapter", "InBlockMethod", "InBlockModel", "walk_blocks",
]
