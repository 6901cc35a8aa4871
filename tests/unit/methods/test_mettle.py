"""Mettle baseline: shapes, averaging fusion, gradient flow, untouched backbone taps, config checks."""
import pytest
import torch
from helpers import backward_and_check_side_gradients

from molt.backbones import build_backbones
from molt.config import ExperimentConfig
from molt.methods import Mettle, MettleConfig, TapReadingModel, build_method
from molt.model import build_model

CONFIG = {"dim": 16, "num_heads": 4, "num_tokens": 3}


@pytest.fixture(scope="module")
def backbones():
    return build_backbones("tiny")


@pytest.fixture(scope="module")
def inputs(backbones):
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(2, 3, *backbones[0].input_size, generator=generator)
    waveform = 0.1 * torch.randn(2, 32000, generator=generator)
    return frames, waveform


def _model(backbones, **overrides):
    visual, audio = backbones
    method, visual_blocks, audio_blocks = build_method("mettle", MettleConfig(**CONFIG, **overrides), visual, audio)
    return TapReadingModel(visual=visual, audio=audio, method=method, visual_blocks=visual_blocks,
                           audio_blocks=audio_blocks)


def test_every_block_distilled_and_shapes(backbones, inputs):
    torch.manual_seed(0)
    model = _model(backbones)
    assert model.visual_blocks == list(range(backbones[0].num_blocks))
    assert model.audio_blocks == list(range(backbones[1].num_blocks))
    out = model(*inputs)
    assert out.visual.shape == (2, 3, 16) and out.audio.shape == (2, 3, 16)
    assert out.aux_losses == {}
    assert out.extras["layer_tokens"]["visual"].shape == (2, backbones[0].num_blocks, 3, 16)


def test_fusion_is_mean_of_layer_tokens(backbones, inputs):
    torch.manual_seed(0)
    model = _model(backbones)
    visual_taps, audio_taps = model.compute_taps(*inputs)
    out = model.forward_from_taps(visual_taps, audio_taps)
    by_hand = torch.stack([lcd(tap) for lcd, tap in zip(model.method.lcds["visual"], visual_taps)]).mean(0)
    torch.testing.assert_close(out.visual, by_hand, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.audio, out.extras["layer_tokens"]["audio"].mean(1), rtol=1e-5, atol=1e-6)


def test_unequal_layer_counts_are_not_paired(backbones):
    config = MettleConfig(**CONFIG, blocks_audio="late")
    method, visual_blocks, audio_blocks = build_method("mettle", config, *backbones)
    assert len(visual_blocks) == 8 and audio_blocks == [6, 7]
    assert len(method.lcds["visual"]) == 8 and len(method.lcds["audio"]) == 2


def test_gradients_reach_every_mettle_parameter_and_no_backbone(backbones, inputs):
    torch.manual_seed(0)
    model = _model(backbones)
    before = [tap.clone() for tap in backbones[0].forward_taps(model.visual.preprocess(inputs[0]), "all")]
    backward_and_check_side_gradients(model, backbones, model(*inputs))
    after = backbones[0].forward_taps(model.visual.preprocess(inputs[0]), "all")
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    # the taps Mettle reads are exactly the frozen backbone's
    taps, _ = model.compute_taps(*inputs)
    assert all(torch.equal(a, b) for a, b in zip(taps, before))


def test_single_modality_and_model_wrapper(backbones, inputs):
    method, _, audio_blocks = build_method("mettle", MettleConfig(**CONFIG, modalities="visual"), *backbones)
    assert isinstance(method, Mettle) and audio_blocks == []
    config = ExperimentConfig(method="mettle", backbone="tiny", method_config=CONFIG)
    model = build_model(config, {"num_classes": 5})
    assert isinstance(model.features, TapReadingModel) and isinstance(model.method, Mettle)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown key"):
        MettleConfig.from_dict({"num_uda": 2})
    with pytest.raises(ValueError, match="multiple of num_heads"):
        MettleConfig(dim=10, num_heads=4)
    assert MettleConfig.from_dict(MettleConfig().to_dict()) == MettleConfig()


def test_adapter_files_round_trip(tmp_path):
    from molt.checkpoints import load_adapters, read_adapter_config, save_adapters

    config = ExperimentConfig(method="mettle", backbone="tiny", method_config=CONFIG)
    torch.manual_seed(0)
    model = build_model(config, {"num_classes": 5})
    save_adapters(model, tmp_path)
    assert read_adapter_config(tmp_path)["method"]["class"] == "MettleConfig"
    torch.manual_seed(1)
    other = build_model(config, {"num_classes": 5})
    load_adapters(other, tmp_path)
    for (name, a), b in zip(model.trainable_state_dict().items(), other.trainable_state_dict().values()):
        assert torch.equal(a, b), name


