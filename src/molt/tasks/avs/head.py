"""Audio-visual segmentation (AVSBench S4 / MS3): TPAVI + FPN head, masked BCE loss, M_J and M_F sums (the metric
functions in :mod:`.metrics`, the overlays in :mod:`.figures`).

AVSBench (Zhou et al., ECCV 2022): 5-s clips, ``T = 5`` frames (one per second); the target is the binary mask of
the *sounding* objects in each frame. S4 train annotates only the first frame; S4 val / test and MS3 all five
(``batch["mask_valid"]`` says which).

Head
----
It follows the decoder that the setups MoLT reports against use (AVSBench's ``Pred_endecoder``, reused by DG-SCT
and AVMoE): multi-scale stage features of the frozen visual backbone -> ``channels`` (256 in the paper) per scale
-> TPAVI audio-visual attention at every scale -> FPN decoder -> mask logits. Input:

* ``batch["visual_stages"]``: the frozen visual backbone's stage outputs ``[(B*T, N_s, C_s), ...]`` finest to
  coarsest (square grids; Swin-V2-L at 192 px: 48², 24², 12², 6² with 192 ... 1536 channels);
* ``audio (B*T, K_a, D)`` and ``visual (B*T, K_v, D)``: MoLT's fused tokens (the *guidance*).

Steps:

1. per stage ``s``: the sum of 3x3 convolutions with dilations ``projection_dilations`` ``C_s -> channels``
   (AVSBench's ``Classifier_Module``; paper dilations 3, 6, 12, 18);
2. ``visual_injection`` (MoLT-specific, on by default with ``modalities="both"``): the fused visual tokens,
   attention-pooled over ``K`` and projected (zero-initialised) to ``channels``, are added to every position of
   every scale;
3. TPAVI at the scales in ``tpavi_stages`` (all four in the paper), ``dot`` mode, exactly the block of AVSBench:
   ``theta`` (1x1 conv) of the visual map as queries over all ``T*H*W`` positions of the clip, ``phi`` of the
   guidance vector of each segment (broadcast over ``H*W``) as keys, ``g`` (1x1 conv) of the visual map as values,
   affinities divided by ``T*H*W``, output ``W_z`` (1x1 conv + BatchNorm with zero-initialised scale) added to the
   input, LayerNorm over channels. The guidance vector of a segment is the attention-pooled fused *audio* tokens
   (DG-SCT passes its adapted HTS-AT audio feature there), linearly aligned to ``channels``; with
   ``modalities="visual"`` it is the pooled fused visual tokens instead. Computed as
   ``(theta @ phi^T) @ (sum over H*W of g) / (T*H*W)``, which equals AVSBench's ``THW x THW`` product without
   building it;
4. FPN decoder: coarsest to finest, each fusion block adds a residual-conv-unit of the skip feature, applies a
   second residual conv unit and upsamples (bilinear, ``align_corners=True``) to the next scale (x2 after the
   finest); output convolutions ``channels -> channels/2`` (3x3), x2 upsampling, ``-> max(channels/8, 8)`` (3x3),
   ReLU, ``-> 1`` (1x1);
5. bilinear interpolation to the data's mask size ``M`` -> ``mask_logits (B, T, M, M)``.

Departures from AVSBench / DG-SCT: the guidance comes from MoLT's fused tokens, pooled per segment, not from
VGGish / HTS-AT features; step 2 is new; the per-scale projection width and its dilations are configurable (the
tiny preset uses 32 channels, one dilation); no audio-visual mapping (KL) regulariser in the loss; the stage
features are read from the frozen backbone rather than fine-tuned.

Loss: binary cross-entropy with logits per pixel, averaged over the pixels of the *annotated* frames only
(``mask_valid``; S4 train: frame 0, as in AVSBench's S4 training).

Metrics (pure functions in :mod:`.metrics`, accumulated as sums by :class:`AVSHead`):

* **M_J** (:func:`frame_iou`): ``(sigmoid(logit) > 0.5)`` against the ground truth, IoU = intersection /
  (union + 1e-7); a frame whose ground truth is all black scores true negatives / all pixels;
* **M_F** (:func:`f_curves`): at 255 thresholds ``linspace(0, 1 - 1e-10, 255)`` (float32) a pixel is positive when
  ``sigmoid(logit) >= threshold``; precision = TP / (positives + 1e-20), recall = TP / (GT + 1e-20),
  ``F = (1 + 0.3) P R / (0.3 P + R)`` (NaN -> 0); frames with an all-black ground truth are skipped; the score is
  the maximum over thresholds of the mean F curve (0 when no frame is left).

AVSBench computes both per *test batch* and averages the per-batch values, so its figures depend on the test
batch size (its ``test.py`` defaults to one clip per batch, DG-SCT's ``test.sh`` passes 4). :class:`AVSHead`
reports both variants, whatever the data loader's batch size:

* ``official``: consecutive clips are grouped ``metric_batch_clips`` at a time (default 1 = AVSBench's default),
  M_J / M_F of each group as AVSBench computes them for a batch, averaged over groups (a last incomplete group
  counts as one, like a last smaller batch);
* ``per_image``: dataset-wide, M_J = mean IoU over all annotated frames, M_F = max over thresholds of the F curve
  averaged over all annotated frames with an object.

``mIoU`` / ``F_score`` are the variant chosen by ``metric_variant`` (default ``official``); ``mIoU_official``,
``F_score_official``, ``mIoU_per_image`` and ``F_score_per_image`` are always reported. All values are fractions
in [0, 1] (the paper prints them x 100).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...typed_config import ranged
from ..base import HeadConfig, TaskHead, TokenPool
from .figures import plot_masks
from .metrics import METRIC_VARIANTS, f_curves, frame_iou

__all__ = ["AVSHead", "AVSHeadConfig", "TPAVI", "AVS_NUM_FRAMES", "bench_targets"]

_logger = logging.getLogger(__name__)

AVS_NUM_FRAMES = 5


# ----------------------------------------------------------------------------------------------------------------
# head

class _DilatedProjection(nn.Module):
    """Sum of 3x3 convolutions with the given dilations (AVSBench's per-stage ``Classifier_Module``)."""

    def __init__(self, in_channels: int, out_channels: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(in_channels, out_channels, 3, padding=d, dilation=d)
                                      for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([branch(x) for branch in self.branches]).sum(dim=0)


class TPAVI(nn.Module):
    """AVSBench's temporal pixel-wise audio-visual interaction block, ``dot`` mode (see the module docstring).

    Input ``x (B, C, T, H, W)`` and guidance ``(B, T, G)``; output of the shape of ``x``.
    """

    def __init__(self, channels: int, guidance_dim: int) -> None:
        super().__init__()
        inner = max(channels // 2, 1)
        self.align = nn.Linear(guidance_dim, channels)
        self.theta = nn.Conv3d(channels, inner, 1)
        self.phi = nn.Linear(channels, inner)
        self.g = nn.Conv3d(channels, inner, 1)
        self.out = nn.Sequential(nn.Conv3d(inner, channels, 1), nn.BatchNorm3d(channels))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        batch, _, frames, height, width = x.shape
        keys = self.phi(self.align(guidance))                             # (B, T, C')
        queries = self.theta(x).flatten(2).transpose(1, 2)                # (B, THW, C')
        values = self.g(x).flatten(3).sum(dim=3).transpose(1, 2)          # (B, T, C'): sum over each frame's HW
        affinity = queries @ keys.transpose(1, 2)                         # (B, THW, T)
        y = affinity @ values / (frames * height * width)                 # (B, THW, C')
        y = y.transpose(1, 2).reshape(batch, -1, frames, height, width)
        z = x + self.out(y)
        return self.norm(z.movedim(1, -1)).movedim(-1, 1)


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid (Li et al., "Exploring Plain Vision Transformer Backbones for Object
    Detection", ECCV 2022) for a single-scale backbone (a plain ViT): its one map ``(B, C, h, w)`` -> four maps at
    4x, 2x, 1x and 1/2x its resolution, with ``C/4``, ``C/2``, ``C`` and ``C`` channels (finest first), by two 2x2
    stride-2 transposed convolutions with a channel LayerNorm and GELU between them, one such convolution, the
    identity, and 2x2 max-pooling. Trainable, part of the head; the per-scale projections that follow take the
    place of ViTDet's 1x1 + 3x3 convolutions."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dims = [max(dim // 4, 1), max(dim // 2, 1), dim, dim]
        self.up4 = nn.ModuleList([nn.ConvTranspose2d(dim, self.dims[1], 2, stride=2),
                                  nn.ConvTranspose2d(self.dims[1], self.dims[0], 2, stride=2)])
        self.norm4 = nn.LayerNorm(self.dims[1])
        self.up2 = nn.ConvTranspose2d(dim, self.dims[1], 2, stride=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.up4[0](x)
        hidden = F.gelu(self.norm4(hidden.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        return [self.up4[1](hidden), self.up2(x), x, F.max_pool2d(x, 2, ceil_mode=True)]


class _ResidualConvUnit(nn.Module):
    """``r + conv2(relu(conv1(relu(x))))`` with ``r = x``, or ``r = relu(x)`` with ``relu_residual`` (what the
    peers' AVS decoders compute: their in-place ReLU overwrites the input before it is added back)."""

    def __init__(self, channels: int, *, relu_residual: bool = False) -> None:
        super().__init__()
        self.relu_residual = relu_residual
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(x)
        return (activated if self.relu_residual else x) + self.conv2(F.relu(self.conv1(activated)))


class _FusionBlock(nn.Module):
    """FPN step: ``x (+ RCU(skip))`` -> RCU -> bilinear resize (``align_corners=True``) to ``size``; ``skip=False``
    builds no skip unit (the coarsest step has no skip input)."""

    def __init__(self, channels: int, *, skip: bool = True, relu_residual: bool = False) -> None:
        super().__init__()
        self.skip_unit = _ResidualConvUnit(channels, relu_residual=relu_residual) if skip else None
        self.unit = _ResidualConvUnit(channels, relu_residual=relu_residual)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        if skip is not None:
            if self.skip_unit is None:
                raise ValueError("this fusion block was built without a skip unit")
            x = x + self.skip_unit(skip)
        return F.interpolate(self.unit(x), size=size, mode="bilinear", align_corners=True)


def _metric_names(prefix: str) -> tuple[str, str, str, str]:
    return f"{prefix}_iou_sum", f"{prefix}_frames", f"{prefix}_f_curve_sum", f"{prefix}_f_frames"


@dataclass
class AVSHeadConfig(HeadConfig):
    """Options of the AVSBench head (the ``head:`` section).

    Attributes:
        modalities: which fused tokens guide TPAVI (audio for both and audio) and whether the fused visual tokens
            are injected (both, visual).
        channels: width of the decoder (paper: 256).
        tpavi_stages: indices of the stages (0 = finest) that get a TPAVI block.
        projection_dilations: dilations of the per-stage projection (paper: 3, 6, 12, 18).
        visual_injection: add the pooled fused visual tokens to every scale (only when visual tokens are read).
        num_segments: frames per clip ``T`` when the batch does not say (AVSBench: 5).
        metric_variant: ``"official"`` or ``"per_image"``: which variant ``mIoU`` / ``F_score`` report.
        metric_batch_clips: clips per AVSBench test batch in the ``official`` variant (AVSBench default: 1).
    """

    channels: int = ranged(256, at_least=1, meaning="width of the decoder")
    tpavi_stages: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    projection_dilations: list[int] = field(default_factory=lambda: [3, 6, 12, 18])
    visual_injection: bool = True
    num_segments: int = ranged(AVS_NUM_FRAMES, at_least=1, meaning="frames per clip")
    metric_variant: str = "official"
    metric_batch_clips: int = ranged(1, at_least=1, meaning="clips per test batch of the official metric")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tpavi_stages = [int(stage) for stage in self.tpavi_stages]
        self.projection_dilations = [int(dilation) for dilation in self.projection_dilations]
        if len(set(self.tpavi_stages)) != len(self.tpavi_stages) or any(s < 0 for s in self.tpavi_stages):
            raise ValueError(f"tpavi_stages must be distinct stage indices (0 = finest), got {self.tpavi_stages}")
        if not self.projection_dilations or min(self.projection_dilations) < 1:
            raise ValueError(f"projection_dilations must be positive, got {self.projection_dilations}")
        if self.metric_variant not in METRIC_VARIANTS:
            raise ValueError(f"metric_variant must be one of {', '.join(METRIC_VARIANTS)}, got "
                             f"{self.metric_variant!r}")


class AVSHead(TaskHead):
    """AVSBench head (multi-scale stage features + TPAVI + FPN), masked BCE loss, M_J and M_F.

    See the module docstring for the architecture, the loss and the metrics.

    Args:
        config: the head's options (:class:`AVSHeadConfig`; default: its defaults).
        dim: width ``D`` of the method's fused tokens.
        mask_size: size ``M`` of the ground-truth masks (the prepared data's ``mask_size``).
        stage_dims: channels ``C_s`` of the visual backbone's stage outputs, finest first (Swin-V2-L: 192, 384,
            768, 1536; the tiny test Swin: 24, 48, 96, 192).
        setting: ``"s4"`` or ``"ms3"`` (kept for reports; the data's ``mask_valid`` decides the loss).

    Outputs of :meth:`forward`: ``mask_logits (B, T, M, M)``.
    """

    name = "avs"
    needs_visual_stages = True
    config_class = AVSHeadConfig

    def __init__(self, config: AVSHeadConfig | None = None, *, dim: int, mask_size: int, stage_dims: Sequence[int],
                 setting: str = "s4") -> None:
        super().__init__()
        config = config or AVSHeadConfig()
        stage_dims = [int(c) for c in stage_dims]
        if dim <= 0 or mask_size <= 0:
            raise ValueError(f"dim and mask_size must be positive, got {dim}, {mask_size}")
        if not stage_dims or min(stage_dims) <= 0:
            raise ValueError(f"stage_dims must list the positive channel widths of the visual backbone's stages "
                             f"(finest first), got {stage_dims}")
        # a single-scale backbone (plain ViT) gets four scales from the simple feature pyramid
        self.pyramid = SimpleFeaturePyramid(stage_dims[0]) if len(stage_dims) == 1 else None
        level_dims = self.pyramid.dims if self.pyramid is not None else stage_dims
        if max(config.tpavi_stages, default=0) >= len(level_dims):
            raise ValueError(f"tpavi_stages must be distinct stage indices in [0, {len(level_dims) - 1}], "
                             f"got {config.tpavi_stages}")
        self._keep_settings(config, dim=dim, mask_size=mask_size, stage_dims=stage_dims, setting=setting,
                            modalities=config.modalities)
        channels, modalities = self.channels, self.modalities
        self.guide = "visual" if modalities == "visual" else "audio"
        self.inject = config.visual_injection and modalities in ("both", "visual")

        pooled = sorted({self.guide, "visual"} if self.inject else {self.guide})
        self.pool = nn.ModuleDict({m: TokenPool(dim) for m in pooled})
        self.guide_norm = nn.LayerNorm(dim)
        self.project = nn.ModuleList(_DilatedProjection(c, channels, config.projection_dilations)
                                     for c in level_dims)
        if self.inject:
            self.injection = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, channels * len(level_dims)))
            nn.init.zeros_(self.injection[1].weight)
            nn.init.zeros_(self.injection[1].bias)
        self.tpavi = nn.ModuleDict({str(s): TPAVI(channels, dim) for s in self.tpavi_stages})
        self.fusion = nn.ModuleList(_FusionBlock(channels) for _ in level_dims)
        hidden, last = max(channels // 2, 1), max(channels // 8, 8)
        self.output_conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.output_conv2 = nn.Sequential(nn.Conv2d(hidden, last, 3, padding=1), nn.ReLU(), nn.Conv2d(last, 1, 1))
        self.reset_metrics()

    # -- forward ------------------------------------------------------------------------------------------------

    def _keep_settings(self, config: AVSHeadConfig, *, dim: int, mask_size: int, stage_dims: list[int], setting: str,
                       modalities: str) -> None:
        """The settings the loss, the metrics and the reports read, for this head and the peers' own."""
        self.config = config
        self.dim = dim
        self.mask_size = mask_size
        self.stage_dims = stage_dims
        self.setting = setting
        self.channels = config.channels
        self.modalities = modalities
        self.tpavi_stages = sorted(config.tpavi_stages)
        self.num_segments = config.num_segments
        self.metric_variant = config.metric_variant
        self.metric_batch_clips = config.metric_batch_clips

    def _clip_shape(self, rows: int, batch: Mapping[str, Any] | None) -> tuple[int, int]:
        segments = None
        for key in ("masks", "frames", "audio"):
            value = batch.get(key) if batch is not None else None
            if isinstance(value, torch.Tensor) and value.ndim >= 2:
                segments = value.shape[1]
                break
        segments = self.num_segments if segments is None else segments
        if rows % segments:
            raise ValueError(f"expected B*T rows with T = {segments} frames per clip, got {rows} rows")
        return rows // segments, segments

    def _pooled(self, modality: str, tokens: torch.Tensor | None) -> torch.Tensor:
        if tokens is None or tokens.ndim != 3 or tokens.shape[-1] != self.dim:
            shape = None if tokens is None else tuple(tokens.shape)
            raise ValueError(f"the AVS head (modalities={self.modalities!r}) needs {modality} tokens "
                             f"(B*T, K, {self.dim}), got {shape}")
        return self.pool[modality](tokens)

    def _check_stages(self, stages: Any, rows: int) -> list[torch.Tensor]:
        """``batch["visual_stages"]``, checked: one ``(B*T, N_s, C_s)`` tensor per width of :attr:`stage_dims`, each
        ``N_s`` a square grid."""
        if not isinstance(stages, (list, tuple)) or len(stages) != len(self.stage_dims):
            got = f"{len(stages)} stage(s)" if isinstance(stages, (list, tuple)) else repr(type(stages).__name__)
            raise ValueError(f"the {type(self).__name__} needs batch['visual_stages']: a list of "
                             f"{len(self.stage_dims)} stage outputs (B*T, N_s, C_s) of the visual backbone, got {got}")
        for index, (stage, channels) in enumerate(zip(stages, self.stage_dims)):
            side = math.isqrt(stage.shape[1]) if stage.ndim == 3 else 0
            if stage.ndim != 3 or stage.shape[0] != rows or stage.shape[2] != channels or \
                    side * side != stage.shape[1]:
                raise ValueError(f"visual stage {index}: expected ({rows}, N, {channels}) with a square N, got "
                                 f"{tuple(stage.shape)} (check the head's stage_dims against the backbone)")
        return list(stages)

    def _stage_maps(self, stages: Any, rows: int) -> list[torch.Tensor]:
        """The checked stages as maps ``(B*T, C_s, H_s, W_s)``."""
        return [stage.transpose(1, 2).reshape(rows, stage.shape[2], math.isqrt(stage.shape[1]),
                                              math.isqrt(stage.shape[1]))
                for stage in self._check_stages(stages, rows)]

    def forward(self, visual: torch.Tensor | None, audio: torch.Tensor | None,
                batch: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        """Mask logits for fused tokens ``(B*T, K, D)`` and ``batch["visual_stages"]``.

        Returns:
            ``mask_logits (B, T, M, M)``.
        """
        tokens = {"visual": visual, "audio": audio}
        guidance = self.guide_norm(self._pooled(self.guide, tokens[self.guide]))          # (B*T, D)
        rows = guidance.shape[0]
        clips, segments = self._clip_shape(rows, batch)
        maps = self._stage_maps(None if batch is None else batch.get("visual_stages"), rows)
        if self.pyramid is not None:
            maps = self.pyramid(maps[0].to(guidance.dtype))
        maps = [project(m.to(guidance.dtype)) for project, m in zip(self.project, maps)]
        if self.inject:
            offsets = self.injection(self._pooled("visual", visual)).reshape(rows, len(maps), self.channels)
            maps = [m + offsets[:, i, :, None, None] for i, m in enumerate(maps)]
        guidance = guidance.reshape(clips, segments, -1)
        for stage in self.tpavi_stages:
            m = maps[stage]
            clip_map = m.reshape(clips, segments, *m.shape[1:]).transpose(1, 2)            # (B, C, T, H, W)
            clip_map = self.tpavi[str(stage)](clip_map, guidance)
            maps[stage] = clip_map.transpose(1, 2).reshape(m.shape)
        x = None
        for index in reversed(range(len(maps))):
            target = maps[index - 1].shape[-2:] if index > 0 else tuple(2 * s for s in maps[0].shape[-2:])
            x = self.fusion[index](maps[index] if x is None else x, None if x is None else maps[index], target)
        x = F.interpolate(self.output_conv1(x), scale_factor=2, mode="bilinear", align_corners=True)
        logits = self.output_conv2(x)
        logits = F.interpolate(logits, size=(self.mask_size, self.mask_size), mode="bilinear", align_corners=False)
        return {"mask_logits": logits.reshape(clips, segments, self.mask_size, self.mask_size)}

    # -- loss and predictions -----------------------------------------------------------------------------------

    def _targets(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = outputs["mask_logits"]
        masks = torch.as_tensor(batch["masks"]).to(logits.device, logits.dtype)
        if masks.shape != logits.shape:
            raise ValueError(f"masks {tuple(masks.shape)} do not match the predicted mask logits "
                             f"{tuple(logits.shape)} (check mask_size)")
        valid = batch.get("mask_valid")
        valid = torch.ones(logits.shape[:2]) if valid is None else torch.as_tensor(valid)
        valid = valid.to(logits.device, logits.dtype)
        if valid.shape != logits.shape[:2]:
            raise ValueError(f"mask_valid {tuple(valid.shape)} must be (B, T) = {tuple(logits.shape[:2])}")
        return logits, masks, valid

    def loss(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> torch.Tensor:
        """Per-pixel BCE with logits, averaged over the pixels of the annotated frames (``mask_valid``)."""
        logits, masks, valid = self._targets(outputs, batch)
        per_frame = F.binary_cross_entropy_with_logits(logits, masks, reduction="none").mean(dim=(2, 3))
        count = valid.sum()
        if float(count) == 0:
            return logits.sum() * 0.0
        return (per_frame * valid).sum() / count

    def predict(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Binary masks ``(B, T, M, M)`` uint8: ``sigmoid(logit) > 0.5``."""
        return (torch.sigmoid(outputs["mask_logits"]) > 0.5).to(torch.uint8)

    # -- metrics ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def update_metrics(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> None:
        logits, masks, valid = self._targets(outputs, batch)
        logits, masks, valid = logits.detach().float().cpu(), masks.cpu(), valid.cpu() > 0
        clips, segments = logits.shape[:2]
        flat_logits, flat_masks = logits.flatten(0, 1), masks.flatten(0, 1)
        ious = frame_iou(flat_logits, flat_masks).reshape(clips, segments)
        curves, has_object = f_curves(flat_logits, flat_masks)
        curves = curves.reshape(clips, segments, -1)
        scored = valid & has_object.reshape(clips, segments)
        iou_sums = (ious * valid).sum(dim=1)
        frames = valid.sum(dim=1).double()
        f_sums = (curves * scored.unsqueeze(-1)).sum(dim=1)
        f_frames = scored.sum(dim=1).double()
        self.accumulate("per_image_iou_sum", iou_sums.sum())
        self.accumulate("per_image_frames", frames.sum())
        self.accumulate("per_image_f_curve_sum", f_sums.sum(dim=0))
        self.accumulate("per_image_f_frames", f_frames.sum())
        pending = _metric_names("pending")
        for clip in range(clips):
            if frames[clip] == 0:
                continue
            for name, value in zip(pending, (iou_sums[clip], frames[clip], f_sums[clip], f_frames[clip])):
                self.accumulate(name, value)
            self.accumulate("pending_clips", 1.0)
            if float(self.metric_state["pending_clips"]) >= self.metric_batch_clips:
                self._close_group()

    def _group_scores(self, state: Mapping[str, torch.Tensor]) -> tuple[float, float]:
        iou_sum, frames, f_sum, f_frames = (state[name] for name in _metric_names("pending"))
        f_score = float((f_sum / f_frames).max()) if float(f_frames) > 0 else 0.0
        return float(iou_sum / frames), f_score

    def _close_group(self) -> None:
        iou, f_score = self._group_scores(self.metric_state)
        self.accumulate("official_iou_sum", iou)
        self.accumulate("official_f_sum", f_score)
        self.accumulate("official_groups", 1.0)
        for name in _metric_names("pending"):
            self.metric_state[name] = torch.zeros_like(self.metric_state[name])
        self.metric_state["pending_clips"] = torch.zeros((), dtype=torch.float64)

    def compute_metrics(self) -> dict[str, float]:
        """``mIoU`` and ``F_score`` (variant ``metric_variant``) and both variants by name; ``nan`` when empty."""
        state = self.metric_state
        if float(state.get("per_image_frames", 0.0)) == 0:
            _logger.warning("AVS metrics computed before any annotated frame was added; returning nan")
            return {"mIoU": float("nan"), "F_score": float("nan")}
        iou_sum = float(state.get("official_iou_sum", 0.0))
        f_sum = float(state.get("official_f_sum", 0.0))
        groups = float(state.get("official_groups", 0.0))
        if float(state.get("pending_frames", 0.0)) > 0:   # a last incomplete group counts like a smaller batch
            iou, f_score = self._group_scores(state)
            iou_sum, f_sum, groups = iou_sum + iou, f_sum + f_score, groups + 1
        f_frames = float(state["per_image_f_frames"])
        metrics = {
            "mIoU_official": iou_sum / groups, "F_score_official": f_sum / groups,
            "mIoU_per_image": float(state["per_image_iou_sum"] / state["per_image_frames"]),
            "F_score_per_image": float((state["per_image_f_curve_sum"] / f_frames).max()) if f_frames else 0.0,
        }
        metrics["mIoU"] = metrics[f"mIoU_{self.metric_variant}"]
        metrics["F_score"] = metrics[f"F_score_{self.metric_variant}"]
        return metrics

    def save_figures(self, samples: list[tuple[dict[str, torch.Tensor], dict[str, Any]]], out_dir: Path,
                     task_options: Mapping[str, Any]) -> list[Path]:
        """``masks.png``: frames of the first clips (grey without frames in the batch) with true (green) and
        predicted (red) masks overlaid."""
        frames, predicted, truth, ids = [], [], [], []
        for outputs, batch in samples:
            masks = torch.as_tensor(batch["masks"]).cpu()
            if "frames" in batch:
                frames.append(torch.as_tensor(batch["frames"]).cpu())
            else:   # batches of cached taps carry no frames: draw the masks on grey
                frames.append(torch.full((*masks.shape[:2], 3, *masks.shape[2:]), 128, dtype=torch.uint8))
            predicted.append(self.predict(outputs).cpu())
            truth.append(masks)
            ids.extend(str(v) for v in batch.get("video_id", [f"clip {len(ids) + i}" for i in
                                                               range(frames[-1].shape[0])]))
        if not frames:
            return []
        valid = [torch.as_tensor(b["mask_valid"]).cpu() if "mask_valid" in b else None for _, b in samples]
        valid_all = None if any(v is None for v in valid) else torch.cat(valid)
        return [plot_masks(torch.cat(frames), torch.cat(predicted), torch.cat(truth), ids,
                           Path(out_dir) / "masks.png", valid=valid_all)]

    def extra_repr(self) -> str:
        return (f"setting={self.setting!r}, mask_size={self.mask_size}, stage_dims={self.stage_dims}, "
                f"channels={self.channels}, modalities={self.modalities!r}, tpavi_stages={self.tpavi_stages}")


def bench_targets(batch_clips: int, num_segments: int, task_options: dict[str, Any],
                  generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random binary masks ``(B, T, S, S)`` for one benchmark step; S4 trains on the first frame only
    (``mask_valid``), MS3 on all."""
    size = int(task_options.get("mask_size", 224))
    masks = (torch.rand(batch_clips, num_segments, size, size, generator=generator) > 0.5).float()
    valid = torch.ones(batch_clips, num_segments)
    if task_options.get("setting", "s4") == "s4":
        valid[:, 1:] = 0
    return {"masks": masks, "mask_valid": valid}
