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
    with pytest.raises(ValueError, match="unknown backbone preset"):
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