def _avs_batch(clips=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {"frames": torch.randint(0, 256, (clips, 5, 3, 64, 64), dtype=torch.uint8, generator=generator),
            "audio": 0.1 * torch.randn(clips, 5, 32000, generator=generator),
            "masks": (torch.rand(clips, 5, 32, 32, generator=generator) > 0.5).float(),
            "mask_valid": torch.ones(clips, 5), "video_id": [f"clip{i}" for i in range(clips)]}


def _avs_mettle():
    from molt.config import load_config, switch_method
    from molt.model import build_model

    torch.manual_seed(0)
    return build_model(switch_method(load_config("avs_molt_tiny"), "mettle"), {"mask_size": 32})


def test_segmentation_distils_the_top_block_and_injects_its_meta_tokens():
    model = _avs_mettle()
    assert model.method.config.injection and model.features.visual_blocks == [7]
    assert model.features.audio_blocks == [model.audio.num_blocks - 1]
    batch = _avs_batch()
    seen = {}
    original = model.task.forward

    def spy(visual, audio, batch_with_stages):
        seen["stages"] = batch_with_stages["visual_stages"]
        return original(visual, audio, batch_with_stages)

    model.task.forward = spy
    with torch.no_grad():
        frozen = model.compute_inputs(batch)["visual_stages"]
        model(batch)  # gates at zero: the decoder reads the frozen stage features
        for got, want in zip(seen["stages"], frozen):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        model.method.injection.gates.fill_(0.5)
        model(batch)
    assert all(not torch.allclose(got, want) for got, want in zip(seen["stages"], frozen))
    # the guidance is a cross-attention from each stage's tokens to the 2K meta-tokens of the same segment
    output = model.features.forward_from_taps(*model.compute_taps(batch))
    meta = torch.cat([output.visual, output.audio], dim=1)
    injection = model.method.injection
    with torch.no_grad():
        expected = frozen[2] + 0.5 * injection.attention[2](injection.norms[2](frozen[2]), meta)
        torch.testing.assert_close(seen["stages"][2], expected)


def test_injection_trains_without_gradients_through_the_backbone():
    model = _avs_mettle()
    with torch.no_grad():
        model.method.injection.gates.fill_(0.5)
    batch = _avs_batch()
    assert not any(stage.requires_grad for stage in model.compute_inputs(batch)["visual_stages"])
    output = model(batch)
    model.task.loss(output.predictions, batch).backward()
    for name, parameter in model.method.injection.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.visual.parameters())
    with pytest.raises(ValueError, match="stage widths"):
        Mettle(MettleConfig(injection=True), [192], [128])


def test_molt_train_avs_with_mettle_injects_and_evaluates(tmp_path, capsys):
    import json

    from molt.app.cli import main

    data = tmp_path / "avs"
    assert main(["synth", "avs", "--setting", "s4", "--out", str(data), "--videos", "16", "--seed", "1"]) == 0
    capsys.readouterr()
    assert main(["--quiet", "train", "avs", "--json", "--data", str(data), "--method", "mettle", "--epochs", "1",
                 "--out", str(tmp_path / "runs")]) == 0
    result = json.loads(capsys.readouterr().out)
    from molt.app.evaluate import load_trained

    model = load_trained(result["adapters"])[0]
    assert model.method.injection is not None and model.method.injection.gates.abs().sum() > 0  # trained
    assert main(["--quiet", "eval", "avs", "--data", str(data), "--checkpoint", result["adapters"],
                 "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["mIoU"] == pytest.approx(result["test"]["mIoU"], abs=1e-6)


def test_adapters_saved_before_lcd_width_load_as_the_common_reading(tmp_path):
    import dataclasses
    import json

    from molt.config import load_config, switch_method
    from molt.model import AudioVisualModel

    config = switch_method(load_config("ave_molt_tiny"), "mettle")
    old = dataclasses.replace(config, method_config=config.method_config.replace(lcd_width="common"))
    torch.manual_seed(0)
    model = build_model(old, {"num_classes": 5})
    model.save_pretrained(tmp_path / "old")
    record = json.loads((tmp_path / "old" / "adapter_config.json").read_text())
    del record["method"]["config"]["lcd_width"]                       # what a file of the previous release holds
    (tmp_path / "old" / "adapter_config.json").write_text(json.dumps(record))
    loaded = AudioVisualModel.from_pretrained(tmp_path / "old")
    assert loaded.method.config.lcd_width == "common"
    for name, tensor in model.trainable_state_dict().items():
        assert torch.equal(tensor, loaded.trainable_state_dict()[name]), name
