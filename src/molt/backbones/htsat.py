"""HTS-AT audio backbone with per-block taps, compatible with the official checkpoints.

HTS-AT: A Hierarchical Token-Semantic Audio Transformer for Sound Classification and Detection, Chen et al.,
ICASSP 2022 (https://arxiv.org/abs/2202.00874); official code and checkpoints: RetroCirce/HTS-Audio-Transformer.
The transformer is a Swin Transformer V1 (Liu et al., ICCV 2021, https://arxiv.org/abs/2103.14030). Written from
the papers and the official model's documented behaviour; parameter and buffer names follow the official
``HTSAT_Swin_Transformer`` exactly, so that ``HTSAT_AudioSet_Saved_*.ckpt`` loads strictly.

Pipeline (AudioSet config, one 10-s clip at 32 kHz = 320,000 samples):

1. log-mel front end (:mod:`.audio_frontend`): 1001 frames x 64 mel bins, in dB;
2. ``bn0``: BatchNorm over the 64 mel bins (always with its running statistics: the backbone stays in eval
   mode, so SpecAugment and mixup, which the official model applies only in training, are omitted);
3. ``reshape_wav2img``: bicubic interpolation (``align_corners=True``) of the time axis to
   ``spec_size * freq_ratio = 1024`` frames, then the time axis is cut into ``freq_ratio = 4`` consecutive
   bands of 256 frames stacked along the frequency axis: image ``(B, 1, 256, 256)`` whose row
   ``band * 64 + mel`` and column ``t`` hold frame ``band * 256 + t``;
4. patch embedding (4x4, stride 4) -> 64x64 tokens of width 96, four Swin stages (depths 2, 2, 6, 2) with
   patch merging at the *end* of stages 0-2: token grids 64²x96, 32²x192, 16²x384, 8²x768.

Tokens are ``(B, N, C)`` with ``N = H * W`` in row-major order (H: frequency rows of the folded image,
W: time within a band). Blocks are numbered across stages (12 for the official config); the first block of
stage ``s > 0`` applies stage ``s - 1``'s patch merging before its attention, so that block ``i``'s output has
the width and grid of its own stage.

Audio per 1-s segment (DG-SCT, AVMoE): a segment of ``sample_rate`` samples is tiled by repetition to
``clip_seconds`` (10 for AVE / AVQA, 5 for AVS) before the front end.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pickle
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .audio_frontend import LogMelFilterBank, Spectrogram
from .base import TapBackbone, error_gist
from .swin_v2 import file_sha256

__all__ = [
    "HTSATConfig",
    "HTSAT_PRESETS",
    "HTSATBackbone",
    "build_htsat",
    "load_htsat_checkpoint",
    "read_htsat_state_dict",
    "fold_spectrogram",
    "OFFICIAL_PREFIX",
]

_logger = logging.getLogger(__name__)

OFFICIAL_PREFIX = "sed_model."
_MASK_VALUE = -100.0  # value of masked-out pairs in shifted-window attention, as in Swin V1 / HTS-AT


@dataclass(frozen=True)
class HTSATConfig:
    """Hyper-parameters of HTS-AT (defaults: the official AudioSet model).

    Attributes:
        name: preset name, reported in error messages and cache keys.
        sample_rate: waveform sample rate (Hz).
        n_fft: FFT size and Hann window length.
        hop_length: STFT hop (samples).
        n_mels, fmin, fmax: mel filterbank.
        spec_size: side of the square spectrogram image fed to the Swin transformer.
        patch_size, patch_stride: patch embedding kernel and stride ``(freq, time)``.
        in_chans: channels of the spectrogram image (1).
        num_classes: classes of the token-semantic head (527 AudioSet classes).
        embed_dim: width of stage 0 (doubles at each stage).
        depths, num_heads: blocks and attention heads per stage.
        window_size: attention window side (clamped to the grid, without shift, where the grid is smaller).
        mlp_ratio: MLP hidden width / block width.
        qkv_bias: bias in the qkv projection.
        clip_seconds: length (s) a 1-s segment is tiled to before the front end.
    """

    name: str = "htsat_audioset"
    sample_rate: int = 32000
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    spec_size: int = 256
    patch_size: int = 4
    patch_stride: tuple[int, int] = (4, 4)
    in_chans: int = 1
    num_classes: int = 527
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    clip_seconds: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        stride = self.patch_stride
        stride = (int(stride), int(stride)) if isinstance(stride, int) else tuple(int(s) for s in stride)
        object.__setattr__(self, "patch_stride", stride)
        self.validate()

    @property
    def freq_ratio(self) -> int:
        """Number of time bands folded into the image's frequency axis (``spec_size // n_mels``)."""
        return self.spec_size // self.n_mels

    @property
    def segment_samples(self) -> int:
        """Samples of one 1-s segment."""
        return self.sample_rate

    @property
    def clip_samples(self) -> int:
        """Samples the transformer sees (``clip_seconds * sample_rate``)."""
        return self.clip_seconds * self.sample_rate

    @property
    def num_frames(self) -> int:
        """STFT frames of a clip (centred frames: ``1 + clip_samples // hop_length``)."""
        return 1 + self.clip_samples // self.hop_length

    @property
    def target_frames(self) -> int:
        """Frames after the time interpolation (``spec_size * freq_ratio``)."""
        return self.spec_size * self.freq_ratio

    @property
    def stage_dims(self) -> list[int]:
        return [self.embed_dim * 2 ** s for s in range(len(self.depths))]

    @property
    def stage_grids(self) -> list[tuple[int, int]]:
        """Token grid ``(H, W)`` of each stage."""
        h, w = self.spec_size // self.patch_stride[0], self.spec_size // self.patch_stride[1]
        return [(h // 2 ** s, w // 2 ** s) for s in range(len(self.depths))]

    def validate(self) -> None:
        """Raise :class:`ValueError` on inconsistent hyper-parameters."""
        problems = []
        if len(self.depths) != len(self.num_heads) or not self.depths:
            problems.append(f"depths {self.depths} and num_heads {self.num_heads} must have the same non-zero length")
        if self.n_mels <= 0 or self.spec_size % self.n_mels or self.spec_size < self.n_mels:
            problems.append(f"spec_size ({self.spec_size}) must be a positive multiple of n_mels ({self.n_mels})")
        if self.fmax > self.sample_rate / 2 or not 0 <= self.fmin < self.fmax:
            problems.append(f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, fmax={self.fmax}")
        if self.clip_seconds < 1:
            problems.append(f"clip_seconds must be >= 1, got {self.clip_seconds}")
        if self.patch_size < min(self.patch_stride) or any(self.spec_size % s for s in self.patch_stride):
            problems.append(f"patch_stride {self.patch_stride} must divide spec_size {self.spec_size} and be "
                            f"<= patch_size {self.patch_size}")
        if not problems:
            if self.num_frames > self.target_frames:
                problems.append(f"a {self.clip_seconds}-s clip gives {self.num_frames} frames, more than the "
                                f"{self.target_frames} (spec_size * freq_ratio) the image holds")
            for stage, ((h, w), dim, heads) in enumerate(zip(self.stage_grids, self.stage_dims, self.num_heads)):
                if dim % heads:
                    problems.append(f"stage {stage}: width {dim} is not divisible by {heads} heads")
                window = min(self.window_size, h, w)
                if h % window or w % window:
                    problems.append(f"stage {stage}: grid {h}x{w} is not divisible by window {window}")
                if stage < len(self.depths) - 1 and (h % 2 or w % 2):
                    problems.append(f"stage {stage}: grid {h}x{w} must be even for patch merging")
            last_h = self.stage_grids[-1][0]
            if last_h % self.freq_ratio or last_h < self.freq_ratio:
                problems.append(f"last grid height {last_h} must be a multiple of freq_ratio {self.freq_ratio} "
                                f"(token-semantic head)")
        if problems:
            raise ValueError(f"invalid HTS-AT config {self.name!r}: " + "; ".join(problems))

    def describe(self) -> str:
        """One line naming the hyper-parameters that decide the checkpoint layout."""
        return (f"{self.name} (spec_size {self.spec_size}, {self.n_mels} mels, n_fft {self.n_fft}, patch "
                f"{self.patch_size}/{self.patch_stride}, embed {self.embed_dim}, depths {list(self.depths)}, "
                f"heads {list(self.num_heads)}, window {self.window_size}, {self.num_classes} classes)")


HTSAT_PRESETS: dict[str, HTSATConfig] = {
    # The official AudioSet model (HTSAT_AudioSet_Saved_*.ckpt); 12 blocks.
    "htsat_audioset": HTSATConfig(),
    # Random weights, for tests and the CPU demo: 1-s clips at 32 kHz, 101 frames x 32 mels folded into a 64x64
    # image, 8 blocks (2 per stage) with grids 16², 8², 4², 2² so that early / mid / late selections all exist.
    "htsat_tiny": HTSATConfig(
        name="htsat_tiny", n_fft=512, hop_length=320, n_mels=32, spec_size=64, num_classes=10, embed_dim=16,
        depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=4, clip_seconds=1,
    ),
}


def fold_spectrogram(spectrogram: torch.Tensor, spec_size: int, freq_ratio: int) -> torch.Tensor:
    """HTS-AT's ``reshape_wav2img``: ``(B, C, T, M)`` spectrogram -> ``(B, C, spec_size, spec_size)`` image.

    The time axis is interpolated (bicubic, ``align_corners=True``) to ``spec_size * freq_ratio`` frames when
    shorter, the mel axis to ``spec_size // freq_ratio`` bins when smaller; then time is cut into ``freq_ratio``
    consecutive bands stacked along the rows: ``image[..., band * M + m, t] = spec[..., band * spec_size + t, m]``.
    """
    batch, channels, frames, mels = spectrogram.shape
    target_frames, target_mels = spec_size * freq_ratio, spec_size // freq_ratio
    if frames > target_frames or mels > target_mels:
        raise ValueError(f"spectrogram of {frames} frames x {mels} mels does not fit a {spec_size}x{spec_size} "
                         f"image with freq_ratio {freq_ratio} (at most {target_frames} x {target_mels})")
    if frames < target_frames:
        spectrogram = F.interpolate(spectrogram, size=(target_frames, mels), mode="bicubic", align_corners=True)
    if mels < target_mels:
        spectrogram = F.interpolate(spectrogram, size=(target_frames, target_mels), mode="bicubic",
                                    align_corners=True)
    image = spectrogram.transpose(2, 3).reshape(batch, channels, target_mels, freq_ratio, spec_size)
    return image.transpose(2, 3).reshape(batch, channels, spec_size, spec_size)


def _window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * nW, window * window, C)``, windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def _window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_window_partition`: ``(B * nW, window * window, C)`` -> ``(B, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


class PatchEmbed(nn.Module):
    """Conv patch embedding: ``(B, C_in, H, W)`` -> ``(B, H/s * W/s, D)``, then LayerNorm."""

    def __init__(self, *, patch_size: int, patch_stride: tuple[int, int], in_chans: int, embed_dim: int) -> None:
        super().__init__()
        padding = ((patch_size - patch_stride[0]) // 2, (patch_size - patch_stride[1]) // 2)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(image).flatten(2).transpose(1, 2))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _relative_position_index(window: int) -> torch.Tensor:
    """``(window², window²)`` index into the ``(2 window - 1)²`` relative position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[..., 0] * (2 * window - 1) + relative[..., 1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ``window x window`` windows with a learned relative position bias.

    Input ``(B * nW, window², C)``; ``mask`` ``(nW, window², window²)`` of 0 / -100 for shifted windows.
    """

    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.window, self.num_heads = window, num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", _relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch_windows, n, c = x.shape
        qkv = self.qkv(x).view(batch_windows, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1)
        if mask is not None:
            num_windows = mask.shape[0]
            shape = (batch_windows // num_windows, num_windows, self.num_heads, n, -1)
            bias = bias.unsqueeze(0) + mask.unsqueeze(1)
            out = F.scaled_dot_product_attention(q.reshape(shape), k.reshape(shape), v.reshape(shape),
                                                 attn_mask=bias.to(q.dtype))
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.reshape(batch_windows, self.num_heads, n, -1).transpose(1, 2).reshape(batch_windows, n, c))


def _shift_mask(grid: tuple[int, int], window: int, shift: int) -> torch.Tensor:
    """``(nW, window², window²)`` attention mask of a cyclically shifted window partition (0 or -100)."""
    h, w = grid
    regions = torch.zeros(1, h, w, 1)
    label = 0
    for rows in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for cols in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            regions[:, rows, cols, :] = label
            label += 1
    windows = _window_partition(regions, window).squeeze(-1)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, _MASK_VALUE).masked_fill(mask == 0, 0.0)


class SwinBlock(nn.Module):
    """Swin-V1 block on ``(B, H * W, C)`` tokens: (shifted-)window attention then MLP, pre-norm residuals.

    When the grid is not larger than the window, the window shrinks to the grid and there is no shift (and no
    ``attn_mask`` buffer), as in the original.
    """

    def __init__(self, *, dim: int, grid: tuple[int, int], num_heads: int, window_size: int, shift: bool,
                 mlp_ratio: float, qkv_bias: bool) -> None:
        super().__init__()
        self.grid = grid
        self.window = window_size
        self.shift = window_size // 2 if shift else 0
        if min(grid) <= window_size:
            self.window, self.shift = min(grid), 0
        if self.shift > 0:
            self.register_buffer("attn_mask", _shift_mask(grid, self.window, self.shift))
        else:
            self.attn_mask = None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, self.window, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def attention_residual(self, x: torch.Tensor) -> torch.Tensor:
        """``x + attention(norm1(x))`` on ``(B, H * W, C)`` tokens."""
        b, n, c = x.shape
        h, w = self.grid
        if n != h * w:
            raise ValueError(f"Swin block expects {h}x{w} = {h * w} tokens, got {n}")
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(_window_partition(y, self.window), mask=self.attn_mask)
        y = _window_reverse(y, self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        return x + y.reshape(b, n, c)

    def mlp_residual(self, x: torch.Tensor) -> torch.Tensor:
        """``x + mlp(norm2(x))``."""
        return x + self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp_residual(self.attention_residual(x))


class PatchMerging(nn.Module):
    """2x2 patch merging: ``(B, H * W, C)`` -> ``(B, H/2 * W/2, 2C)``; neighbours concatenated as
    ``[(0, 0), (1, 0), (0, 1), (1, 1)]`` (row offset, column offset), then LayerNorm and a bias-free Linear."""

    def __init__(self, *, grid: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.grid = grid
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        h, w = self.grid
        x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, (h // 2) * (w // 2), 4 * c)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """Blocks of one stage (alternating plain and shifted windows) and the optional trailing patch merging."""

    def __init__(self, *, dim: int, grid: tuple[int, int], depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float, qkv_bias: bool, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim=dim, grid=grid, num_heads=num_heads, window_size=window_size, shift=i % 2 == 1,
                      mlp_ratio=mlp_ratio, qkv_bias=qkv_bias)
            for i in range(depth)
        )
        self.downsample = PatchMerging(grid=grid, dim=dim) if downsample else None


class HTSATBackbone(TapBackbone):
    """Frozen HTS-AT exposing every Swin block's output as ``(B, N, D)`` tokens.

    Args:
        config: an :class:`HTSATConfig` or a preset name of :data:`HTSAT_PRESETS`.
        weights: local checkpoint file (official Lightning ``.ckpt``, or a plain state dict in ``.pt`` /
            ``.pth`` / ``.ckpt`` / ``.safetensors``, keys with or without the ``sed_model.`` prefix).
        trust_checkpoint: allow unpickling arbitrary Python objects if the file cannot be read with
            ``torch.load(weights_only=True)``; only for files from a trusted source.

    Input of :meth:`embed`: float waveforms ``(B, S)`` (or ``(B, 1, S)``) at ``config.sample_rate``, with
    ``S`` either one 1-s segment (tiled by repetition to ``clip_seconds``) or ``clip_seconds`` seconds.
    """

    float32_modules = ("spectrogram_extractor", "logmel_extractor", "bn0")

    def __init__(self, config: HTSATConfig | str = "htsat_audioset", *, weights: str | os.PathLike | None = None,
                 trust_checkpoint: bool = False) -> None:
        super().__init__()
        if isinstance(config, str):
            if config not in HTSAT_PRESETS:
                raise ValueError(f"unknown HTS-AT preset {config!r}; available: {', '.join(HTSAT_PRESETS)}")
            config = HTSAT_PRESETS[config]
        self.config = config
        self.name = config.name
        self.sample_rate = config.sample_rate
        self.spectrogram_extractor = Spectrogram(n_fft=config.n_fft, hop_length=config.hop_length,
                                                 center=True, pad_mode="reflect")
        self.logmel_extractor = LogMelFilterBank(sample_rate=config.sample_rate, n_fft=config.n_fft,
                                                 n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax,
                                                 ref=1.0, amin=1e-10, top_db=None)
        self.bn0 = nn.BatchNorm2d(config.n_mels)
        self.patch_embed = PatchEmbed(patch_size=config.patch_size, patch_stride=config.patch_stride,
                                      in_chans=config.in_chans, embed_dim=config.embed_dim)
        grids, dims = config.stage_grids, config.stage_dims
        num_stages = len(config.depths)
        self.layers = nn.ModuleList(
            SwinStage(dim=dims[s], grid=grids[s], depth=config.depths[s], num_heads=config.num_heads[s],
                      window_size=config.window_size, mlp_ratio=config.mlp_ratio, qkv_bias=config.qkv_bias,
                      downsample=s < num_stages - 1)
            for s in range(num_stages)
        )
        self.norm = nn.LayerNorm(dims[-1])
        self.tscam_conv = nn.Conv2d(dims[-1], config.num_classes,
                                    kernel_size=(grids[-1][0] // config.freq_ratio, 3), padding=(0, 1))
        self.head = nn.Linear(config.num_classes, config.num_classes)
        self._init_weights()

        self._block_index: list[tuple[int, int]] = []
        self.block_dims, self.block_tokens = [], []
        for s, depth in enumerate(config.depths):
            for b in range(depth):
                self._block_index.append((s, b))
                self.block_dims.append(dims[s])
                self.block_tokens.append(grids[s][0] * grids[s][1])

        self.weights_path: str | None = None
        if weights is not None:
            load_htsat_checkpoint(self, weights, trust_checkpoint=trust_checkpoint)
            self.weights_path = os.fspath(weights)
        self.freeze()

    def _init_weights(self) -> None:
        """Random initialisation of the learned weights (truncated normal Linear, unit LayerNorm); the
        front-end filters keep their fixed values."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def weights_hash(self) -> str | None:
        """SHA-256 of the local weights file, if one was given."""
        return file_sha256(self.weights_path) if self.weights_path else None

    def prepare_waveform(self, waveform: torch.Tensor) -> torch.Tensor:
        """Check and tile a waveform: ``(B, S)`` or ``(B, 1, S)`` -> float ``(B, clip_samples)``.

        ``S`` must be one segment (``sample_rate`` samples, tiled ``clip_seconds`` times) or a whole clip
        (``clip_seconds * sample_rate`` samples).
        """
        if waveform.ndim == 3 and waveform.shape[1] == 1:
            waveform = waveform[:, 0]
        if waveform.ndim != 2:
            raise ValueError(f"{self.name} expects waveforms of shape (B, S) or (B, 1, S), "
                             f"got {tuple(waveform.shape)}")
        if not torch.is_floating_point(waveform):
            raise ValueError(f"{self.name} expects float waveforms, got dtype {waveform.dtype}")
        cfg = self.config
        samples = waveform.shape[-1]
        if samples == cfg.clip_samples:
            return waveform
        if samples == cfg.segment_samples:
            return waveform.repeat(1, cfg.clip_seconds)
        raise ValueError(f"{self.name} expects {cfg.segment_samples} samples (one 1-s segment at "
                         f"{cfg.sample_rate} Hz, tiled to {cfg.clip_seconds} s) or {cfg.clip_samples} samples "
                         f"({cfg.clip_seconds} s), got {samples}")

    def spectrogram_image(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform -> normalised, folded log-mel image ``(B, 1, spec_size, spec_size)``."""
        x = self.prepare_waveform(waveform).to(self.bn0.weight.dtype)
        x = self.logmel_extractor(self.spectrogram_extractor(x))       # (B, 1, T, n_mels)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)                 # BatchNorm over mel bins
        return fold_spectrogram(x, self.config.spec_size, self.config.freq_ratio)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Waveform ``(B, S)`` -> patch tokens ``(B, N_0, embed_dim)`` entering block 0."""
        return self.patch_embed(self.spectrogram_image(x))

    def run_block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        stage_index, block_index = self._block_index[index]
        return self.layers[stage_index].blocks[block_index](self.enter_block(index, tokens))

    def to_sequence(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    def enter_block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        stage_index, block_index = self._block_index[index]
        if stage_index > 0 and block_index == 0:
            tokens = self.layers[stage_index - 1].downsample(tokens)
        return tokens

    def attention_sublayer(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        stage_index, block_index = self._block_index[index]
        return self.layers[stage_index].blocks[block_index].attention_residual(tokens)

    def mlp_sublayer(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        stage_index, block_index = self._block_index[index]
        return self.layers[stage_index].blocks[block_index].mlp_residual(tokens)

    def forward_clipwise(self, waveform: torch.Tensor) -> torch.Tensor:
        """Official AudioSet output: clip-wise class probabilities ``(B, num_classes)``.

        Final tokens -> ``norm`` -> ``(B, C, H, W)`` grid -> the ``freq_ratio`` time bands are put back side by
        side along time ``(B, C, H / freq_ratio, freq_ratio * W)`` -> ``tscam_conv`` (kernel ``(H / freq_ratio,
        3)``) -> mean over time -> sigmoid (the ``enable_tscam`` path with ``loss_type="clip_bce"``; ``head`` is
        not used there).
        """
        with torch.no_grad():
            tokens = self.embed(waveform)
            for index in range(self.num_blocks):
                tokens = self.run_block(index, tokens)
            x = self.norm(tokens)
            b, _, c = x.shape
            h, w = self.config.stage_grids[-1]
            ratio = self.config.freq_ratio
            x = x.transpose(1, 2).reshape(b, c, ratio, h // ratio, w).transpose(2, 3).reshape(b, c, h // ratio, -1)
            logits = self.tscam_conv(x).flatten(2).mean(dim=-1)
            return torch.sigmoid(logits)


# Names a Lightning 1.x training checkpoint (like HTSAT_AudioSet_Saved_1.ckpt) pickles beside its tensors, mapped to
# what torch.load(weights_only=True) may build for them: numpy scalars and arrays (metric values), argparse.Namespace
# (hyper-parameters), Lightning's AttributeDict read as a plain dict, and callback classes used as dict keys read
# as the ``str`` type. Nothing here can run code; anything else still needs trust_checkpoint.
_LIGHTNING_CALLBACKS = ("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
                        "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
                        "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor")
_ATTRIBUTE_DICTS = ("pytorch_lightning.utilities.parsing.AttributeDict", "pytorch_lightning.utilities.AttributeDict",
                    "lightning_fabric.utilities.data.AttributeDict", "lightning.fabric.utilities.data.AttributeDict")


def lightning_checkpoint_safe_globals() -> list[Any]:
    """The explicit allow-list for reading Lightning 1.x checkpoints with ``torch.load(weights_only=True)``."""
    import argparse

    import numpy as np

    numpy_core = getattr(np, "_core", None) or np.core
    allowed: list[Any] = [argparse.Namespace, np.dtype, np.ndarray, numpy_core.multiarray.scalar,
                          numpy_core.multiarray._reconstruct]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(numpy_core.multiarray.scalar, f"{module}.scalar"),
                    (numpy_core.multiarray._reconstruct, f"{module}._reconstruct")]
    for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
        dtype_class = getattr(getattr(np, "dtypes", None), name, None)
        if dtype_class is not None:
            allowed.append(dtype_class)
    allowed += [(dict, name) for name in _ATTRIBUTE_DICTS] + [(str, name) for name in _LIGHTNING_CALLBACKS]
    return allowed


def read_htsat_state_dict(path: str | os.PathLike, *, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """Read an HTS-AT state dict from a file, unwrapping Lightning checkpoints and stripping ``sed_model.``.

    Accepts ``.safetensors`` and torch files (``.ckpt``, ``.pt``, ``.pth``, ...) holding either a plain state
    dict or a dict with a ``state_dict`` (Lightning) or ``model`` entry. Torch files are read with
    ``weights_only=True`` and the allow-list of :func:`lightning_checkpoint_safe_globals` (what a Lightning 1.x
    checkpoint such as the official ``HTSAT_AudioSet_Saved_1.ckpt`` holds besides tensors: optimiser and
    callback state, hyper-parameters, numpy scalars); a file that needs anything more is refused unless
    ``trust_checkpoint`` (then read with ``weights_only=False``, with a warning naming the file).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"HTS-AT checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        payload: Any = load_file(path, device="cpu")
    else:
        try:
            with torch.serialization.safe_globals(lightning_checkpoint_safe_globals()):
                payload = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            if "Unsupported operand" in str(error):     # bytes that are no pickle at all
                raise ValueError(f"{path}: not a readable torch checkpoint ({error_gist(error)}); pass the HTS-AT "
                                 f"weights file (e.g. HTSAT_AudioSet_Saved_1.ckpt)") from None
            if not trust_checkpoint:
                refused = next((line.strip() for line in str(error).splitlines() if "Unsupported global" in line
                                or "WeightsUnpickler error" in line), str(error).splitlines()[0])
                raise ValueError(
                    f"{path}: this checkpoint holds Python objects beyond tensors and the few safe types of "
                    f"Lightning checkpoints ({refused}); loading it could run code. If the file comes from a "
                    f"trusted source, pass --trust-checkpoint (or trust_checkpoint=True in Python), or convert it "
                    f"once to a plain state dict or .safetensors file") from None
            _logger.warning("%s: reading with torch.load(weights_only=False) because --trust-checkpoint was given; "
                            "this runs whatever the file pickles", path)
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except (RuntimeError, EOFError, OSError, KeyError, ValueError) as error:  # KeyError: not a torch file
            raise ValueError(f"{path}: not a readable torch checkpoint ({type(error).__name__}: {error}); pass "
                             f"the HTS-AT weights file (e.g. HTSAT_AudioSet_Saved_1.ckpt)") from None
    if isinstance(payload, Mapping) and "state_dict" in payload and "pytorch-lightning_version" in payload:
        _logger.info("%s: Lightning %s checkpoint, %s entries besides the state dict ignored", path,
                     payload["pytorch-lightning_version"], len(payload) - 1)
    if isinstance(payload, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), Mapping):
                payload = payload[key]
                break
    if not isinstance(payload, Mapping) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor) or a Lightning checkpoint with a "
                         f"'state_dict' entry")
    state = {}
    for key, value in payload.items():
        for prefix in (OFFICIAL_PREFIX, "module."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        state[key] = value
    return state


def _listing(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})" if keys else "0"


def load_htsat_checkpoint(model: HTSATBackbone, path: str | os.PathLike, *,
                          trust_checkpoint: bool = False) -> HTSATBackbone:
    """Load an HTS-AT checkpoint into ``model`` strictly (every key present, none extra, same shapes).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, or keys / shapes that do not match ``model.config``; the message names the
            file, the missing and unexpected keys (first few of each, with counts) and the expected config.
    """
    state = read_htsat_state_dict(path, trust_checkpoint=trust_checkpoint)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{os.fspath(path)} does not match the HTS-AT config {model.config.describe()}: missing keys "
            f"{_listing(missing)}; unexpected keys {_listing(unexpected)}; shape mismatches "
            f"{_listing(mismatched, 3)} (file vs model). The official AudioSet checkpoint "
            f"(HTSAT_AudioSet_Saved_1.ckpt) needs the 'htsat_audioset' preset.")
    model.load_state_dict(state, strict=True)
    return model


def build_htsat(name: str = "htsat_audioset", weights: str | os.PathLike | None = None, *,
                trust_checkpoint: bool = False, **overrides: Any) -> HTSATBackbone:
    """Entry point: a frozen HTS-AT from a preset (``htsat_audioset``, ``htsat_tiny``), optional config field
    overrides (e.g. ``clip_seconds=5`` for AVS) and an optional local weights file."""
    if name not in HTSAT_PRESETS:
        raise ValueError(f"unknown HTS-AT preset {name!r}; available: {', '.join(HTSAT_PRESETS)}")
    config = dataclasses.replace(HTSAT_PRESETS[name], **overrides) if overrides else HTSAT_PRESETS[name]
    return HTSATBackbone(config, weights=weights, trust_checkpoint=trust_checkpoint)
