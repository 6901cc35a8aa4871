"""Frozen backbones with per-block taps: our Swin-V2 (timm) and HTS-AT, the shared-Swin audio branch, any timm image
model and any Hugging Face audio encoder; :mod:`.registry` names them and builds a (visual, audio) pair."""
from __future__ import annotations

from .base import TapBackbone
from .htsat import HTSATBackbone, HTSATConfig, build_htsat, load_htsat_checkpoint
from .registry import (BACKBONE_PAIRS, RANDOM_WEIGHTS, BackboneName, backbone_label, backbone_sides, build_backbone,
                       build_backbones, describe_backbone_names, parse_backbone_name)
from .shared import SpectrogramSwin
from .swin_v2 import SWIN_V2_PRESETS, SwinV2Backbone, build_swin_v2
from .taps import resolve_blocks

__all__ = [
    "TapBackbone", "SwinV2Backbone", "HTSATBackbone", "HTSATConfig", "SpectrogramSwin", "SWIN_V2_PRESETS",
    "build_swin_v2", "build_htsat", "load_htsat_checkpoint", "build_backbone", "build_backbones", "resolve_blocks",
    "BACKBONE_PAIRS", "RANDOM_WEIGHTS", "BackboneName", "backbone_label", "backbone_sides", "describe_backbone_names",
    "parse_backbone_name",
]
