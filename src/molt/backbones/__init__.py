"""Frozen backbones with per-block taps: Swin-V2 (timm), HTS-AT, and the shared-Swin audio branch."""
from __future__ import annotations

import os

import torch

from .base import TapBackbone
from .htsat import HTSATBackbone, HTSATConfig, build_htsat, load_htsat_checkpoint
from .shared import SpectrogramSwin
from .swin_v2 import SWIN_V2_PRESETS, SwinV2Backbone, build_swin_v2
from .taps import resolve_blocks

__all__ = [
    "TapBackbone", "SwinV2Backbone", "HTSATBackbone", "HTSATConfig", "SpectrogramSwin", "SWIN_V2_PRESETS",
    "build_swin_v2", "build_htsat", "load_htsat_checkpoint", "build_backbones", "resolve_blocks",
    "BACKBONE_PAIRS",
]

# backbone preset -> (visual Swin-V2 preset, audio backbone: an HTS-AT preset or "shared")
BACKBONE_PAIRS: dict[str, tuple[str, str]] = {
    "tiny": ("swinv2_tiny_test", "htsat_tiny"),
    "tiny-shared": ("swinv2_tiny_test", "shared"),
    "paper": ("swinv2_large_window12_192", "htsat_audioset"),
    "shared": ("swinv2_large_window12_192", "shared"),
}


def build_backbones(preset: str = "paper", *, visual_weights: str | os.PathLike | None = None,
                    audio_weights: str | os.PathLike | None = None,
                    pretrained: bool = False, init_seed: int = 0, audio_clip_seconds: int | None = None,
                    trust_checkpoint: bool = False,
                    shared_audio_frontend: str = "htsat") -> tuple[TapBackbone, TapBackbone]:
    """Frozen ``(visual, audio)`` backbones of a preset (see :data:`BACKBONE_PAIRS`).

    ``visual_weights`` / ``audio_weights`` are local files; ``pretrained=True`` fetches the visual hub weights
    when no file is given (online only). In the shared presets the audio branch reads the visual Swin's
    weights, so ``audio_weights`` must not be given.

    Parameters not loaded from a file are initialised from ``init_seed`` (without touching the global RNG), so the
    random-weight presets used by tests and the demo are the same backbone in every process: adapters trained on
    them can be evaluated later. ``audio_clip_seconds`` overrides the length HTS-AT tiles each 1-s segment to
    (the peers use 10 s for AVE / AVQA and 5 s for AVS); the shared presets have no HTS-AT and ignore it.
    ``trust_checkpoint`` lets an HTS-AT file that pickles more than the allow-list of Lightning checkpoints be read
    (see :func:`molt.backbones.htsat.read_htsat_state_dict`). ``shared_audio_frontend`` picks the shared
    presets' audio image (``htsat`` log-mel or LAVisH's ``kaldi_fbank``; :mod:`molt.backbones.shared`).
    """
    if preset not in BACKBONE_PAIRS:
        raise ValueError(f"unknown backbone preset {preset!r}: expected one of {', '.join(BACKBONE_PAIRS)}")
    visual_name, audio_name = BACKBONE_PAIRS[preset]
    if audio_name == "shared" and audio_weights is not None:
        raise ValueError(f"backbone preset {preset!r} shares the visual Swin-V2 with the audio branch: "
                         f"drop --audio-weights (or use a preset with a separate HTS-AT)")
    for flag, weights in (("--visual-weights", visual_weights), ("--audio-weights", audio_weights)):
        if weights is not None and not os.path.isfile(weights):  # before minutes of building a large backbone
            raise FileNotFoundError(f"{flag}: weights file not found: {os.fspath(weights)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        visual = build_swin_v2(visual_name, weights=visual_weights,
                               pretrained=pretrained and visual_weights is None)
        if audio_name == "shared":
            audio = SpectrogramSwin(visual, frontend=shared_audio_frontend)
        else:
            overrides = {"clip_seconds": audio_clip_seconds} if audio_clip_seconds is not None else {}
            audio = build_htsat(audio_name, weights=audio_weights, trust_checkpoint=trust_checkpoint, **overrides)
    return visual, audio
