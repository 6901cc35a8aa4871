"""Generic timm backbone: per-block patch-token taps of ViT / DINOv2 / SigLIP / EVA-02 / Swin-V2, sub-layers,
weights."""
import hashlib

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from molt.backbones.swin_v2 import SWIN_V2_PRESETS, SwinV2Backbone
from molt.backbones.timm_image import TimmBackbone

TINY = dict(depth=3, embed_dim=32, num_heads=2)
# name -> (timm name, overrides, prefix tokens, grid side)
MODELS = {
    "vit": ("vit_small_patch16_224", dict(TINY, img_size=32), 1, 2),
    "dinov2_reg": ("vit_small_patch14_reg4_dinov2", dict(TINY, img_size=42), 5, 3),
    "siglip": ("vit_base_patch16_siglip_224", dict(TINY, img_size=48), 0, 3),
    "eva02": ("eva02_tiny_patch14_224", dict(TINY, img_size=28), 1, 2),
}
SWIN = SWIN_V2_PRESETS["swinv2_tiny_test"]


def _build(key, **kwargs):
    name, overrides, _, _ = MODELS[key]
    return TimmBackbone(name, **overrides, **kwargs)


@pytest.fixture(scope="module")
def backbones():
    torch.manual_seed(0)
    return {key: _build(key) for key in MODELS}


@pytest.fixture(scope="module")
def swin_pair():
    torch.manual_seed(0)
    ours = SwinV2Backbone("swinv2_tiny_test")
    generic = TimmBackbone(SWIN.model_name, **SWIN.overrides)
    generic.model.load_state_dict(ours.model.state_dict())
    return ours, generic


