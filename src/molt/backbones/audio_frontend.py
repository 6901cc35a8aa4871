"""Waveform -> log-mel spectrogram front end (the HTS-AT / PANNs / torchlibrosa recipe), written from the formulas.

HTS-AT (Chen et al., "HTS-AT: A Hierarchical Token-Semantic Audio Transformer for Sound Classification and
Detection", ICASSP 2022, https://arxiv.org/abs/2202.00874) computes its input with torchlibrosa's modules; this
file reproduces them numerically without depending on torchlibrosa or librosa:

* :class:`STFT`: a short-time Fourier transform written as two 1-D convolutions whose fixed weights are the real
  and imaginary parts of the DFT matrix times a periodic Hann window (``conv_real``, ``conv_imag``; the
  official checkpoint stores them under ``spectrogram_extractor.stft``). ``center=True`` pads ``n_fft // 2``
  samples on both sides by reflection, so ``S`` samples give ``1 + S // hop_length`` frames.
* :class:`Spectrogram`: power spectrogram ``real**2 + imag**2``.
* :class:`LogMelFilterBank`: projection on a Slaney-style mel filterbank (``librosa.filters.mel`` defaults:
  ``htk=False``, ``norm="slaney"``), stored transposed as ``melW`` ``(n_fft // 2 + 1, n_mels)``, then
  ``10 * log10(max(x, amin)) - 10 * log10(max(amin, ref))`` with ``top_db=None``.
* :class:`LogMelSpectrogram`: the two composed, with configurable ``n_mels``; reusable outside HTS-AT (e.g. to
  build spectrogram images for a visual backbone).

All weights are fixed (never trained): they are created in ``__init__`` from numpy and marked frozen.

:class:`KaldiFbank` is the other front end the peers use: Kaldi-style log mel filterbank features (LAVisH's
shared-Swin setting, via ``torchaudio.compliance.kaldi.fbank`` there), written from Kaldi's documented
algorithm.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "check_sample_rate",
    "hann_window",
    "dft_weights",
    "mel_filterbank",
    "hz_to_mel_slaney",
    "mel_to_hz_slaney",
    "power_to_db",
    "STFT",
    "Spectrogram",
    "LogMelFilterBank",
    "LogMelSpectrogram",
    "log_mel_spectrogram",
    "kaldi_mel_banks",
    "KaldiFbank",
]


def check_sample_rate(sample_rate: int | float, expected: int | float,
                      source: str | os.PathLike | None = None) -> None:
    """Raise a :class:`ValueError` when audio was decoded at the wrong rate.

    Args:
        sample_rate: rate of the audio at hand, in Hz.
        expected: rate the audio backbone was trained at (HTS-AT AudioSet: 32000 Hz).
        source: the file or dataset the audio came from, named in the message.
    """
    if sample_rate is None or not math.isfinite(float(sample_rate)) or float(sample_rate) <= 0:
        raise ValueError(f"invalid sample rate {sample_rate!r}" + (f" for {os.fspath(source)}" if source else ""))
    if int(round(float(sample_rate))) != int(round(float(expected))):
        where = f"{os.fspath(source)}: " if source is not None else ""
        raise ValueError(f"{where}audio sample rate is {sample_rate} Hz but the audio backbone expects "
                         f"{expected} Hz; resample the audio to {expected} Hz when decoding it")


def hann_window(length: int) -> np.ndarray:
    """Periodic Hann window (``scipy.signal.get_window('hann', length, fftbins=True)``), float64 ``(length,)``."""
    n = np.arange(length, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


def dft_weights(n_fft: int, win_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Convolution weights of a windowed DFT: ``(real, imag)``, each float64 ``(n_fft // 2 + 1, 1, n_fft)``.

    ``real[k, 0, n] = w[n] cos(2 pi k n / n_fft)`` and ``imag[k, 0, n] = -w[n] sin(2 pi k n / n_fft)`` (the DFT
    kernel ``exp(-2 pi i k n / n_fft)``), with ``w`` a periodic Hann window of ``win_length`` samples centred in
    ``n_fft`` samples.
    """
    win_length = n_fft if win_length is None else win_length
    if not 0 < win_length <= n_fft:
        raise ValueError(f"win_length must be in 1..n_fft={n_fft}, got {win_length}")
    window = np.zeros(n_fft, dtype=np.float64)
    start = (n_fft - win_length) // 2
    window[start:start + win_length] = hann_window(win_length)
    k = np.arange(n_fft // 2 + 1, dtype=np.float64)[:, None]
    n = np.arange(n_fft, dtype=np.float64)[None, :]
    angle = 2.0 * np.pi * ((k * n) % n_fft) / n_fft
    real = np.cos(angle) * window[None, :]
    imag = -np.sin(angle) * window[None, :]
    return real[:, None, :], imag[:, None, :]


_F_SP = 200.0 / 3.0            # Hz per mel in the linear part of the Slaney scale
_MIN_LOG_HZ = 1000.0           # where the log part starts
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel_slaney(hz: np.ndarray | float) -> np.ndarray:
    """Slaney (Auditory Toolbox) mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz_slaney(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_slaney`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Slaney-normalised triangular mel filterbank, float64 ``(n_mels, n_fft // 2 + 1)``.

    Same values as ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)``
    (``htk=False``, ``norm="slaney"``): triangles with corners on ``n_mels + 2`` points evenly spaced on the
    Slaney mel scale, each scaled by ``2 / (upper_hz - lower_hz)`` so that it has unit area.
    """
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(f"mel filterbank needs 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, "
                         f"fmax={fmax}, sample_rate={sample_rate}")
    if n_mels <= 0:
        raise ValueError(f"n_mels must be positive, got {n_mels}")
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_points = np.linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2)
    hz_points = mel_to_hz_slaney(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    return weights


def power_to_db(power: torch.Tensor, ref: float = 1.0, amin: float = 1e-10,
                top_db: float | None = None) -> torch.Tensor:
    """``10 log10(max(power, amin)) - 10 log10(max(amin, ref))``, optionally floored ``top_db`` below the max."""
    db = 10.0 * torch.log10(torch.clamp(power, min=amin)) - 10.0 * math.log10(max(amin, ref))
    if top_db is not None:
        if top_db < 0:
            raise ValueError(f"top_db must be non-negative, got {top_db}")
        db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - top_db)
    return db


