"""Adapter checkpoints: only trainable tensors, exact round trip, refusal of mismatched models."""
import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from molt.checkpoints import (ADAPTER_CONFIG_NAME, ADAPTER_FORMAT_VERSION, ADAPTER_WEIGHTS_NAME, load_adapters,
                              read_adapter_config, save_adapters)
from molt.methods import MoLTConfig, build_molt
from helpers import SMALL, FakeAudio, FakeVisual, fake_inputs


def _model(seed, **overrides):
    torch.manual_seed(0)  # same backbone weights every time
    visual, audio = FakeVisual(), FakeAudio()
    torch.manual_seed(seed)
    return build_molt(visual, audio, MoLTConfig(**{**SMALL, **overrides}))


def test_round_trip_restores_identical_outputs(tmp_path):
    source = _model(seed=1)
    with torch.no_grad():  # move away from the initialisation, as training would
        for parameter in source.method.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    directory = save_adapters(source, tmp_path / "adapters", extra_config={"task": "ave", "num_classes": 29})
    target = _model(seed=2)
    frames, waveform = fake_inputs()
    source.eval(), target.eval()
    assert not torch.equal(source(frames, waveform).visual, target(frames, waveform).visual)
    config = load_adapters(target, directory, extra_config={"task": "ave", "num_classes": 29})
    assert config["method"]["config"] == source.config.to_dict() | {"blocks_visual": "late", "blocks_audio": "late"}
    out_source, out_target = source(frames, waveform), target(frames, waveform)
    assert torch.equal(out_source.visual, out_target.visual)
    assert torch.equal(out_source.audio, out_target.audio)
    assert torch.equal(out_source.aux_losses["tor"], out_target.aux_losses["tor"])


def test_file_holds_only_trainable_tensors(tmp_path):
    model = _model(seed=1)
    save_adapters(model, tmp_path)
    tensors = load_file(str(tmp_path / ADAPTER_WEIGHTS_NAME))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert set(tensors) == trainable
    assert not any(name.startswith(("visual.", "audio.")) for name in tensors)
    stored = sum(t.numel() for t in tensors.values())
    assert stored == sum(p.numel() for p in model.method.parameters())
    size = (tmp_path / ADAPTER_WEIGHTS_NAME).stat().st_size
    assert stored * 4 <= size < stored * 4 + 64 * 1024  # float32 payload plus a small header
    config = json.loads((tmp_path / ADAPTER_CONFIG_NAME).read_text())
    assert config["format_version"] == ADAPTER_FORMAT_VERSION == 3
    assert config["method"]["class"] == "MoLTConfig"
    assert config["backbones"]["visual"] == {"class": "FakeVisual", "name": "fake-visual", "tag": "random",
                                             "weights_sha256": None, "num_blocks": 4, "blocks": [2, 3]}
    assert config["backbones"]["audio"]["blocks"] == [1, 2]


def test_load_refuses_another_config(tmp_path):
    save_adapters(_model(seed=1), tmp_path)
    other = _model(seed=1, num_tokens=4)
    before = {name: p.clone() for name, p in other.method.named_parameters()}
    with pytest.raises(ValueError, match=r"method\.config\.num_tokens: file has 3, model has 4") as error:
        load_adapters(other, tmp_path)
    assert "shape mismatches" in str(error.value)
    assert all(torch.equal(before[name], p) for name, p in other.method.named_parameters())  # untouched


def test_load_refuses_another_backbone(tmp_path):
    save_adapters(_model(seed=1), tmp_path)
    other = _model(seed=1)
    other.visual.name = "swinv2_large_window12_192"
    with pytest.raises(ValueError, match=r"backbones\.visual\.name: file has 'fake-visual'"):
        load_adapters(other, tmp_path)
    # weights hashes are compared when both sides know one
    save_adapters(_model(seed=1), tmp_path, backbone_info={"visual": {"weights_sha256": "a" * 64}, "audio": {}})
    load_adapters(_model(seed=1), tmp_path, backbone_info={"visual": {"weights_sha256": None}, "audio": {}})
    with pytest.raises(ValueError, match=r"backbones\.visual\.weights_sha256: file has 'aaa"):
        load_adapters(_model(seed=1), tmp_path, backbone_info={"visual": {"weights_sha256": "b" * 64}, "audio": {}})


def test_load_refuses_other_extra_config_and_missing_files(tmp_path):
    save_adapters(_model(seed=1), tmp_path, extra_config={"num_classes": 29})
    with pytest.raises(ValueError, match=r"extra_config\.num_classes: file has 29, model has 10"):
        load_adapters(_model(seed=1), tmp_path, extra_config={"num_classes": 10})
    with pytest.raises(FileNotFoundError, match="adapter config not found"):
        load_adapters(_model(seed=1), tmp_path / "nowhere")
    (tmp_path / ADAPTER_CONFIG_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_adapter_config(tmp_path)


class _Head(nn.Module):
    """A frozen trunk and a trainable head with BatchNorm statistics: any module works, not only MoLT."""

    def __init__(self, width=5):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).requires_grad_(False)
        self.head = nn.Sequential(nn.Linear(4, width), nn.BatchNorm1d(width, affine=False))


def test_generic_module_saves_head_buffers_not_frozen_ones(tmp_path):
    source = _Head()
    source.train()
    source.head(torch.randn(16, 4))  # updates the head's running statistics
    save_adapters(source, tmp_path)
    tensors = load_file(str(tmp_path / ADAPTER_WEIGHTS_NAME))
    assert set(tensors) == {"head.0.weight", "head.0.bias", "head.1.running_mean", "head.1.running_var",
                            "head.1.num_batches_tracked"}
    target = _Head()
    load_adapters(target, tmp_path)
    for name, tensor in source.head.state_dict().items():
        assert torch.equal(tensor, target.head.state_dict()[name]), name
    with pytest.raises(ValueError, match=r"head\.0\.weight file \(5, 4\) vs model \(3, 4\)"):
        load_adapters(_Head(width=3), tmp_path)
