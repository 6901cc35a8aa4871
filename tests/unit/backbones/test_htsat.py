import argparse
import math
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from helpers import FIXTURES, SHARED_FIXTURES
from molt.backbones.audio_frontend import LogMelSpectrogram, check_sample_rate, log_mel_spectrogram
from molt.backbones.htsat import HTSAT_PRESETS, HTSATConfig, build_htsat, fold_spectrogram, load_htsat_checkpoint

FIXTURE = SHARED_FIXTURES / "htsat_state_dict_keys.tsv"
if not FIXTURE.is_file():
    FIXTURE = FIXTURES / "htsat_state_dict_keys.tsv"


def fixture_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in FIXTURE.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape = line.split("\t")
        shapes[name] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return shapes


@pytest.fixture(scope="module")
def official():
    torch.manual_seed(0)
    return build_htsat("htsat_audioset")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_htsat("htsat_tiny")


def random_state(model: nn.Module, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            state[name] = torch.randn(value.shape, generator=generator)
        else:
            state[name] = torch.randint(0, 50, value.shape, generator=generator, dtype=value.dtype)
    return state


# 1. names and shapes of the official checkpoint ------------------------------------------------------------

@pytest.mark.skipif(not FIXTURE.is_file(), reason="state-dict fixture not available")
def test_official_state_dict_matches_fixture(official):
    expected = fixture_shapes()
    assert len(expected) == 200
    ours = {name: tuple(value.shape) for name, value in official.state_dict().items()}
    assert set(ours) == set(expected), (set(ours) - set(expected), set(expected) - set(ours))
    assert ours == expected
    assert official.num_blocks == 12


# 2. strict loading -------------------------------------------------------------------------------------------

def test_lightning_checkpoint_round_trip(official, tmp_path):
    state = random_state(official)
    path = tmp_path / "HTSAT_AudioSet_Saved_1.ckpt"
    torch.save({"epoch": 3, "global_step": 10, "pytorch-lightning_version": "1.5.9",
                "state_dict": {"sed_model." + k: v for k, v in state.items()}}, path)
    model = build_htsat("htsat_audioset", weights=path)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert model.weights_path == str(path) and len(model.weights_hash()) == 64
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_plain_state_dict_without_prefix(tiny, tmp_path, suffix):
    state = random_state(tiny, seed=2)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    model = build_htsat("htsat_tiny", weights=path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_missing_and_unexpected_keys_are_named(tiny, tmp_path):
    state = {"sed_model." + k: v for k, v in random_state(tiny).items()}
    missing = dict(state)
    del missing["sed_model.layers.1.blocks.0.attn.qkv.weight"]
    path = tmp_path / "missing.ckpt"
    torch.save({"state_dict": missing}, path)
    with pytest.raises(ValueError) as error:
        load_htsat_checkpoint(build_htsat("htsat_tiny"), path)
    message = str(error.value)
    assert "missing.ckpt" in message and "layers.1.blocks.0.attn.qkv.weight" in message
    assert "htsat_tiny" in message and "missing keys 1" in message

    extra = dict(state, **{"sed_model.spec_augmenter.weight": torch.zeros(3)})
    path = tmp_path / "extra.ckpt"
    torch.save({"state_dict": extra}, path)
    with pytest.raises(ValueError) as error:
        load_htsat_checkpoint(build_htsat("htsat_tiny"), path)
    assert "extra.ckpt" in str(error.value) and "spec_augmenter.weight" in str(error.value)
    assert "unexpected keys 1" in str(error.value)


def test_official_weights_do_not_fit_tiny(official, tmp_path):
    path = tmp_path / "official.pt"
    torch.save(official.state_dict(), path)
    with pytest.raises(ValueError, match="shape mismatches"):
        build_htsat("htsat_tiny", weights=path)


def _lightning_1x_checkpoint(state: dict) -> dict:
    """What a Lightning 1.x training checkpoint (like HTSAT_AudioSet_Saved_1.ckpt) holds beside its state dict."""
    import numpy as np
    from lightning.fabric.utilities.data import AttributeDict

    weights = {f"sed_model.{name}": value for name, value in state.items()}
    return {"epoch": 41, "global_step": 123456, "pytorch-lightning_version": "1.5.10", "state_dict": weights,
            "callbacks": {"ModelCheckpoint{'monitor': 'mAP', 'mode': 'max'}": {
                "monitor": "mAP", "best_model_score": torch.tensor(0.471), "best_model_path": "/ckpt/l.ckpt",
                "current_score": np.float64(0.468), "kth_value": np.array([0.47, 0.46])}},
            "optimizer_states": [{"state": {0: {"step": 7, "exp_avg": torch.zeros(3)}},
                                  "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]}],
            "lr_schedulers": [{"last_epoch": 41, "_last_lr": [1e-3], "lr_lambdas": [None]}],
            "hparams_name": "config", "hyper_parameters": AttributeDict(sample_rate=32000, lr=1e-3),
            "args": argparse.Namespace(lr=1e-3, seed=970131)}


class _RunsCode:
    """Unpickling this calls a function: what weights_only=True exists to refuse."""

    def __reduce__(self):
        return (os.path.join, ("unpickled", "code"))


def test_a_lightning_1x_checkpoint_loads_without_trust(tiny, tmp_path, caplog):
    path = tmp_path / "HTSAT_like_Saved.ckpt"
    torch.save(_lightning_1x_checkpoint(random_state(tiny, seed=3)), path)
    with caplog.at_level("INFO"):
        model = build_htsat("htsat_tiny", weights=path)   # optimiser, callbacks, numpy, hparams: all allow-listed
    assert torch.equal(model.norm.weight, random_state(tiny, seed=3)["norm.weight"])
    assert "Lightning 1.5.10 checkpoint" in caplog.text


def test_an_arbitrary_pickled_object_needs_trust(tiny, tmp_path, caplog):
    path = tmp_path / "with_code.ckpt"
    payload = _lightning_1x_checkpoint(random_state(tiny, seed=4))
    payload["hyper_parameters"] = {"callback": _RunsCode()}
    torch.save(payload, path)
    with pytest.raises(ValueError) as error:
        build_htsat("htsat_tiny", weights=path)
    message = str(error.value)
    assert "with_code.ckpt" in message and "Unsupported global: GLOBAL posixpath.join" in message
    assert "--trust-checkpoint" in message and "loading it could run code" in message
    with caplog.at_level("WARNING"):
        model = build_htsat("htsat_tiny", weights=path, trust_checkpoint=True)
    assert torch.equal(model.norm.weight, random_state(tiny, seed=4)["norm.weight"])
    assert "with_code.ckpt: reading with torch.load(weights_only=False)" in caplog.text


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        build_htsat("htsat_tiny", weights=tmp_path / "nope.ckpt")


# 3. numerical references -------------------------------------------------------------------------------------

def reference_mel(sample_rate, n_fft, n_mels, fmin, fmax):
    """librosa-style Slaney mel filterbank, (n_mels, n_fft // 2 + 1), written independently of the library."""
    def hz_to_mel(f):
        return f / (200.0 / 3.0) if f < 1000.0 else 15.0 + math.log(f / 1000.0) * 27.0 / math.log(6.4)

    def mel_to_hz(m):
        return m * 200.0 / 3.0 if m < 15.0 else 1000.0 * math.exp((m - 15.0) * math.log(6.4) / 27.0)

    edges = [mel_to_hz(m) for m in np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)]
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    bank = np.zeros((n_mels, len(freqs)))
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        for j, f in enumerate(freqs):
            if lo < f <= mid:
                bank[i, j] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                bank[i, j] = (hi - f) / (hi - mid)
        bank[i] *= 2.0 / (hi - lo)
    return bank


def reference_logmel(wave, sample_rate, n_fft, hop, n_mels, fmin, fmax):
    padded = np.pad(wave, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([padded[t * hop:t * hop + n_fft] * window for t in range(1 + len(wave) // hop)])
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    mel = power @ reference_mel(sample_rate, n_fft, n_mels, fmin, fmax).T
    return 10 * np.log10(np.maximum(mel, 1e-10))


def test_log_mel_matches_numpy_reference():
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(4000) * 0.1
    params = dict(sample_rate=16000, n_fft=512, hop=160, n_mels=40, fmin=50.0, fmax=7600.0)
    expected = reference_logmel(wave, **params)
    module = LogMelSpectrogram(sample_rate=16000, n_fft=512, hop_length=160, n_mels=40, fmin=50.0, fmax=7600.0)
    ours = module(torch.from_numpy(wave).float()[None])[0, 0].double().numpy()
    assert ours.shape == expected.shape == (26, 40)
    np.testing.assert_allclose(ours, expected, atol=2e-3)
    functional = log_mel_spectrogram(torch.from_numpy(wave).float()[None], 16000, n_mels=40, n_fft=512,
                                     hop_length=160, fmin=50.0, fmax=7600.0)
    np.testing.assert_allclose(functional[0, 0].double().numpy(), expected, atol=2e-3)


def test_official_front_end_weights(official):
    n = np.arange(1024)
    k = np.arange(513)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / 1024)
    real = official.spectrogram_extractor.stft.conv_real.weight[:, 0].double().numpy()
    imag = official.spectrogram_extractor.stft.conv_imag.weight[:, 0].double().numpy()
    np.testing.assert_allclose(real, np.cos(2 * np.pi * k * n / 1024) * window, atol=1e-6)
    np.testing.assert_allclose(imag, -np.sin(2 * np.pi * k * n / 1024) * window, atol=1e-6)
    mel = official.logmel_extractor.melW.double().numpy()
    assert mel.shape == (513, 64)
    np.testing.assert_allclose(mel, reference_mel(32000, 1024, 64, 50.0, 14000.0).T, rtol=1e-5, atol=1e-8)


def test_front_end_frames_and_image_size(official):
    assert official.config.num_frames == 1001 and official.config.freq_ratio == 4
    image = official.spectrogram_image(torch.randn(1, 32000))
    assert image.shape == (1, 1, 256, 256)


def test_fold_spectrogram_layout():
    frames, mels, size, ratio = 128, 8, 32, 4
    spec = (torch.arange(frames)[:, None] * 1000 + torch.arange(mels)[None, :]).float()[None, None]
    image = fold_spectrogram(spec, size, ratio)[0, 0]
    for band in range(ratio):
        for m in range(mels):
            expected = (band * size + torch.arange(size)) * 1000 + m
            assert torch.equal(image[band * mels + m], expected.float())
    # shorter spectrograms are stretched with align_corners=True: first and last frames are kept exactly
    short = torch.randn(1, 1, 100, mels)
    image = fold_spectrogram(short, size, ratio)[0, 0]
    torch.testing.assert_close(image[:mels, 0], short[0, 0, 0])
    torch.testing.assert_close(image[-mels:, -1], short[0, 0, -1])


def timm_swin_from(model):
    """timm's Swin-V1 with the same weights (timm applies patch merging at the start of the next stage)."""
    timm_swin = pytest.importorskip("timm.models.swin_transformer")
    cfg = model.config
    reference = timm_swin.SwinTransformer(
        img_size=cfg.spec_size, patch_size=cfg.patch_size, in_chans=1, num_classes=0, embed_dim=cfg.embed_dim,
        depths=cfg.depths, num_heads=cfg.num_heads, window_size=cfg.window_size, drop_path_rate=0.0).eval()
    mapped = {}
    for name, value in model.state_dict().items():
        if not name.startswith(("patch_embed.", "layers.", "norm.")):
            continue
        if name.endswith(("relative_position_index", "attn_mask")):
            continue
        parts = name.split(".")
        if parts[0] == "layers" and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) + 1)
        mapped[".".join(parts)] = value
    result = reference.load_state_dict(mapped, strict=False)
    assert not result.unexpected_keys and not result.missing_keys
    return reference


def test_swin_matches_timm_block_by_block(tiny):
    model = build_htsat("htsat_tiny")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # large relative-position biases so that a wrong index or mask shows
        for block in (b for stage in model.layers for b in stage.blocks):
            block.attn.relative_position_bias_table.copy_(
                torch.randn(block.attn.relative_position_bias_table.shape, generator=generator))
    reference = timm_swin_from(model)
    wave = torch.randn(2, 32000, generator=generator)
    image = model.spectrogram_image(wave)
    taps = model.forward_taps(wave, "all")
    with torch.no_grad():
        x = reference.patch_embed(image)
        torch.testing.assert_close(x.flatten(1, 2), model.embed(wave), atol=1e-5, rtol=1e-5)
        index = 0
        for stage in reference.layers:
            x = stage.downsample(x)
            for block in stage.blocks:
                x = block(x)
                torch.testing.assert_close(x.flatten(1, 2), taps[index], atol=1e-5, rtol=1e-5)
                index += 1
        assert index == model.num_blocks
        features = reference.forward_features(image)
        torch.testing.assert_close(features.flatten(1, 2), model.norm(taps[-1]), atol=1e-5, rtol=1e-5)
    # shifted blocks really use masks; the last stage (2x2 grid <= window) does not shift
    assert model.layers[0].blocks[1].attn_mask.shape == (16, 16, 16)
    assert model.layers[3].blocks[1].attn_mask is None and model.layers[3].blocks[1].window == 2


def test_clipwise_output_from_last_tap(tiny):
    wave = torch.randn(3, 32000)
    probabilities = tiny.forward_clipwise(wave)
    assert probabilities.shape == (3, 10)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    cfg = tiny.config
    with torch.no_grad():
        tokens = tiny.norm(tiny.forward_taps(wave, [-1])[0])
        h, w = cfg.stage_grids[-1]
        grid = tokens.transpose(1, 2).reshape(3, -1, h, w)
        rows = h // cfg.freq_ratio
        strip = torch.cat([grid[:, :, band * rows:(band + 1) * rows] for band in range(cfg.freq_ratio)], dim=-1)
        expected = torch.sigmoid(tiny.tscam_conv(strip).mean(dim=(2, 3)))
    torch.testing.assert_close(probabilities, expected)


# 4. tap shapes --------------------------------------------------------------------------------------------------

def test_tiny_tap_shapes(tiny):
    taps = tiny.forward_taps(torch.randn(20, 32000), "all")
    assert len(taps) == tiny.num_blocks == 8
    assert [tuple(t.shape) for t in taps] == [(20, n, d) for n, d in zip(tiny.block_tokens, tiny.block_dims)]
    assert tiny.block_dims == [16, 16, 32, 32, 64, 64, 128, 128]
    assert tiny.block_tokens == [256, 256, 64, 64, 16, 16, 4, 4]


def test_official_tap_shapes(official):
    taps = official.forward_taps(torch.randn(1, 32000), "all")
    assert official.block_dims == [96] * 2 + [192] * 2 + [384] * 6 + [768] * 2
    assert official.block_tokens == [4096] * 2 + [1024] * 2 + [256] * 6 + [64] * 2
    assert [tuple(t.shape) for t in taps] == [(1, n, d) for n, d in zip(official.block_tokens, official.block_dims)]
    assert official.forward_clipwise(torch.randn(1, 320000)).shape == (1, 527)


def test_segment_is_tiled_to_clip():
    model = build_htsat("htsat_tiny", clip_seconds=2, hop_length=640)
    segment = torch.randn(2, 32000)
    torch.testing.assert_close(model.embed(segment), model.embed(segment.repeat(1, 2)))
    torch.testing.assert_close(model.embed(segment[:, None]), model.embed(segment))


def test_avs_config_is_valid():
    config = HTSAT_PRESETS["htsat_audioset"]
    assert HTSATConfig(clip_seconds=5).num_frames == 501 and config.target_frames == 1024
    with pytest.raises(ValueError, match="frames"):
        HTSATConfig(clip_seconds=11)
    with pytest.raises(ValueError, match="heads"):
        HTSATConfig(num_heads=(5, 8, 16, 32))


# 5. frozen, always eval -----------------------------------------------------------------------------------------

def test_frozen_and_eval_inside_training_parent():
    backbone = build_htsat("htsat_tiny")
    with torch.no_grad():
        backbone.bn0.running_mean.fill_(3.0)
        backbone.bn0.running_var.fill_(4.0)
    parent = nn.ModuleDict({"audio": backbone, "head": nn.Linear(128, 2)})
    parent.train()
    assert parent.training and parent["head"].training
    assert not backbone.training and not backbone.bn0.training
    assert not any(m.training for m in backbone.modules())
    assert not any(p.requires_grad for p in backbone.parameters())
    taps = backbone.forward_taps(torch.randn(4, 32000), "late")
    assert all(not t.requires_grad and t.grad_fn is None for t in taps)
    assert torch.all(backbone.bn0.running_mean == 3.0) and torch.all(backbone.bn0.running_var == 4.0)
    assert backbone.bn0.num_batches_tracked.item() == 0


# 6. early stop -----------------------------------------------------------------------------------------------------

def test_early_stop_runs_fewer_blocks(tiny, monkeypatch):
    calls = []
    original = tiny.run_block

    def counting(index, tokens):
        calls.append(index)
        return original(index, tokens)

    monkeypatch.setattr(tiny, "run_block", counting)
    wave = torch.randn(1, 32000)
    tiny.forward_taps(wave, [0])
    assert calls == [0]
    calls.clear()
    tiny.forward_taps(wave, [-1])
    assert calls == list(range(tiny.num_blocks))


# 7. bad input --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("samples", [31999, 16000, 64000])
def test_wrong_length_rejected(tiny, samples):
    with pytest.raises(ValueError, match="32000 samples"):
        tiny.forward_taps(torch.randn(1, samples), "late")


def test_wrong_shape_and_dtype_rejected(tiny):
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        tiny.embed(torch.randn(2, 2, 32000))
    with pytest.raises(ValueError, match="float"):
        tiny.embed(torch.zeros(1, 32000, dtype=torch.int16))


def test_check_sample_rate():
    check_sample_rate(32000, 32000)
    with pytest.raises(ValueError, match=r"clip\.wav.*16000 Hz.*32000 Hz"):
        check_sample_rate(16000, 32000, source="clip.wav")
    with pytest.raises(ValueError):
        check_sample_rate(0, 32000)


def test_unknown_preset():
    with pytest.raises(ValueError, match="htsat_audioset"):
        build_htsat("htsat_huge")