def _frozen(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def _as_batch(waveform: torch.Tensor) -> torch.Tensor:
    if waveform.ndim == 1:
        return waveform[None]
    if waveform.ndim == 3 and waveform.shape[1] == 1:
        return waveform[:, 0]
    if waveform.ndim != 2:
        raise ValueError(f"expected a waveform of shape (B, S), (B, 1, S) or (S,), got {tuple(waveform.shape)}")
    return waveform


class STFT(nn.Module):
    """Windowed STFT as two fixed 1-D convolutions (torchlibrosa layout and parameter names).

    Args:
        n_fft: FFT size; ``n_fft // 2 + 1`` frequency bins.
        hop_length: samples between frames.
        win_length: Hann window length (centred in ``n_fft``); defaults to ``n_fft``.
        center: pad ``n_fft // 2`` samples on both sides so that frame ``t`` is centred on sample
            ``t * hop_length``.
        pad_mode: padding mode of the centring (``"reflect"`` as in HTS-AT, or ``"constant"``).

    Input ``(B, S)`` float waveform; output ``(real, imag)``, each ``(B, 1, T, n_fft // 2 + 1)`` with
    ``T = 1 + S // hop_length`` when ``center``.
    """

    def __init__(self, *, n_fft: int = 1024, hop_length: int = 320, win_length: int | None = None,
                 center: bool = True, pad_mode: str = "reflect") -> None:
        super().__init__()
        if n_fft <= 0 or hop_length <= 0:
            raise ValueError(f"n_fft and hop_length must be positive, got {n_fft}, {hop_length}")
        if pad_mode not in ("reflect", "constant"):
            raise ValueError(f"pad_mode must be 'reflect' or 'constant', got {pad_mode!r}")
        self.n_fft, self.hop_length, self.center, self.pad_mode = n_fft, hop_length, center, pad_mode
        bins = n_fft // 2 + 1
        self.conv_real = nn.Conv1d(1, bins, kernel_size=n_fft, stride=hop_length, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, kernel_size=n_fft, stride=hop_length, bias=False)
        real, imag = dft_weights(n_fft, win_length)
        with torch.no_grad():
            self.conv_real.weight.copy_(torch.from_numpy(real))
            self.conv_imag.weight.copy_(torch.from_numpy(imag))
        _frozen(self)

    def num_frames(self, num_samples: int) -> int:
        """Number of frames for a waveform of ``num_samples`` samples."""
        if self.center:
            return 1 + num_samples // self.hop_length
        return 1 + (num_samples - self.n_fft) // self.hop_length

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _as_batch(waveform)[:, None, :]
        if self.center:
            pad = self.n_fft // 2
            if self.pad_mode == "reflect" and x.shape[-1] <= pad:
                raise ValueError(f"reflect padding needs more than n_fft // 2 = {pad} samples, "
                                 f"got {x.shape[-1]}")
            x = F.pad(x, (pad, pad), mode=self.pad_mode)
        elif x.shape[-1] < self.n_fft:
            raise ValueError(f"need at least n_fft = {self.n_fft} samples without centring, got {x.shape[-1]}")
        real = self.conv_real(x).transpose(1, 2)[:, None]
        imag = self.conv_imag(x).transpose(1, 2)[:, None]
        return real, imag


class Spectrogram(nn.Module):
    """Power spectrogram ``|STFT|**power``: ``(B, S)`` -> ``(B, 1, T, n_fft // 2 + 1)``.

    The STFT lives in ``self.stft`` so that parameter names match torchlibrosa (``stft.conv_real.weight``).
    """

    def __init__(self, *, n_fft: int = 1024, hop_length: int = 320, win_length: int | None = None,
                 center: bool = True, pad_mode: str = "reflect", power: float = 2.0) -> None:
        super().__init__()
        self.power = power
        self.stft = STFT(n_fft=n_fft, hop_length=hop_length, win_length=win_length, center=center,
                         pad_mode=pad_mode)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        real, imag = self.stft(waveform)
        spectrogram = real ** 2 + imag ** 2
        if self.power != 2.0:
            spectrogram = spectrogram ** (self.power / 2.0)
        return spectrogram


class LogMelFilterBank(nn.Module):
    """Power spectrogram ``(B, 1, T, n_fft // 2 + 1)`` -> log-mel ``(B, 1, T, n_mels)`` in dB.

    The filterbank is the persistent buffer ``melW`` ``(n_fft // 2 + 1, n_mels)`` (torchlibrosa's name).
    """

    def __init__(self, *, sample_rate: int = 32000, n_fft: int = 1024, n_mels: int = 64, fmin: float = 50.0,
                 fmax: float | None = 14000.0, ref: float = 1.0, amin: float = 1e-10,
                 top_db: float | None = None) -> None:
        super().__init__()
        if amin <= 0:
            raise ValueError(f"amin must be positive, got {amin}")
        self.ref, self.amin, self.top_db = ref, amin, top_db
        filterbank = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax).T
        self.register_buffer("melW", torch.from_numpy(np.ascontiguousarray(filterbank)).float())

    def forward(self, power_spectrogram: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(power_spectrogram, self.melW)
        return power_to_db(mel, ref=self.ref, amin=self.amin, top_db=self.top_db)


class LogMelSpectrogram(nn.Module):
    """Waveform ``(B, S)`` (or ``(B, 1, S)``, ``(S,)``) -> log-mel spectrogram ``(B, 1, T, n_mels)`` in dB.

    Defaults are the HTS-AT AudioSet front end (32 kHz, n_fft 1024, hop 320, 64 mels, 50-14000 Hz,
    ``ref=1.0``, ``amin=1e-10``, ``top_db=None``). Submodules are named like HTS-AT's
    (``spectrogram_extractor``, ``logmel_extractor``).
    """

    def __init__(self, *, sample_rate: int = 32000, n_fft: int = 1024, hop_length: int = 320,
                 win_length: int | None = None, n_mels: int = 64, fmin: float = 50.0,
                 fmax: float | None = 14000.0, center: bool = True, pad_mode: str = "reflect",
                 ref: float = 1.0, amin: float = 1e-10, top_db: float | None = None) -> None:
        super().__init__()
        self.sample_rate, self.n_mels = sample_rate, n_mels
        self.spectrogram_extractor = Spectrogram(n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                                                 center=center, pad_mode=pad_mode)
        self.logmel_extractor = LogMelFilterBank(sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                                                 fmax=fmax, ref=ref, amin=amin, top_db=top_db)

    def num_frames(self, num_samples: int) -> int:
        return self.spectrogram_extractor.stft.num_frames(num_samples)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.logmel_extractor(self.spectrogram_extractor(waveform))


def log_mel_spectrogram(waveform: torch.Tensor, sample_rate: int, *, n_mels: int = 64, n_fft: int = 1024,
                        hop_length: int = 320, fmin: float = 50.0, fmax: float | None = None,
                        top_db: float | None = None) -> torch.Tensor:
    """Functional :class:`LogMelSpectrogram`: ``(B, S)`` -> ``(B, 1, T, n_mels)`` dB (builds the filters each call).

    ``fmax`` defaults to the Nyquist frequency.
    """
    module = LogMelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                               fmin=fmin, fmax=fmax, top_db=top_db).to(waveform.device)
    with torch.no_grad():
        return module(waveform.float())


