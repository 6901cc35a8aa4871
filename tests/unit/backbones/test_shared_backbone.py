import numpy as np
import pytest
import torch

from molt.backbones import build_backbones
from molt.backbones.shared import SpectrogramSwin


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    return build_backbones("tiny-shared")


def test_audio_branch_shares_the_visual_swin(pair):
    visual, audio = pair
    assert isinstance(audio, SpectrogramSwin) and audio.swin is visual
    visual_ids = {id(p) for p in visual.parameters()}
    assert {id(p) for p in audio.swin.parameters()} == visual_ids
    assert audio.block_dims == visual.block_dims and audio.num_blocks == visual.num_blocks


def test_spectrogram_image_and_taps(pair):
    _, audio = pair
    waveform = torch.randn(3, 32000) * 0.1
    image = audio.spectrogram_image(waveform)
    assert image.shape == (3, 3, 64, 64)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert torch.equal(image[:, 0], image[:, 1]) and torch.equal(image[:, 0], image[:, 2])
    taps = audio.forward_taps(waveform, "all")
    for tap, dim, tokens in zip(taps, audio.block_dims, audio.block_tokens):
        assert tap.shape == (3, tokens, dim)
    assert all(t.grad_fn is None for t in taps)


def test_spectrogram_image_tells_tones_apart(pair):
    _, audio = pair
    t = torch.arange(32000) / 32000
    low = audio.spectrogram_image(torch.sin(2 * torch.pi * 300 * t)[None])[0, 0]
    high = audio.spectrogram_image(torch.sin(2 * torch.pi * 5000 * t)[None])[0, 0]
    rows = torch.arange(64, dtype=torch.float32)
    # the brightest row of a low tone sits lower in the picture (larger row index) than a high tone's
    assert (low.mean(1) * rows).sum() / low.mean(1).sum() > (high.mean(1) * rows).sum() / high.mean(1).sum()


def test_shared_audio_branch_rejects_wrong_length(pair):
    _, audio = pair
    with pytest.raises(ValueError, match=r"\(B, 32000\)"):
        audio.forward_taps(torch.randn(2, 16000), "late")


def test_shared_preset_refuses_audio_weights(tmp_path):
    with pytest.raises(ValueError, match="shares the visual Swin-V2"):
        build_backbones("tiny-shared", audio_weights=tmp_path / "x.ckpt")


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown backbone .huge.: name a pair"):
        build_backbones("huge")


def test_random_weight_presets_are_the_same_in_every_build():
    torch.manual_seed(123)
    first = build_backbones("tiny")
    state = torch.random.get_rng_state()
    second = build_backbones("tiny")
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    for a, b in zip(first, second):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name


def _kaldi_fbank_reference(signal: np.ndarray, sample_rate: int, bins: int) -> np.ndarray:
    """Kaldi's compute-fbank-feats, frame by frame in float64 (written from the algorithm's description)."""
    length, shift = int(0.025 * sample_rate), int(0.010 * sample_rate)
    padded = 1
    while padded < length:
        padded *= 2
    window = np.array([0.5 - 0.5 * np.cos(2 * np.pi * n / (length - 1)) for n in range(length)])

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    low, high = mel(20.0), mel(sample_rate / 2)
    step = (high - low) / (bins + 1)
    banks = np.zeros((bins, padded // 2))
    for b in range(bins):
        left, center, right = low + b * step, low + (b + 1) * step, low + (b + 2) * step
        for k in range(padded // 2):
            m = mel(k * sample_rate / padded)
            if left < m < right:
                banks[b, k] = (m - left) / (center - left) if m <= center else (right - m) / (right - center)
    rows = []
    for start in range(0, len(signal) - length + 1, shift):
        frame = signal[start:start + length].astype(np.float64)
        frame = frame - frame.mean()
        frame = np.concatenate([[frame[0] - 0.97 * frame[0]], frame[1:] - 0.97 * frame[:-1]])
        spectrum = np.abs(np.fft.rfft(frame * window, n=padded)) ** 2
        rows.append(np.log(np.maximum(banks @ spectrum[:padded // 2], np.finfo(np.float32).eps)))
    return np.stack(rows)


def test_kaldi_fbank_matches_a_frame_by_frame_computation():
    from molt.backbones.audio_frontend import KaldiFbank

    generator = np.random.default_rng(0)
    signal = (0.1 * generator.standard_normal(32000)).astype(np.float32)
    expected = _kaldi_fbank_reference(signal, 32000, 192)
    got = KaldiFbank(sample_rate=32000, num_mel_bins=192)(torch.from_numpy(signal)[None])[0].double().numpy()
    assert got.shape == expected.shape == (98, 192)   # 1 + (32000 - 800) // 320 frames that fit
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)


def test_kaldi_fbank_puts_a_tone_in_the_filter_centred_on_it():
    from molt.backbones.audio_frontend import KaldiFbank

    tone = torch.sin(2 * torch.pi * 1000.0 * torch.arange(32000) / 32000)
    energies = KaldiFbank(sample_rate=32000, num_mel_bins=64)(tone[None])[0].mean(0)
    low, high = 1127 * np.log1p(20 / 700), 1127 * np.log1p(16000 / 700)
    centres = 700 * (np.exp((low + (np.arange(64) + 1) * (high - low) / 65) / 1127) - 1)
    assert int(energies.argmax()) == int(np.abs(centres - 1000.0).argmin())


def test_shared_audio_frontend_kaldi_fbank_feeds_the_normalised_fbank():
    from molt.backbones.shared import FBANK_MEAN, FBANK_STD
    from molt.config import load_config

    visual, audio = build_backbones("tiny-shared", shared_audio_frontend="kaldi_fbank")
    waveform = 0.1 * torch.randn(2, 32000, generator=torch.Generator().manual_seed(0))
    fbank = (audio.frontend(waveform) - FBANK_MEAN) / (2 * FBANK_STD)
    image = audio.spectrogram_image(waveform)
    expected = torch.nn.functional.interpolate(fbank[:, None], size=visual.input_size, mode="bilinear",
                                               align_corners=False)
    torch.testing.assert_close(image, expected.expand(-1, 3, -1, -1))
    torch.testing.assert_close(audio.embed(waveform), visual.model.patch_embed(image))  # no ImageNet normalisation
    assert audio.name.endswith("+kaldi_fbank") and build_backbones("tiny-shared")[1].name.endswith("+spectrogram")
    assert load_config("ave_molt_shared").shared_audio_frontend == "htsat"
    with pytest.raises(ValueError, match="applies to a Swin-V2 reading the spectrogram"):
        load_config("ave_molt_tiny", {"shared_audio_frontend": "kaldi_fbank"})
