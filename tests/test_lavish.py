"""LAVisH baseline: identity at gate 0, gradients through the frozen blocks, training changes outputs, pairing."""
import pytest
import torch

from molt.backbones import build_backbones
from molt.config import ExperimentConfig
from molt.methods import Lavish, LavishConfig, LavishModel, build_method, pair_blocks
from molt.model import build_model

CONFIG = {"dim": 16, "out_heads": 4, "num_tokens": 3, "num_latents": 2, "reduction": 4}


@pytest.fixture(scope="module", params=["tiny", "tiny-shared"])
def backbones(request):
    return build_backbones(request.param)


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 64, 64, generator=generator), 0.1 * torch.randn(2, 32000, generator=generator)


def _model(backbones, **overrides):
    visual, audio = backbones
    torch.manual_seed(0)
    method, visual_blocks, audio_blocks = build_method("lavish", {**CONFIG, **overrides}, visual, audio)
    return LavishModel(visual=visual, audio=audio, method=method, visual_blocks=visual_blocks,
                       audio_blocks=audio_blocks)


def test_zero_gates_reproduce_frozen_backbones(backbones, inputs):
    model = _model(backbones)
    visual_taps, audio_taps = model.compute_taps(*inputs)
    frozen_visual = backbones[0].forward_taps(inputs[0], [backbones[0].num_blocks - 1])
    frozen_audio = backbones[1].forward_taps(inputs[1], [backbones[1].num_blocks - 1])
    torch.testing.assert_close(visual_taps[0], frozen_visual[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(audio_taps[0], frozen_audio[0], rtol=0, atol=1e-6)
    assert visual_taps[0].requires_grad  # the graph goes through the backbone


def test_gradients_flow_through_frozen_blocks(backbones, inputs):
    model = _model(backbones, gate_init=0.1)
    out = model(*inputs)
    (out.visual.square().mean() + out.audio.square().mean()).backward()
    for name, parameter in model.method.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    # the first blocks' adapters are reached only through every later frozen block
    assert model.method.adapters["visual"][0].down.weight.grad.abs().sum() > 0
    for backbone in backbones:
        assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())


def test_a_step_with_open_gates_changes_outputs(backbones, inputs):
    model = _model(backbones)
    optimizer = torch.optim.Adam(model.method.parameters(), lr=1e-2)
    before = model.compute_taps(*inputs)[0][0].detach()
    for _ in range(2):  # step 1 opens the gates (only they get gradient at 0), step 2 moves the adapters too
        optimizer.zero_grad()
        out = model(*inputs)
        (out.visual.square().mean() + out.audio.square().mean()).backward()
        optimizer.step()
    assert all(adapter.gate.abs().item() > 0 for adapter in model.method.adapters["visual"])
    assert not torch.allclose(model.compute_taps(*inputs)[0][0], before)


def test_pairing_stage_by_stage():
    swin = [192] * 2 + [384] * 2 + [768] * 18 + [1536] * 2
    htsat = [96] * 2 + [192] * 2 + [384] * 6 + [768] * 2
    steps = pair_blocks(swin, [1] * 24, htsat, [1] * 12)
    assert [v for v, _, _, _ in steps] == list(range(24))
    assert [a for _, a, _, _ in steps if a is not None] == list(range(12))
    paired = {v: a for _, _, v, a in steps}
    assert paired[3] == 3 and paired[4] == paired[5] == paired[6] == 4 and paired[21] == 9 and paired[23] == 11
    method = Lavish(LavishConfig(**CONFIG), visual_dims=swin, visual_tokens=[1] * 24, audio_dims=htsat,
                    audio_tokens=[1] * 12)
    assert len(method.adapters["visual"]) == 24 and len(method.adapters["audio"]) == 12
    assert method.adapters["visual"][5].latents.k_proj.in_features == 384  # reads HTS-AT stage 3


def test_build_model_uses_lavish_wrapper():
    config = ExperimentConfig(method="lavish", backbone="tiny", method_config=CONFIG)
    model = build_model(config, {"num_classes": 5})
    assert isinstance(model.features, LavishModel) and isinstance(model.method, Lavish)
    batch = {"frames": torch.randint(0, 255, (1, 2, 3, 64, 64), dtype=torch.uint8),
             "audio": 0.1 * torch.randn(1, 2, 32000)}
    assert model.features.compute_taps(batch["frames"][0], batch["audio"][0])[0][0].shape[0] == 2
    with pytest.raises(ValueError, match="unknown key"):
        LavishConfig.from_dict({"blocks_visual": "late"})


def test_adapter_files_round_trip(tmp_path):
    from molt.methods import load_adapters, save_adapters

    config = ExperimentConfig(method="lavish", backbone="tiny", method_config=CONFIG)
    torch.manual_seed(0)
    model = build_model(config, {"num_classes": 5})
    with torch.no_grad():
        model.method.adapters["visual"][0].gate.fill_(0.5)
    save_adapters(model, tmp_path)
    torch.manual_seed(1)
    other = build_model(config, {"num_classes": 5})
    load_adapters(other, tmp_path)
    assert other.method.adapters["visual"][0].gate.item() == 0.5
    assert not any(name.startswith(("features.visual.", "features.audio."))
                   for name in model.trainable_state_dict())
