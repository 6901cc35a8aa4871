"""Shared-backbone setting: one frozen Swin-V2 reads both the video frames and the audio spectrogram.

As in LAVisH (Lin et al., CVPR 2023), the audio is turned into a 3-channel image at the Swin input size and goes
through the *same* frozen Swin-V2 as the frames. Where we depart from LAVisH, and why:

* Two front ends (``frontend=``, config key ``shared_audio_frontend``):

  - ``"htsat"`` (default, what the ``shared`` presets use): the same log-mel front end as HTS-AT
    (:class:`~molt.backbones.audio_frontend.LogMelSpectrogram`, Slaney mel, 32 kHz, hop 10 ms) with ``n_mels``
    bins (default 128), so that both audio settings share one front end; dB mapped to ``[0, 1]`` by a fixed
    affine map and then through the Swin's ImageNet normalisation (below).
  - ``"kaldi_fbank"``: as LAVisH feeds it, Kaldi-style log mel filterbank features with 192 bins
    (:class:`~molt.backbones.audio_frontend.KaldiFbank`), normalised with the AudioSet statistics of the AST
    recipe LAVisH builds on (``(x + 4.2677393) / (2 * 4.5689974)``), time on the image's height axis and mel on
    its width, repeated on 3 channels and given to the Swin's patch embedding *without* ImageNet normalisation.
    LAVisH's own length handling of the 98 frames of a 1-s segment could not be read here; they are resized
    bilinearly to the Swin input size like the other front end.
* The 1-s segment is used as it is (101 frames), not tiled to 10 s: tiling only repeats the picture.
* (``htsat``) dB values are mapped to ``[0, 1]`` with the fixed affine map ``(dB - db_min) / (db_max - db_min)``,
  clamped, so the image of a clip never depends on the rest of the batch. Frequency runs bottom (low) to top
  (high), time left to right; the image is resized bilinearly to the Swin input size and repeated on 3 channels;
  the Swin then applies its usual ImageNet normalisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .audio_frontend import KaldiFbank, LogMelSpectrogram
from .base import TapBackbone
from .swin_v2 import SwinV2Backbone

__all__ = ["SpectrogramSwin", "SHARED_AUDIO_FRONTENDS", "FBANK_MEAN", "FBANK_STD"]

#: the audio front ends of the shared setting (``shared_audio_frontend``)
SHARED_AUDIO_FRONTENDS = ("htsat", "kaldi_fbank")
#: AudioSet statistics of Kaldi fbank features used by the AST / LAVisH recipes
FBANK_MEAN, FBANK_STD = -4.2677393, 4.5689974


class SpectrogramSwin(TapBackbone):
    """Audio branch of the shared setting: waveform ``(B, S)`` -> spectrogram image -> the shared Swin-V2.

    Args:
        swin: the visual backbone whose weights are shared (held by reference, never copied).
        sample_rate: expected audio rate.
        segment_samples: expected number of samples per input row (one 1-s segment).
        n_mels: mel bins of the spectrogram image (``htsat`` front end; ``kaldi_fbank`` uses 192).
        frontend: ``"htsat"`` or ``"kaldi_fbank"`` (see the module docstring).
    """

    float32_modules = ("frontend",)

    def __init__(self, swin: SwinV2Backbone, *, sample_rate: int = 32000, segment_samples: int = 32000,
                 n_mels: int = 128, db_min: float = -100.0, db_max: float = 20.0, frontend: str = "htsat") -> None:
        super().__init__()
        if frontend not in SHARED_AUDIO_FRONTENDS:
            raise ValueError(f"shared_audio_frontend must be one of {', '.join(SHARED_AUDIO_FRONTENDS)}, "
                             f"got {frontend!r}")
        self.swin = swin
        self.frontend_name = frontend
        self.name = f"{swin.name}+spectrogram" if frontend == "htsat" else f"{swin.name}+kaldi_fbank"
        self.sample_rate = sample_rate
        self.segment_samples = segment_samples
        self.db_min, self.db_max = db_min, db_max
        self.frontend = LogMelSpectrogram(sample_rate=sample_rate, n_fft=1024, hop_length=sample_rate // 100,
                                          n_mels=n_mels, fmin=50.0, fmax=sample_rate / 2.0) if frontend == "htsat" \
            else KaldiFbank(sample_rate=sample_rate, num_mel_bins=192)
        self.block_dims = list(swin.block_dims)
        self.block_tokens = list(swin.block_tokens)
        self.freeze()

    @property
    def tag(self) -> str:
        return self.swin.tag

    def weights_hash(self) -> str | None:
        return self.swin.weights_hash()

    def spectrogram_image(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` waveform -> ``(B, 3, H, W)`` image at the Swin input size: in [0, 1] (``htsat``, the Swin
        normalises it) or the normalised fbank (``kaldi_fbank``, fed as it is)."""
        if waveform.ndim == 3 and waveform.shape[1] == 1:
            waveform = waveform[:, 0]
        if waveform.ndim != 2 or waveform.shape[-1] != self.segment_samples:
            raise ValueError(f"shared Swin audio branch expects waveforms of shape (B, {self.segment_samples}) "
                             f"(one 1-s segment at {self.sample_rate} Hz), got {tuple(waveform.shape)}")
        if self.frontend_name == "kaldi_fbank":
            fbank = (self.frontend(waveform.float()) - FBANK_MEAN) / (2.0 * FBANK_STD)          # (B, T, 192)
            image = F.interpolate(fbank[:, None], size=self.swin.input_size, mode="bilinear", align_corners=False)
            return image.expand(-1, 3, -1, -1)
        db = self.frontend(waveform.float())[:, 0]  # (B, T, M)
        image = ((db - self.db_min) / (self.db_max - self.db_min)).clamp(0.0, 1.0)
        image = image.transpose(1, 2).flip(1)[:, None]  # (B, 1, M, T), low frequencies at the bottom
        image = F.interpolate(image, size=self.swin.input_size, mode="bilinear", align_corners=False)
        return image.expand(-1, 3, -1, -1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        image = self.spectrogram_image(x)
        return self.swin.embed(image) if self.frontend_name == "htsat" else self.swin.embed_normalized(image)

    def run_block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.swin.run_block(index, tokens)

    def to_sequence(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.swin.to_sequence(tokens)

    def enter_block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.swin.enter_block(index, tokens)

    def attention_sublayer(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.swin.attention_sublayer(index, tokens)

    def mlp_sublayer(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.swin.mlp_sublayer(index, tokens)
