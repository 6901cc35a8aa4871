"""Frozen Swin Transformer V2 (timm) with per-block taps.

Swin Transformer V2: Scaling Up Capacity and Resolution, Liu et al., CVPR 2022 (https://arxiv.org/abs/2111.09883).
The model itself comes from timm (Apache-2.0); this module only walks its blocks one by one.

timm (>= 0.9) applies a stage's patch merging at the *start* of the stage and keeps tokens in NHWC layout, so
block ``i`` here is "the stage's downsample (if ``i`` opens a stage) followed by the block". Blocks are numbered
across stages: Swin-V2-L (depths 2, 2, 18, 2) has 24 blocks; at 192x192 input its token grids are 48x48x192,
24x24x384, 12x12x768 and 6x6x1536.

Weights: ``pretrained=True`` loads the timm hub weights (online); ``weights=PATH`` loads a local file through
timm's own checkpoint filter (``pretrained_cfg_overlay=dict(file=PATH)``), so original Microsoft checkpoints and
timm checkpoints both work. Neither ever happens in tests.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
import torch.nn.functional as F

from .base import TapBackbone, error_gist

__all__ = ["SwinV2Backbone", "SwinV2Preset", "SWIN_V2_PRESETS", "build_swin_v2", "file_sha256"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwinV2Preset:
    """A timm model name plus constructor overrides."""

    model_name: str
    overrides: dict[str, Any] = field(default_factory=dict)


SWIN_V2_PRESETS: dict[str, SwinV2Preset] = {
    # The paper's visual backbone (Swin-V2-L, ImageNet-22k, 192x192, window 12).
    "swinv2_large_window12_192": SwinV2Preset("swinv2_large_window12_192.ms_in22k"),
    # A few hundred thousand parameters, 64x64 input, 8 blocks (2 per stage) so that early / mid / late
    # selections all exist. Random weights: for tests and the CPU demo.
    "swinv2_tiny_test": SwinV2Preset(
        "swinv2_tiny_window8_256",
        dict(img_size=64, embed_dim=24, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4), window_size=4),
    ),
}


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (identifies the weights an adapter was trained on)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


class SwinV2Backbone(TapBackbone):
    """Frozen timm Swin-V2 exposing every block's output as ``(B, N, D)`` tokens.

    Args:
        model_name: a preset of :data:`SWIN_V2_PRESETS` or any timm Swin-V2 name (``name.tag`` allowed).
        pretrained: load the timm hub weights for ``model_name`` (needs network on first use).
        weights: local checkpoint file (timm or original format); implies pretrained loading from that file.
        **overrides: timm constructor keyword overrides (``img_size``, ``depths``, ...).

    Input of :meth:`embed`: float images ``(B, 3, H, W)`` in ``[0, 1]`` at the model's input size; they are
    normalised with the model's mean and std. :meth:`preprocess` turns uint8 frames of any size into that.
    """

    def __init__(
        self,
        model_name: str = "swinv2_large_window12_192",
        *,
        pretrained: bool = False,
        weights: str | os.PathLike | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        preset = SWIN_V2_PRESETS.get(model_name)
        timm_name = preset.model_name if preset else model_name
        kwargs = {**(preset.overrides if preset else {}), **overrides}
        if weights is not None:
            weights = os.fspath(weights)
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"visual backbone weights not found: {weights} "
                                        f"(pass a timm or original Swin-V2 checkpoint file)")
            kwargs["pretrained_cfg_overlay"] = dict(file=weights)
            pretrained = True
        self.name = model_name
        self.timm_name = timm_name
        self.weights_path = weights
        self.pretrained = pretrained
        try:
            self.model = timm.create_model(timm_name, pretrained=pretrained, num_classes=0, **kwargs)
        except (KeyError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:
            if weights is None:
                raise
            raise ValueError(f"{weights}: not a readable {timm_name} checkpoint ({type(error).__name__}: "
                             f"{error_gist(error)}); pass a timm or original Swin-V2 checkpoint file") from None
        if not pretrained:
            self._init_random_post_norms()
        cfg = self.model.pretrained_cfg
        self.input_size = tuple(self.model.patch_embed.img_size)
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1),
                             persistent=False)
        self._block_index: list[tuple[int, int]] = []
        self.block_dims, self.block_tokens = [], []
        for stage_index, (stage, info) in enumerate(zip(self.model.layers, self.model.feature_info)):
            height, width = stage.output_resolution
            for block_index, _ in enumerate(stage.blocks):
                self._block_index.append((stage_index, block_index))
                self.block_dims.append(info["num_chs"])
                self.block_tokens.append(height * width)
        self.freeze()

    def _init_random_post_norms(self) -> None:
        """timm zero-initialises Swin-V2's residual post-norm scales (a trick for training from scratch), which
        makes every block of a *random* frozen model return its input. Random-weight backbones (tests, the CPU
        demo) use unit scales instead, so that their blocks really transform the tokens. Loaded weights are
        never touched."""
        with torch.no_grad():
            for stage in self.model.layers:
                for block in stage.blocks:
                    block.norm1.weight.fill_(1.0)
                    block.norm2.weight.fill_(1.0)

    @property
    def tag(self) -> str:
        """timm pretrained tag (e.g. ``ms_in22k``), empty for random weights."""
        return (self.model.pretrained_cfg.get("tag") or "") if self.pretrained else ""

    def weights_hash(self) -> str | None:
        """SHA-256 of the local weights file, if one was given."""
        return file_sha256(self.weights_path) if self.weights_path else None

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float frames ``(B, 3, H, W)`` of any size -> float ``(B, 3, *input_size)`` in [0, 1]."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected frames of shape (B, 3, H, W), got {tuple(frames.shape)}")
        if frames.dtype == torch.uint8:
            frames = frames.float() / 255.0
        if tuple(frames.shape[-2:]) != self.input_size:
            frames = F.interpolate(frames.float(), size=self.input_size, mode="bicubic", align_corners=False,
                                   antialias=True).clamp_(0.0, 1.0)
        return frames

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images in [0, 1] -> patch tokens ``(B, H/4, W/4, C)``."""
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"{self.name} expects images of shape (B, 3, {self.input_size[0]}, {self.input_size[1]}), "
                             f"got {tuple(x.shape)}; use .preprocess(frames) to resize")
        if not torch.is_floating_point(x):
            raise ValueError(f"{self.name} expects float images in [0, 1], got dtype {x.dtype}; use .preprocess()")
        return self.embed_normalized((x - self.mean) / self.std)

    def embed_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens of an image that is already normalised (no ImageNet mean / std applied)."""
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"{self.name} expects images of shape (B, 3, {self.input_size[0]}, {self.input_size[1]}), "
                             f"got {tuple(x.shape)}")
        return self.model.patch_embed(x)

    def run_block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        stage, block_index = self._block(index)
        return stage.blocks[block_index](self.enter_block(index, tokens))

    def to_sequence(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.flatten(1, 2)

    def final_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """timm's LayerNorm after the last stage (``model.norm``, frozen) on ``(B, N, D)`` tokens."""
        return self.model.norm(tokens)

    def _block(self, index: int):
        stage_index, block_index = self._block_index[index]
        return self.model.layers[stage_index], block_index

    def enter_block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        stage, block_index = self._block(index)
        return stage.downsample(tokens) if block_index == 0 else tokens

    def attention_sublayer(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """Swin-V2 post-norm residual: ``x + norm1(attention(x))`` on NHWC tokens."""
        stage, block_index = self._block(index)
        block = stage.blocks[block_index]
        return tokens + block.drop_path1(block.norm1(block._attn(tokens)))

    def mlp_sublayer(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """Swin-V2 post-norm residual: ``x + norm2(mlp(x))`` on NHWC tokens."""
        stage, block_index = self._block(index)
        block = stage.blocks[block_index]
        return tokens + block.drop_path2(block.norm2(block.mlp(tokens)))


def build_swin_v2(name: str = "swinv2_large_window12_192", weights: str | os.PathLike | None = None,
                  pretrained: bool = False, **overrides: Any) -> SwinV2Backbone:
    """Entry point: a frozen Swin-V2 backbone from a preset or timm name, optionally with local weights."""
    return SwinV2Backbone(name, pretrained=pretrained, weights=weights, **overrides)