def kaldi_mel_banks(num_bins: int, padded_window: int, sample_rate: float, low_freq: float = 20.0,
                    high_freq: float = 0.0) -> torch.Tensor:
    """Kaldi's triangular mel filters ``(num_bins, padded_window // 2)``: equally spaced on the mel scale
    ``1127 ln(1 + f / 700)`` from ``low_freq`` to ``high_freq`` (``<= 0`` counts down from the Nyquist frequency),
    evaluated at the FFT bins ``k * sample_rate / padded_window``."""
    nyquist = 0.5 * sample_rate
    high_freq = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"mel filters need 0 <= low_freq < high_freq <= {nyquist}, got {low_freq} and {high_freq}")

    def mel(freq: torch.Tensor) -> torch.Tensor:
        return 1127.0 * torch.log1p(freq / 700.0)

    low, high = mel(torch.tensor(low_freq, dtype=torch.float64)), mel(torch.tensor(high_freq, dtype=torch.float64))
    delta = (high - low) / (num_bins + 1)
    bins = torch.arange(num_bins, dtype=torch.float64)[:, None]
    left, center, right = low + bins * delta, low + (bins + 1) * delta, low + (bins + 2) * delta
    fft_mel = mel(sample_rate / padded_window * torch.arange(padded_window // 2, dtype=torch.float64))[None]
    up, down = (fft_mel - left) / (center - left), (right - fft_mel) / (right - center)
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


class KaldiFbank(nn.Module):
    """Kaldi-style log mel filterbank features, the audio input LAVisH's shared setting feeds its Swin.

    Waveform ``(B, S)`` -> ``(B, T, num_mel_bins)`` with Kaldi's ``compute-fbank-feats`` defaults as the AST /
    LAVisH recipes call them (``htk_compat``, no energy, Hann window, no dither): frames of ``frame_length_ms``
    every ``frame_shift_ms`` that fit entirely (``snip_edges``: ``1 + (S - L) // shift`` frames), each with its DC
    offset removed, pre-emphasis 0.97 (the first sample against itself), a symmetric Hann window, zero-padded to
    the next power of two, power spectrum, :func:`kaldi_mel_banks` (20 Hz to Nyquist), natural log floored at the
    float32 epsilon.
    """

    def __init__(self, *, sample_rate: int = 32000, num_mel_bins: int = 192, frame_length_ms: float = 25.0,
                 frame_shift_ms: float = 10.0, preemphasis: float = 0.97, low_freq: float = 20.0,
                 high_freq: float = 0.0) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.frame_length = int(sample_rate * frame_length_ms / 1000)
        self.frame_shift = int(sample_rate * frame_shift_ms / 1000)
        self.padded = 1 << (self.frame_length - 1).bit_length()
        self.preemphasis = preemphasis
        self.register_buffer("window", torch.hann_window(self.frame_length, periodic=False), persistent=False)
        self.register_buffer("mel_banks", kaldi_mel_banks(num_mel_bins, self.padded, sample_rate, low_freq,
                                                          high_freq), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        waveform = _as_batch(waveform).float()
        if waveform.shape[-1] < self.frame_length:
            raise ValueError(f"Kaldi fbank needs at least {self.frame_length} samples per row, got "
                             f"{waveform.shape[-1]}")
        frames = waveform.unfold(-1, self.frame_length, self.frame_shift)                # (B, T, L)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = (frames - self.preemphasis * previous) * self.window
        spectrum = torch.fft.rfft(frames, n=self.padded).abs().square()[..., :self.padded // 2]
        energies = spectrum @ self.mel_banks.T
        return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()
