"""A timm image model as a frozen visual encoder (any timm name, hub or local weights).

Part of molt-av (Apache-2.0). :class:`TimmImageEncoder` wraps ``timm.create_model(name, num_classes=0)`` with the
model's own input size and normalisation, frozen; the layer analysis (``molt analyze layers --visual NAME``) reads
its blocks with forward hooks. timm is imported when an encoder is built.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TimmImageEncoder"]


class TimmImageEncoder(nn.Module):
    """Any timm image model as a frozen encoder (``molt analyze layers --visual NAME``).

    Args:
        model_name: a timm model name (``"vit_base_patch16_224"``, ``"swinv2_base_window12_192.ms_in22k"``, ...).
        pretrained: load the timm hub weights (online, first use only).
        weights: local checkpoint file, read through timm's own loader (implies pretrained loading from it).
        **overrides: timm constructor overrides (``img_size``, ``depth``, ...).

    Shapes: :meth:`preprocess` turns uint8 (or ``[0, 1]`` float) frames ``(B, 3, H, W)`` of any size into normalised
    float images ``(B, 3, *input_size)``; :meth:`forward` runs the model's ``forward_features`` (the blocks, without
    the classifier) on them and returns its features, ``(B, N, D)`` for a ViT-like model (prefix tokens included) or
    ``(B, H', W', D)`` for a Swin-like one. The parameters are frozen and the module stays in inference behaviour;
    ``input_size`` is ``(H, W)`` and ``name`` the timm name.
    """

    def __init__(self, model_name: str, *, pretrained: bool = False, weights: str | os.PathLike | None = None,
                 **overrides: Any) -> None:
        super().__init__()
        import timm

        if weights is not None:
            weights = os.fspath(weights)
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"visual weights not found: {weights} (pass a timm-loadable checkpoint)")
            overrides["pretrained_cfg_overlay"] = {"file": weights}
            pretrained = True
        self.name = model_name
        self.model = timm.create_model(model_name, pretrained=pretrained, num_classes=0, **overrides)
        cfg = self.model.pretrained_cfg
        img_size = getattr(getattr(self.model, "patch_embed", None), "img_size", None)
        self.input_size = tuple(img_size) if img_size is not None else tuple(cfg.get("input_size", (3, 224, 224))[-2:])
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1),
                             persistent=False)
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> TimmImageEncoder:
        """Frozen: always in inference behaviour."""
        return super().train(False)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 or ``[0, 1]`` frames ``(B, 3, H, W)`` -> normalised float ``(B, 3, *input_size)``."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected frames of shape (B, 3, H, W), got {tuple(frames.shape)}")
        frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
        if tuple(frames.shape[-2:]) != self.input_size:
            frames = F.interpolate(frames, size=self.input_size, mode="bicubic", align_corners=False,
                                   antialias=True).clamp_(0.0, 1.0)
        return (frames - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)
