"""HFAudioBackbone: transformers audio encoders (AST, Whisper, wav2vec2, CLAP) as tap backbones, from tiny models
saved to folders (no network)."""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import shutil
import sys

import pytest
import torch

pytest.importorskip("transformers")

import hf_models  # noqa: E402  (tests/ is on pytest's pythonpath)
from molt.backbones.hf_audio import INSTALL_HINT, HFAudioBackbone, resample_fft  # noqa: E402

SAVERS = {"ast": hf_models.save_tiny_ast, "whisper": hf_models.save_tiny_whisper,
          "wav2vec2": hf_models.save_tiny_wav2vec2, "clap": hf_models.save_tiny_clap}


def _offline(patch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)   # read once, when the hub client is imported


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The tiny models, each saved once in a folder of its own."""
    root = tmp_path_factory.mktemp("hf_models")
    return {family: save(root / family) for family, save in SAVERS.items()}


@pytest.fixture(scope="module")
def backbones(folders):
    """One backbone per tiny model, loaded offline from its folder (tests must not change them)."""
    with pytest.MonkeyPatch.context() as patch:
        _offline(patch)
        return {family: HFAudioBackbone(str(folder)) for family, folder in folders.items()}


@pytest.fixture(scope="module")
def waveform():
    return torch.randn(2, 32000, generator=torch.Generator().manual_seed(0)) * 0.3


def _hidden_states(backbone, x, **kwargs):
    with torch.no_grad():
        return backbone.encoder(**backbone._model_inputs(x), output_hidden_states=True, **kwargs).hidden_states


# --------------------------------------------------------------------------------------------------- front end

@pytest.mark.parametrize("target", [16000, 48000, 44100])
def test_resample_fft_keeps_a_sine(target):
    rate, frequency = 32000, 1000.0
    t = torch.arange(rate, dtype=torch.float64) / rate
    out = resample_fft(torch.sin(2 * math.pi * frequency * t)[None].float(), rate, target)[0].double()
    assert out.shape == (target,)
    expected = torch.sin(2 * math.pi * frequency * torch.arange(target, dtype=torch.float64) / target)
    assert (out - expected).abs().max() < 0.01                                    # amplitude and phase within 1 %
    spectrum = torch.fft.rfft(out).abs()
    assert int(spectrum.argmax()) == int(frequency)                               # 1-Hz bins over 1 s
    assert abs(float(spectrum.max()) / (target / 2) - 1.0) < 0.01


def test_resample_fft_is_band_limited_and_matches_scipy():
    scipy_signal = pytest.importorskip("scipy.signal")
    t = torch.arange(32000, dtype=torch.float64) / 32000
    high = torch.sin(2 * math.pi * 12000 * t)[None].float()                       # above 8 kHz: must vanish at 16 kHz
    assert resample_fft(high, 32000, 16000).abs().max() < 1e-4
    noise = torch.randn(3, 32000, generator=torch.Generator().manual_seed(1))
    for target in (16000, 48000, 22050):
        ours = resample_fft(noise, 32000, target)
        theirs = torch.from_numpy(scipy_signal.resample(noise.double().numpy(), target, axis=-1))
        torch.testing.assert_close(ours.double(), theirs, atol=1e-4, rtol=0)
    assert resample_fft(noise, 32000, 32000) is noise


def test_tiling_gives_the_extractor_its_window_exactly(backbones, waveform, monkeypatch):
    ast, whisper, wav2vec2 = backbones["ast"], backbones["whisper"], backbones["wav2vec2"]
    assert (ast.window_samples, ast.window_policy) == (20720, "tile to 1.295 s")
    assert 1 + (ast.window_samples - 400) // 160 == 128 > 1 + (ast.window_samples - 401) // 160   # max_length frames
    assert (whisper.window_samples, whisper.window_policy) == (32000, "tile to 2 s")
    assert (wav2vec2.window_samples, wav2vec2.window_policy) == (None, "segment as is")
    assert backbones["clap"].window_samples == 96000 and backbones["clap"].feature_sampling_rate == 48000
    expected_shapes = {"ast": (2, 128, 32), "whisper": (2, 16, 200), "wav2vec2": (2, 16000),
                       "clap": (2, 1, 201, 16)}
    for family, backbone in backbones.items():
        extractor, lengths = backbone.feature_extractor, []

        def spy(rows, *args, _extractor=extractor, _lengths=lengths, **kwargs):
            _lengths.extend(len(row) for row in rows)
            return _extractor(rows, *args, **kwargs)

        monkeypatch.setattr(backbone, "feature_extractor", spy)
        x = backbone.preprocess(waveform)
        monkeypatch.undo()
        segment = backbone.feature_sampling_rate
        assert lengths == [backbone.window_samples or segment] * 2, family
        assert tuple(x.shape) == expected_shapes[family] and x.dtype == torch.float32, family
    tiled = whisper.prepare_waveform(waveform)
    torch.testing.assert_close(tiled[:, 16000:], tiled[:, :16000], atol=0, rtol=0)
    torch.testing.assert_close(tiled[:, :16000], resample_fft(waveform, 32000, 16000), atol=0, rtol=0)
    tiled = ast.prepare_waveform(waveform)
    torch.testing.assert_close(tiled[:, 16000:], tiled[:, :4720], atol=0, rtol=0)        # a partial last tile
    with pytest.raises(ValueError, match="window"):
        whisper.preprocess(torch.zeros(1, 3 * 32000))


# -------------------------------------------------------------------------------------------------------- taps

@pytest.mark.parametrize("family", ["ast", "whisper", "wav2vec2"])
def test_taps_are_the_hidden_states(backbones, waveform, family):
    backbone = backbones[family]
    x = backbone.preprocess(waveform)
    taps = backbone.forward_taps(x, "all")
    assert [tuple(tap.shape) for tap in taps] == [(2, n, d) for n, d in zip(backbone.block_tokens,
                                                                           backbone.block_dims)]
    assert all(tap.dtype == torch.float32 and not tap.requires_grad for tap in taps)
    hidden = _hidden_states(backbone, x)
    assert len(hidden) == backbone.num_blocks + 1
    for index, tap in enumerate(taps[:-1]):
        torch.testing.assert_close(tap, hidden[index + 1], atol=1e-6, rtol=0)
    # the tap is the last layer's own output; some models' last hidden state has the encoder's final norm applied
    # (Whisper; AST in transformers 4.57)
    norm = {"ast": "layernorm", "whisper": "layer_norm"}.get(family)
    candidates = [taps[-1]] + ([getattr(backbone.encoder, norm)(taps[-1])] if norm else [])
    assert any(torch.allclose(candidate, hidden[-1], atol=1e-6, rtol=0) for candidate in candidates)
    expected = {"ast": ([26, 26], [32, 32]), "whisper": ([100, 100], [32, 32]), "wav2vec2": ([200, 200], [32, 32])}
    assert (backbone.block_tokens, backbone.block_dims) == expected[family]


def test_clap_taps_every_swin_block(backbones, waveform):
    clap = backbones["clap"]
    assert clap.layer_names == ["audio_encoder.layers.0.blocks.0", "audio_encoder.layers.1.blocks.0"]
    assert (clap.block_tokens, clap.block_dims, clap.has_sublayers) == ([256, 64], [8, 16], False)
    x = clap.preprocess(waveform)
    taps = clap.forward_taps(x, "all")
    with torch.no_grad():                    # (B, C, H, W) per stage
        hidden = clap.encoder.audio_encoder(x, output_hidden_states=True,
                                            output_hidden_states_before_downsampling=True).hidden_states
    for tap, stage in zip(taps, hidden[1:]):
        torch.testing.assert_close(tap, stage.flatten(2).transpose(1, 2), atol=1e-6, rtol=0)


def test_forward_stops_after_the_last_selected_layer(backbones, waveform):
    backbone = backbones["ast"]
    x = backbone.preprocess(waveform)
    calls = []
    hooks_before = [len(layer._forward_hooks) for layer in backbone._layers]
    handle = backbone._layers[1].register_forward_hook(lambda *args: calls.append(1))
    final_norm = backbone.encoder.layernorm.register_forward_hook(lambda *args: calls.append(2))
    try:
        (first,) = backbone.forward_taps(x, [0])
        assert calls == []
        both = backbone.forward_taps(x, "all")
        assert calls == [1]                                     # the final layer norm does not run either
    finally:
        handle.remove()
        final_norm.remove()
    torch.testing.assert_close(first, both[0], atol=0, rtol=0)
    assert [len(layer._forward_hooks) for layer in backbone._layers] == hooks_before     # the taps' hooks are gone


def test_bfloat16_taps(folders, waveform, monkeypatch):
    _offline(monkeypatch)
    for family in ("ast", "wav2vec2"):
        backbone = HFAudioBackbone(str(folders[family]))
        x = backbone.preprocess(waveform)
        reference = backbone.forward_taps(x, "all")
        backbone.set_compute_dtype("bfloat16")
        assert next(backbone.encoder.parameters()).dtype == torch.bfloat16
        for tap, ref in zip(backbone.forward_taps(x, "all"), reference):
            assert tap.dtype == torch.float32
            assert float((tap - ref).norm() / ref.norm()) < 0.05


# -------------------------------------------------------------------------------------------------- sub-layers

@pytest.mark.parametrize("family", ["ast", "whisper"])
def test_sublayers_compose_to_the_layers(backbones, waveform, family):
    backbone = backbones[family]
    assert backbone.has_sublayers and backbone.family == family
    x = backbone.preprocess(waveform)
    hidden = _hidden_states(backbone, x)
    tokens = backbone.embed(x)
    torch.testing.assert_close(tokens, hidden[0], atol=0, rtol=0)
    taps = backbone.forward_taps(x, "all")
    for index in range(backbone.num_blocks):
        entered = backbone.enter_block(index, tokens)
        assert entered is tokens
        split = backbone.mlp_sublayer(index, backbone.attention_sublayer(index, entered))
        whole = backbone.run_block(index, tokens)
        layer = backbone._layers[index]
        required = [name for name, parameter in list(inspect.signature(layer.forward).parameters.items())[1:]
                    if parameter.default is inspect.Parameter.empty and parameter.kind is not parameter.VAR_KEYWORD]
        own = layer(tokens, **dict.fromkeys(required))          # attention_mask (and 4.x's layer_head_mask): None
        own = own[0] if isinstance(own, tuple) else own
        assert torch.equal(split, whole) and torch.equal(whole, own)
        assert torch.equal(backbone.to_sequence(whole), taps[index])
        tokens = whole


@pytest.mark.parametrize("family", ["wav2vec2", "clap"])
def test_other_families_have_no_sublayers(backbones, waveform, family):
    backbone = backbones[family]
    assert backbone.has_sublayers is False and type(backbone).has_sublayers is True
    with pytest.raises(NotImplementedError, match="sub-layers"):
        backbone.embed(backbone.preprocess(waveform))
    with pytest.raises(NotImplementedError, match="sub-layers"):
        backbone.attention_sublayer(0, torch.zeros(1, 4, backbone.block_dims[0]))


# ------------------------------------------------------------------------------------------- building, weights

@pytest.mark.parametrize("family", sorted(SAVERS))
def test_meta_build_reads_no_weights_and_has_the_same_shapes(backbones, folders, family, monkeypatch):
    import transformers

    _offline(monkeypatch)

    def refuse(*args, **kwargs):
        raise AssertionError("a meta build must not read weights")
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refuse)
    with torch.device("meta"):
        meta = HFAudioBackbone(str(folders[family]))
    built = backbones[family]
    assert meta.is_meta and not built.is_meta
    assert (meta.block_dims, meta.block_tokens) == (built.block_dims, built.block_tokens)
    assert (meta.layer_names, meta.weights_path, meta.has_sublayers) == (built.layer_names, built.weights_path,
                                                                          built.has_sublayers)
    assert meta.weights_hash() == built.weights_hash()


def test_weights_hash_and_random_init(backbones, folders, tmp_path, monkeypatch):
    _offline(monkeypatch)
    ast = backbones["ast"]
    weights = folders["ast"] / "model.safetensors"
    assert ast.weights_path == str(folders["ast"]) and ast.tag == "" and ast.name == f"hf:{folders['ast']}"
    assert ast.weights_hash() == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert all(not p.requires_grad for p in ast.parameters()) and not ast.train().training

    sharded = tmp_path / "sharded"           # sharded weights: the shards hashed together in sorted order
    shutil.copytree(folders["whisper"], sharded)
    from transformers import WhisperForConditionalGeneration
    WhisperForConditionalGeneration.from_pretrained(sharded).save_pretrained(sharded, max_shard_size="40KB")
    (sharded / "model.safetensors").unlink(missing_ok=True)
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) > 1
    whisper = HFAudioBackbone(str(sharded))
    assert whisper.weights_hash() == hashlib.sha256(b"".join(s.read_bytes() for s in shards)).hexdigest()
    torch.testing.assert_close(dict(whisper.named_parameters()), dict(backbones["whisper"].named_parameters()))

    first = HFAudioBackbone(str(folders["ast"]), random_init=True, init_seed=3, name="ast-random")
    second = HFAudioBackbone(str(folders["ast"]), random_init=True, init_seed=3)
    other = HFAudioBackbone(str(folders["ast"]), random_init=True, init_seed=4)
    assert first.name == "ast-random" and first.weights_hash() is None and first.weights_path is None
    config, extractor = hf_models.tiny_ast_objects()
    in_memory = HFAudioBackbone.from_objects(config, extractor, name="tiny-ast", init_seed=3)
    assert (in_memory.name, in_memory.block_tokens, in_memory.weights_hash()) == ("tiny-ast", [26, 26], None)
    weight = {key: next(b._layers[0].parameters()) for key, b in
              {"first": first, "second": second, "other": other, "ast": ast, "in_memory": in_memory}.items()}
    assert torch.equal(weight["first"], weight["second"]) and torch.equal(weight["first"], weight["in_memory"])
    assert not torch.equal(weight["first"], weight["other"]) and not torch.equal(weight["first"], weight["ast"])


def test_hub_cache_snapshot_gives_tag_and_hash(folders, tmp_path, monkeypatch):
    import huggingface_hub.constants

    _offline(monkeypatch)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--molt-test--tiny-ast"
    shutil.copytree(folders["ast"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("transformers.utils.hub.TRANSFORMERS_CACHE", str(tmp_path / "hub"), raising=False)  # 4.x
    backbone = HFAudioBackbone("molt-test/tiny-ast")
    assert (backbone.name, backbone.tag) == ("hf:molt-test/tiny-ast", commit)
    assert backbone.weights_path == str(repo / "snapshots" / commit)
    assert backbone.weights_hash() == hashlib.sha256((folders["ast"] / "model.safetensors").read_bytes()).hexdigest()
    assert HFAudioBackbone("molt-test/tiny-ast", random_init=True).tag == ""
    with pytest.raises(FileNotFoundError, match=r"hf:molt-test/not-cached: .*download it once online, or pass a "
                                                r"local folder: hf:/path/to/folder"):
        HFAudioBackbone("molt-test/not-cached")


def test_refusals(folders, tmp_path, monkeypatch):
    _offline(monkeypatch)
    bert = hf_models.save_tiny_bert(tmp_path / "bert")
    with pytest.raises(ValueError, match=rf"hf:{bert}: BertModel is not an audio encoder") as error:
        HFAudioBackbone(str(bert))
    assert "\n" not in str(error.value)
    missing = tmp_path / "no" / "such-folder"
    with pytest.raises(FileNotFoundError, match=f"hf:{missing}: no such folder"):
        HFAudioBackbone(str(missing))
    mixed = tmp_path / "mixed"               # an AST config with wav2vec2 weights
    shutil.copytree(folders["ast"], mixed)
    shutil.copy(folders["wav2vec2"] / "model.safetensors", mixed / "model.safetensors")
    with pytest.raises(ValueError, match=rf"the weights in {mixed} do not fit its config") as error:
        HFAudioBackbone(str(mixed))
    assert "\n" not in str(error.value)
    resized = tmp_path / "resized"           # the config says other shapes than the weights have
    shutil.copytree(folders["ast"], resized)
    config = json.loads((resized / "config.json").read_text())
    (resized / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    with pytest.raises(ValueError, match=rf"the weights in {resized} do not fit its config"):
        HFAudioBackbone(str(resized))
    custom = tmp_path / "custom_code"         # a model that needs its own code (EAT, BEATs ports): refused, never run
    custom.mkdir()
    (custom / "config.json").write_text(json.dumps({"model_type": "eat", "auto_map": {
        "AutoConfig": "configuration_eat.EATConfig", "AutoModel": "modeling_eat.EATModel"}}))
    (custom / "configuration_eat.py").write_text("raise SystemExit('custom code ran')\n")
    with pytest.raises(ValueError, match=rf"hf:{custom}: .*custom code"):
        HFAudioBackbone(str(custom))
    no_extractor = tmp_path / "no_extractor"
    shutil.copytree(folders["ast"], no_extractor)
    (no_extractor / "preprocessor_config.json").unlink()
    with pytest.raises(ValueError, match=rf"{no_extractor}"):
        HFAudioBackbone(str(no_extractor))


def test_missing_transformers_gives_the_install_hint(folders, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=f"^{INSTALL_HINT}$".replace("[", r"\[").replace("]", r"\]")):
        HFAudioBackbone(str(folders["ast"]))
    with pytest.raises(ImportError, match="pip install 'molt-av"):
        HFAudioBackbone.from_objects(None, None, name="x")


@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")
def test_real_size_configs_on_meta():
    """Shapes of the real default configs, built on the meta device (no memory, no weights)."""
    from transformers import ASTConfig, ASTFeatureExtractor, WhisperConfig, WhisperFeatureExtractor

    with torch.device("meta"):
        ast = HFAudioBackbone.from_objects(ASTConfig(), ASTFeatureExtractor(), name="ast")
        whisper = HFAudioBackbone.from_objects(WhisperConfig(), WhisperFeatureExtractor(), name="whisper")
    assert (ast.block_tokens, ast.block_dims, ast.window_samples) == ([1214] * 12, [768] * 12, 164080)
    assert (whisper.block_tokens, whisper.window_samples, whisper.window_policy) == ([1500] * 4, 480000, "tile to 30 s")


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_hubert_and_wavlm_are_tapped_like_wav2vec2(family, waveform):
    """The other wav2vec2-style encoders: the segment as it is, taps equal the hidden states, no sub-layers."""
    import transformers

    kind = {"hubert": transformers.HubertConfig, "wavlm": transformers.WavLMConfig}[family]
    config = kind(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(16, 16), conv_stride=(10, 8), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=2, vocab_size=16)
    extractor = transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000)
    backbone = HFAudioBackbone.from_objects(config, extractor, name=f"hf:tiny-{family}")
    assert backbone.window_samples is None and not backbone.has_sublayers
    x = backbone.preprocess(waveform)
    taps = backbone.forward_taps(x, "all")
    hidden = _hidden_states(backbone, x)
    assert [tuple(tap.shape) for tap in taps] == [(2, 200, 32)] * 2
    torch.testing.assert_close(taps[0], hidden[1], atol=1e-6, rtol=0)
