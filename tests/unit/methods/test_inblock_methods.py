"""In-block methods (LAVisH, DG-SCT, AVMoE): sub-layer split, placement, identity at zero gates, gradients through
the frozen blocks, per-task settings, paper-scale sizes."""
import pytest
import torch
from helpers import backward_and_check_side_gradients

from molt.backbones import build_backbones
from molt.config import ExperimentConfig, load_config, switch_method
from molt.methods import (AVMoE, DGSCT, AVMoEConfig, DGSCTConfig, InBlockModel, Lavish, LavishConfig, MethodModel,
                          TapReadingModel, adapter_positions, build_method, get_method, latent_token_attention)
from molt.model import build_model

IN_BLOCK = ["lavish", "dgsct", "avmoe"]
SMALL = {"dim": 16, "out_heads": 4, "num_tokens": 3, "num_latents": 2, "reduction": 4}


@pytest.fixture(scope="module", params=["tiny", "tiny-shared"])
def backbones(request):
    return build_backbones(request.param)


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 64, 64, generator=generator), 0.1 * torch.randn(2, 32000, generator=generator)


def _model(backbones, method, **overrides):
    visual, audio = backbones
    torch.manual_seed(0)
    config = {**SMALL, **({"skip_stages": []} if method == "avmoe" else {}), **overrides}
    spec = get_method(method)
    trainable, visual_blocks, audio_blocks = build_method(spec, spec.config_class(**config), visual, audio)
    return spec.wrapper(visual=visual, audio=audio, method=trainable, visual_blocks=visual_blocks,
                        audio_blocks=audio_blocks)


def _open_gates(model, value=0.5):
    with torch.no_grad():
        for name, parameter in model.method.named_parameters():
            if name.endswith(("gate", "gate_cross")):
                parameter.fill_(value)


def test_sublayers_compose_to_the_block(backbones, inputs):
    for backbone, x in zip(backbones, inputs):
        tokens = backbone.embed(backbone.preprocess(x) if hasattr(backbone, "preprocess") else x)
        for index in range(backbone.num_blocks):
            entered = backbone.enter_block(index, tokens)
            split = backbone.mlp_sublayer(index, backbone.attention_sublayer(index, entered))
            tokens = backbone.run_block(index, tokens)
            torch.testing.assert_close(split, tokens, rtol=0, atol=0)


def test_positions_pair_stage_by_stage_as_dgsct():
    swin_dims = [192] * 2 + [384] * 2 + [768] * 18 + [1536] * 2
    swin_tokens = [2304] * 2 + [576] * 2 + [144] * 18 + [36] * 2
    htsat_dims = [96] * 2 + [192] * 2 + [384] * 6 + [768] * 2
    htsat_tokens = [4096] * 2 + [1024] * 2 + [256] * 6 + [64] * 2
    positions = adapter_positions(swin_dims, swin_tokens, htsat_dims, htsat_tokens)
    assert [(p.visual_block, p.audio_block) for p in positions] == (
        [(0, 0), (1, 1), (2, 2), (3, 3)] + [(4 + 3 * j + 2, 4 + j) for j in range(6)] + [(22, 10), (23, 11)])
    assert [p.stage for p in positions] == [0, 0, 1, 1] + [2] * 6 + [3, 3]
    skipped = adapter_positions(swin_dims, swin_tokens, htsat_dims, htsat_tokens, skip_stages=[1, 3])
    assert len(skipped) == 8 and {p.stage for p in skipped} == {0, 2}
    shared = adapter_positions(swin_dims, swin_tokens, swin_dims, swin_tokens)
    assert [(p.visual_block, p.audio_block) for p in shared] == [(i, i) for i in range(24)]


@pytest.mark.parametrize("method", IN_BLOCK)
def test_zero_gates_reproduce_the_frozen_backbones(backbones, inputs, method):
    model = _model(backbones, method)
    visual, audio = backbones
    stage_blocks = visual.stage_end_blocks
    got = model.compute_inputs(*inputs, stage_blocks=stage_blocks)
    frozen_visual = visual.forward_taps(visual.preprocess(inputs[0]), stage_blocks)
    frozen_audio = audio.forward_taps(inputs[1], [audio.num_blocks - 1])
    torch.testing.assert_close(got["visual_taps"][0], frozen_visual[-1], rtol=0, atol=0)
    torch.testing.assert_close(got["audio_taps"][0], frozen_audio[0], rtol=0, atol=0)
    for adapted, frozen in zip(got["visual_stages"], frozen_visual):
        torch.testing.assert_close(adapted, frozen, rtol=0, atol=0)
    assert got["visual_taps"][0].requires_grad  # the graph goes through the backbone
    final_visual, final_audio = model.compute_final_tokens(*inputs)
    torch.testing.assert_close(final_visual[0], frozen_visual[-1], rtol=0, atol=0)
    torch.testing.assert_close(final_audio[0], frozen_audio[0], rtol=0, atol=0)


