"""Methods that turn frozen backbone taps into fused audio and visual tokens.

MoLT (Rho et al., "MoLT: Mixture of Layer-Wise Tokens for Efficient Audio-Visual Learning") is built from one small
module per idea: token distillation (eq. 2), uni-/cross-modal distillation adapters (eqs. 1, 3), the router
(eqs. 4-5), the Token Fusion Module (eqs. 6-7) and Token Orthogonality Regularization (eq. 8).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .adapters_io import (ADAPTER_CONFIG_NAME, ADAPTER_FORMAT_VERSION, ADAPTER_WEIGHTS_NAME, adapter_state_dict,
                          describe_backbones, load_adapters, read_adapter_config, save_adapters)
from .distillation_adapters import CrossModalDistillationAdapter, UniModalDistillationAdapter
from .lavish import Lavish, LavishAdapter, LavishConfig, LavishModel, build_lavish_method, pair_blocks
from .mettle import LayerCentricDistillation, Mettle, MettleConfig, build_mettle_method
from .molt import (MODALITIES, FeatureDistillationModule, MethodOutput, MoLT, MoLTConfig, MoLTModel, build_molt,
                   build_molt_method, count_parameters, format_parameter_count, print_trainable_parameters)
from .orthogonality import token_cosine_similarity, token_orthogonality_loss
from .router import Router, mix_experts
from .token_distillation import TokenAttention, TokenDistillation
from .token_fusion import FUSION_MODES, TokenFusion

__all__ = [
    "MethodOutput", "MoLTConfig", "MoLT", "MoLTModel", "FeatureDistillationModule", "build_molt",
    "build_molt_method", "build_method", "METHODS", "MODALITIES",
    "TokenAttention", "TokenDistillation", "UniModalDistillationAdapter", "CrossModalDistillationAdapter",
    "Router", "mix_experts", "TokenFusion", "FUSION_MODES", "token_orthogonality_loss", "token_cosine_similarity",
    "count_parameters", "format_parameter_count", "print_trainable_parameters",
    "save_adapters", "load_adapters", "read_adapter_config", "adapter_state_dict", "describe_backbones",
    "ADAPTER_WEIGHTS_NAME", "ADAPTER_CONFIG_NAME", "ADAPTER_FORMAT_VERSION",
    "MettleConfig", "Mettle", "LayerCentricDistillation", "build_mettle_method",
    "LavishConfig", "Lavish", "LavishAdapter", "LavishModel", "build_lavish_method", "pair_blocks",
    "features_class",
]

METHODS = ("molt", "mettle", "lavish")


def build_method(name: str, method_config: dict[str, Any] | None, visual: nn.Module | None,
                 audio: nn.Module | None) -> tuple[nn.Module, list[int], list[int]]:
    """A method's trainable side modules for these backbones, with the resolved visual and audio block indices.

    ``method_config`` holds the method's hyper-parameters (the fields of :class:`MoLTConfig`,
    :class:`MettleConfig` or :class:`LavishConfig`).
    """
    if name == "molt":
        config = MoLTConfig.from_dict(dict(method_config or {}), source="method_config")
        return build_molt_method(config, visual, audio)
    if name == "mettle":
        return build_mettle_method(MettleConfig.from_dict(dict(method_config or {}), source="method_config"),
                                   visual, audio)
    if name == "lavish":
        return build_lavish_method(LavishConfig.from_dict(dict(method_config or {}), source="method_config"),
                                   visual, audio)
    raise ValueError(f"unknown method {name!r}: expected one of {', '.join(METHODS)}")


def features_class(name: str) -> type[nn.Module]:
    """The wrapper that runs method ``name`` on the frozen backbones: :class:`LavishModel` for ``"lavish"`` (adapters
    inside the blocks), :class:`MoLTModel` for the tap-reading methods (``"molt"``, ``"mettle"``)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: expected one of {', '.join(METHODS)}")
    return LavishModel if name == "lavish" else MoLTModel