def _images(backbone, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return backbone.preprocess(torch.rand(batch, 3, 40, 56, generator=generator))


def _walk(backbone, x):
    with torch.no_grad():
        tokens, taps = backbone.embed(x), []
        for index in range(backbone.num_blocks):
            tokens = backbone.run_block(index, tokens)
            taps.append(backbone.to_sequence(tokens))
    return taps


@pytest.mark.parametrize("key", list(MODELS))
def test_taps_are_patch_tokens_equal_to_timm_intermediates(backbones, key):
    backbone = backbones[key]
    _, _, prefix, side = MODELS[key]
    assert backbone.name == f"timm:{MODELS[key][0]}" and backbone.timm_name == MODELS[key][0]
    assert backbone.num_prefix_tokens == prefix
    assert backbone.block_grids == [(side, side)] * 3 and backbone.block_tokens == [side * side] * 3
    assert backbone.block_dims == [32] * 3 and backbone.stage_end_blocks == [2]
    x = _images(backbone)
    taps = backbone.forward_taps(x, "all")
    with torch.no_grad():  # timm drops the prefix tokens of its intermediates too (norm=False: raw block outputs)
        reference = backbone.model.forward_intermediates(x, indices=[0, 1, 2], norm=False, output_fmt="NLC",
                                                         intermediates_only=True)
    for tap, expected in zip(taps, reference):
        assert tap.shape == (2, side * side, 32) and tap.dtype == torch.float32
        torch.testing.assert_close(tap, expected, rtol=0, atol=1e-6)
    assert backbone.forward_taps(x, [1])[0].shape == (2, side * side, 32)
    assert not torch.allclose(taps[0], taps[2])  # random blocks do transform the tokens


def test_swin_v2_generic_path_equals_swin_v2_backbone(swin_pair):
    ours, generic = swin_pair
    assert generic.has_sublayers and generic.input_size == ours.input_size == (64, 64)
    assert (generic.block_dims, generic.block_tokens) == (ours.block_dims, ours.block_tokens)
    assert generic.stage_end_blocks == ours.stage_end_blocks == [1, 3, 5, 7]
    assert generic.block_grids == [(16, 16)] * 2 + [(8, 8)] * 2 + [(4, 4)] * 2 + [(2, 2)] * 2
    frames = torch.randint(0, 256, (2, 3, 50, 70), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    theirs = ours.forward_taps(ours.preprocess(frames), "all")  # ours normalises in embed, the generic one before
    mine = generic.forward_taps(generic.preprocess(frames), "all")
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    x = generic.preprocess(frames)
    for index in (0, 2, 5):  # a stage-opening block (patch merging first), and a later one
        tokens = generic.embed(x)
        for before in range(index):
            tokens = generic.run_block(before, tokens)
        entered = generic.enter_block(index, tokens)
        assert torch.equal(entered, ours.enter_block(index, tokens))
        for method in ("attention_sublayer", "mlp_sublayer"):
            assert torch.equal(getattr(generic, method)(index, entered), getattr(ours, method)(index, entered))


def test_random_swin_v2_blocks_are_not_identities(swin_pair):
    _, generic = swin_pair
    fresh = TimmBackbone(SWIN.model_name, **SWIN.overrides)
    assert all(bool((block.norm1.weight == 1).all()) for block in fresh.block_modules())
    taps = generic.forward_taps(_images(generic), [0, 1])
    assert not torch.allclose(taps[0], taps[1])


@pytest.mark.parametrize("key", ["vit", "dinov2_reg", "siglip", "swin"])
def test_sublayers_compose_to_the_block_and_walk_equals_hooks(backbones, swin_pair, key):
    backbone = swin_pair[1] if key == "swin" else backbones[key]
    assert backbone.has_sublayers
    x = _images(backbone)
    with torch.no_grad():
        tokens = backbone.embed(x)
        for index in range(backbone.num_blocks):
            block = backbone.block_modules()[index]
            entered = backbone.enter_block(index, tokens)
            split = backbone.mlp_sublayer(index, backbone.attention_sublayer(index, entered))
            whole = backbone.run_block(index, tokens)
            assert torch.equal(split, whole) and torch.equal(whole, block(entered))
            tokens = whole
    walked = _walk(backbone, x)
    hooked = backbone.forward_taps(x, "all")
    assert len(walked) == len(hooked) == backbone.num_blocks
    assert all(torch.equal(a, b) for a, b in zip(walked, hooked))


def test_eva02_has_no_sublayers_but_taps(backbones):
    eva = backbones["eva02"]
    assert eva.has_sublayers is False and TimmBackbone.has_sublayers is True
    x = _images(eva)
    for call in (lambda: eva.enter_block(0, x), lambda: eva.attention_sublayer(0, x), lambda: eva.embed(x)):
        with pytest.raises(NotImplementedError, match="does not expose its blocks' sub-layers"):
            call()
    assert len(eva.forward_taps(x, "all")) == 3


def test_forward_taps_stops_after_the_last_selected_block(backbones):
    vit = backbones["vit"]
    calls = []
    handles = [block.register_forward_hook(lambda module, args, out, i=i: calls.append(i))
               for i, block in enumerate(vit.block_modules())]
    try:
        vit.forward_taps(_images(vit), [1])
        assert calls == [0, 1]
        calls.clear()
        vit.forward_taps(_images(vit), "all")
        assert calls == [0, 1, 2]
    finally:
        for handle in handles:
            handle.remove()
    # no hook of the backbone stays behind, and no graph is kept
    assert all(not block._forward_hooks for block in vit.block_modules())
    assert all(t.grad_fn is None for t in vit.forward_taps(_images(vit), "all"))


@pytest.mark.parametrize("key", ["vit", "dinov2_reg", "eva02", "swin"])
def test_meta_build_has_the_cpu_build_shapes(backbones, swin_pair, key):
    cpu = swin_pair[1] if key == "swin" else backbones[key]
    with torch.device("meta"):
        meta = TimmBackbone(SWIN.model_name, **SWIN.overrides) if key == "swin" else _build(key)
    assert meta.is_meta and not cpu.is_meta
    for attribute in ("block_dims", "block_tokens", "block_grids", "input_size", "name", "has_sublayers",
                      "stage_end_blocks"):
        assert getattr(meta, attribute) == getattr(cpu, attribute), attribute


def test_meta_build_reads_no_weights(tmp_path):
    path = tmp_path / "not_a_checkpoint.safetensors"
    path.write_bytes(b"garbage")
    with torch.device("meta"):
        meta = _build("vit", weights=path)
    assert meta.is_meta and meta.weights_path == str(path)
    with torch.device("meta"):  # hub weights asked for: nothing is fetched, the tag is reported
        hub = TimmBackbone("vit_small_patch16_224.augreg_in21k", pretrained=True, **MODELS["vit"][1])
    assert hub.is_meta and hub.tag == "augreg_in21k" and hub.weights_hash() is None


def test_preprocess_resizes_and_normalises(backbones):
    siglip, dinov2 = backbones["siglip"], backbones["dinov2_reg"]
    frames = torch.randint(0, 256, (2, 3, 100, 70), dtype=torch.uint8)
    images = siglip.preprocess(frames)
    assert images.shape == (2, 3, 48, 48) and images.dtype == torch.float32
    assert siglip.mean.flatten().tolist() == [0.5] * 3 and siglip.interpolation == "bicubic"
    assert images.min() >= -1.0 and images.max() <= 1.0                     # [0, 1] clamped, then (x - .5) / .5
    same_size = torch.randint(0, 256, (1, 3, 42, 42), dtype=torch.uint8)
    expected = (same_size.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) \
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(dinov2.preprocess(same_size), expected)
    torch.testing.assert_close(dinov2.preprocess(same_size.float() / 255), expected)
    assert "mean" not in dinov2.state_dict() and "std" not in dinov2.state_dict()  # non-persistent buffers
    with pytest.raises(ValueError, match=r"\(B, 3, 42, 42\)"):
        dinov2.forward_taps(torch.rand(1, 3, 32, 32), "all")
    with pytest.raises(ValueError, match="float"):
        dinov2.forward_taps(torch.zeros(1, 3, 42, 42, dtype=torch.uint8), "all")


@pytest.mark.parametrize("key", ["vit", "eva02"])
def test_bfloat16_compute_gives_float32_taps_close_to_float32(key):
    torch.manual_seed(3)
    full, half = _build(key), _build(key)
    half.model.load_state_dict(full.model.state_dict())
    half.set_compute_dtype("bfloat16")
    x = _images(full)
    reference, taps = full.forward_taps(x, "all"), half.forward_taps(x, "all")
    assert next(half.model.parameters()).dtype == torch.bfloat16 and half.mean.dtype == torch.float32
    for tap, expected in zip(taps, reference):
        assert tap.dtype == torch.float32
        assert (tap - expected).norm() / expected.norm() < 0.05


def _save(model, path):
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_weights_file_and_folder(backbones, tmp_path):
    source = backbones["dinov2_reg"]
    x = _images(source)
    expected = source.forward_taps(x, "all")
    digest = _save(source.model, tmp_path / "dinov2.safetensors")
    from_file = _build("dinov2_reg", weights=tmp_path / "dinov2.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(from_file.forward_taps(x, "all"), expected))
    assert from_file.weights_hash() == digest and from_file.weights_path == str(tmp_path / "dinov2.safetensors")
    assert from_file.tag == "" and source.weights_hash() is None and source.weights_path is None
    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    digest = _save(source.model, folder / "model.safetensors")
    from_folder = _build("dinov2_reg", weights=folder, name="dinov2")
    assert from_folder.name == "dinov2" and from_folder.weights_hash() == digest
    assert from_folder.weights_path == str(folder / "model.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(from_folder.forward_taps(x, "all"), expected))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors, pytorch_model.bin") as error:
        _build("dinov2_reg", weights=empty)
    assert str(empty) in str(error.value)


def test_weights_of_another_architecture_are_refused(backbones, tmp_path):
    _save(backbones["vit"].model, tmp_path / "vit.safetensors")
    with pytest.raises(ValueError, match="size mismatch") as error:  # same keys, other widths
        TimmBackbone("vit_small_patch16_224", weights=tmp_path / "vit.safetensors", depth=3, embed_dim=48,
                     num_heads=2, img_size=32)
    assert str(tmp_path / "vit.safetensors") in str(error.value)
    with pytest.raises(ValueError, match="not in the file") as error:  # a deeper model: blocks left unset
        TimmBackbone("vit_small_patch16_224", weights=tmp_path / "vit.safetensors", depth=4, embed_dim=32,
                     num_heads=2, img_size=32)
    assert "vit.safetensors" in str(error.value) and "blocks.3" in str(error.value)


def test_unknown_name_and_missing_hub_weights_are_one_line_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="vit_smal_patch16_224") as error:
        TimmBackbone("vit_smal_patch16_224")
    assert "vit_small_patch16_224" in str(error.value) and "\n" not in str(error.value)  # a close name
    assert TimmBackbone("timm:vit_small_patch16_224", **MODELS["vit"][1]).timm_name == "vit_small_patch16_224"
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--visual-weights") as error:
        TimmBackbone("vit_small_patch16_224.augreg_in21k", pretrained=True, **MODELS["vit"][1])
    assert "vit_small_patch16_224" in str(error.value) and "\n" not in str(error.value)


def test_model_without_feature_info_is_refused(monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    model.pretrained_cfg = {"input_size": (3, 32, 32)}
    monkeypatch.setattr(timm, "create_model", lambda *args, **kwargs: model)
    with pytest.raises(ValueError, match="no per-block intermediate outputs; use a transformer such as"):
        TimmBackbone("resnet18")


def test_layer_analysis_reads_the_blocks_of_any_timm_backbone(backbones, swin_pair):
    from molt.app.analysis.layers import block_modules, layer_similarity

    eva, swin = backbones["eva02"], swin_pair[1]
    assert block_modules(eva) == eva.block_modules() == list(eva.model.blocks)
    assert block_modules(swin) == [block for stage in swin.model.layers for block in stage.blocks]
    frames = torch.randint(0, 256, (3, 3, 30, 30), dtype=torch.uint8)
    result = layer_similarity(eva, frames, batch_size=2)  # hooks on the blocks see the prefix token too
    assert result.num_blocks == 3 and result.tokens == [5, 5, 5] and result.dims == [32] * 3
    assert all(-1.0 <= value <= 1.0 for value in result.similarity)
    assert layer_similarity(swin, frames).stages == [0, 0, 1, 1, 2, 2, 3, 3]