@pytest.mark.parametrize("method", IN_BLOCK)
def test_gradients_reach_every_adapter_through_the_frozen_blocks(backbones, inputs, method):
    model = _model(backbones, method)
    _open_gates(model)
    model.train()
    backward_and_check_side_gradients(model, backbones, model(*inputs))
    # the first position's adapters are reached only through every later frozen block
    first = model.method.adapters["visual"][0][0]
    assert all(p.grad.abs().sum() > 0 for name, p in first.named_parameters() if name.endswith("gate"))


def test_lavish_p1_sits_beside_attention_and_p2_beside_the_mlp(inputs):
    visual, audio = build_backbones("tiny-shared")
    model = _model((visual, audio), "lavish")
    position = 3
    block = model.method.positions[position].visual_block
    constant = {0: torch.full((visual.block_dims[block],), 0.25), 1: torch.full((visual.block_dims[block],), -0.5)}

    class Fixed(torch.nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def forward(self, x, other):
            return self.value.expand_as(x)

    for part in (0, 1):
        model.method.adapters["visual"][position][part] = Fixed(constant[part])
    taps = model.compute_inputs(*inputs, stage_blocks=list(range(visual.num_blocks)))["visual_stages"]
    with torch.no_grad():
        tokens = visual.embed(visual.preprocess(inputs[0]))
        for index in range(block):
            tokens = visual.run_block(index, tokens)
        entered = visual.enter_block(block, tokens)
        after_attention = visual.attention_sublayer(block, entered) + constant[0]
        expected = visual.mlp_sublayer(block, after_attention) + constant[1]
    torch.testing.assert_close(taps[block], visual.to_sequence(expected))
    torch.testing.assert_close(taps[block - 1], visual.to_sequence(tokens))


def test_latent_token_attention_is_weight_free_softmax_exchange():
    generator = torch.Generator().manual_seed(0)
    x, latents, other = (torch.randn(2, 5, 4, generator=generator), torch.rand(3, 4, generator=generator),
                         torch.randn(2, 7, 4, generator=generator))
    for b in range(2):
        tokens = latents + torch.softmax(latents @ other[b].T, dim=-1) @ other[b]
        expected = torch.softmax(x[b] @ tokens.T, dim=-1) @ tokens
        torch.testing.assert_close(latent_token_attention(x, latents, other)[b], expected)


def test_task_settings_follow_the_repositories():
    ave = load_config("ave_molt_tiny")
    lavish = switch_method(ave, "lavish").method_config.to_dict()
    assert (lavish["num_latents"], lavish["reduction"], lavish["groups"]) == (2, 8, 2)
    assert lavish["dim"] == ave.method_config.dim and lavish["num_tokens"] == ave.method_config.num_tokens
    ms3 = switch_method(load_config("avs_molt_tiny", {"setting": "ms3"}), "dgsct").method_config.to_dict()
    assert (ms3["num_latents"], ms3["reduction"], ms3["alpha"], ms3["beta"]) == (32, 2, 0.2, 0.1)
    avqa = switch_method(load_config("avqa_molt_tiny"), "avmoe").method_config.to_dict()
    assert (avqa["cross_experts"], avqa["uni_experts"], avqa["num_latents"], avqa["skip_stages"]) == (1, 2, 2, [])
    assert switch_method(ave, "avmoe").method_config.skip_stages == [1, 3]


@pytest.mark.parametrize("method, kind", [("lavish", Lavish), ("dgsct", DGSCT), ("avmoe", AVMoE)])
def test_build_model_runs_each_method_in_its_wrapper(method, kind):
    config = switch_method(load_config("ave_molt_tiny"), method)
    model = build_model(config, {"num_classes": 5})
    assert isinstance(model.features, InBlockModel) and isinstance(model.method, kind)
    assert isinstance(model.features, MethodModel) and not isinstance(model.features, TapReadingModel)
    batch = {"frames": torch.randint(0, 255, (1, 2, 3, 64, 64), dtype=torch.uint8),
             "audio": 0.1 * torch.randn(1, 2, 32000), "video_id": ["a"]}
    predictions = model(batch).predictions
    assert predictions["event_logits"].shape == (1, 2) and predictions["class_logits"].shape == (1, 5)


def test_single_modality_and_bad_settings_are_refused():
    visual, audio = build_backbones("tiny")
    with pytest.raises(ValueError, match="modalities must be 'both'"):
        build_method("dgsct", DGSCTConfig(modalities="visual"), visual, audio)
    with pytest.raises(ValueError, match="at least one expert"):
        build_method("avmoe", AVMoEConfig(cross_experts=0, uni_experts=0), visual, audio)
    with pytest.raises(ValueError, match="unknown key"):
        LavishConfig.from_dict({"blocks_visual": "late"})
    with pytest.raises(ValueError, match="cannot train from a feature cache"):
        build_model(ExperimentConfig(method="avmoe", backbone="tiny"), {"num_classes": 5}, backbones_on_meta=True)


@pytest.mark.parametrize("method", IN_BLOCK)
def test_adapter_files_round_trip(tmp_path, method):
    from molt.checkpoints import load_adapters, save_adapters

    config = switch_method(load_config("ave_molt_tiny"), method)
    torch.manual_seed(0)
    model = build_model(config, {"num_classes": 5})
    _open_gates(model.features)
    save_adapters(model, tmp_path)
    torch.manual_seed(1)
    other = build_model(config, {"num_classes": 5})
    load_adapters(other, tmp_path)
    for (name, mine), (_, theirs) in zip(model.trainable_state_dict().items(), other.trainable_state_dict().items()):
        torch.testing.assert_close(mine, theirs, msg=name)
    assert not any(name.startswith(("features.visual.", "features.audio.")) for name in model.trainable_state_dict())


def test_dgsct_rescales_tokens_with_maps_guided_by_the_other_modality():
    from molt.methods import DualGuidedAttention

    torch.manual_seed(0)
    guide = DualGuidedAttention(8, alpha=0.3, beta=0.05)
    x, other = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    out = guide(x, other)
    channel, spatial = guide.channel_map, guide.spatial_map
    assert channel.shape == (2, 1, 8) and spatial.shape == (2, 5, 1)
    torch.testing.assert_close(out, x * (0.3 * channel + 0.05 * spatial + 1 - 0.3))
    guide(x, other + 3.0)  # another audio context gives other channel and spatial maps for the same tokens
    assert not torch.allclose(guide.channel_map, channel) and not torch.allclose(guide.spatial_map, spatial)


def test_avmoe_mixes_every_expert_with_the_router_weights():
    from molt.methods import AVMoEAdapter, AVMoEConfig

    torch.manual_seed(0)
    adapter = AVMoEAdapter(16, 6, 8, 4, config=AVMoEConfig(cross_experts=2, uni_experts=1, num_latents=3,
                                                         reduction=4, dim=16, out_heads=4))
    with torch.no_grad():
        for expert in adapter.experts:
            expert.gate.fill_(1.0)
    adapter.eval()
    x, other = torch.randn(3, 6, 16), torch.randn(3, 4, 8)
    bridged = adapter.bridge(other)
    assert bridged.shape == (3, 6, 16)
    weights = torch.softmax(adapter.router(torch.cat([x.mean(1), bridged.mean(1)], dim=-1)), dim=-1)
    expected = sum(weights[:, e, None, None] * expert(x, bridged) for e, expert in enumerate(adapter.experts))
    torch.testing.assert_close(adapter(x, other), expected)
    torch.testing.assert_close(adapter.last_weights, weights.mean(0))
    assert len(adapter.experts) == 3 and adapter.experts[2].bottleneck.activation.__class__.__name__ == "Identity"


@pytest.mark.parametrize("method", IN_BLOCK)
def test_molt_train_and_eval_run_each_in_block_method(ave_data, tmp_path, capsys, method):
    import json

    from molt.app.cli import main

    runs = tmp_path / "runs"
    assert main(["--quiet", "train", "ave", "--json", "--data", str(ave_data), "--method", method, "--epochs", "1",
                 "--out", str(runs)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert f"ave_{method}_tiny" in result["adapters"]
    from pathlib import Path
    config = json.loads((Path(result["adapters"]) / "adapter_config.json").read_text())
    assert config["extra_config"]["experiment"]["method"] == method
    assert main(["--quiet", "eval", "ave", "--data", str(ave_data), "--checkpoint", result["adapters"],
                 "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(result["test"]["accuracy"], abs=1e-6)


def test_adapters_of_the_earlier_lavish_are_refused_with_the_reason(tmp_path):
    import json

    from molt.model import AudioVisualModel

    model = build_model(switch_method(load_config("ave_molt_tiny"), "lavish"), {"num_classes": 5})
    model.save_pretrained(tmp_path / "old")
    record = json.loads((tmp_path / "old" / "adapter_config.json").read_text())
    record["method"]["config"]["gate_init"] = 0.0                       # a field only the earlier LAVisH had
    (tmp_path / "old" / "adapter_config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="earlier LAVisH.*train again with --method lavish"):
        AudioVisualModel.from_pretrained(tmp_path / "old")
