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


# ----------------------------------------------------------------------------------------------------------------
# every field of adapter_config.json is checked on load; recorded weights paths are confined

def _set(config, dotted, value):
    """Set ``a.b.c`` in nested dicts (the backbone records' own keys hold a dot: ``features.audio``)."""
    *parents, last = dotted.replace("features.", "features\0").split(".")
    parents = [key.replace("\0", ".") for key in parents]
    last = last.replace("\0", ".")
    for key in parents:
        config = config[key]
    if value is _DELETE:
        del config[last]
    else:
        config[last] = value


_DELETE = object()
_EXPERIMENT = "extra_config.experiment"
# (key, bad value, message part)
_FIELD_ROWS = [
    ("format_version", "2", "format_version must be an integer, got '2' (str)"),
    ("format_version", 2.0, "format_version must be an integer"),
    ("format_version", True, "format_version must be an integer"),
    ("format_version", 0, f"format_version must be a version from 1 to {ADAPTER_FORMAT_VERSION}, got 0"),
    ("format_version", 99, "adapter format version 99 is newer than this library supports"),
    ("format_version", _DELETE, "not an adapter config (no format_version)"),
    ("library", 7, "library must be a string or null"),
    ("method", "molt", "method must be an object"),
    ("method.config", [1], "method.config must be an object"),
    ("method.class", 3, "method.class must be a string or null"),
    ("backbones", [], "backbones must be an object of backbone records"),
    ("backbones.features.audio", "htsat", "backbones.features.audio must be an object"),
    ("backbones.features.audio.weights_sha256", "abc", "weights_sha256 must be 64 hexadecimal digits"),
    ("backbones.features.audio.num_blocks", 0, "backbones.features.audio.num_blocks must be an integer >= 1"),
    ("backbones.features.audio.blocks", [6, -1], "backbones.features.audio.blocks must be a list of block indices"),
    ("tensors", {"a": [2, -3]}, "tensors.a must be a shape"),
    ("extra_config", [], "extra_config must be an object or null"),
    (_EXPERIMENT, "ave", "extra_config.experiment must be an object"),
    ("extra_config.task_options", 3, "extra_config.task_options must be an object"),
    ("extra_config.task_options.num_classes", "many", "extra_config.task_options.num_classes must be int, got 'many'"),
    ("extra_config.task_options.num_classes", 0, "extra_config.task_options.num_classes must be at least 1"),
    ("extra_config.task_options.class_names", ["a", 2, "c"], "class_names must be a list of str or null"),
    ("extra_config.task_options.colour", "red", "extra_config.task_options.colour is not an option of the ave head"),
    (_EXPERIMENT + ".trainer.max_epochs", -5, "trainer: max_epochs must be at least 1 (epochs to train), got -5"),
    (_EXPERIMENT + ".optim.lr", "fast", "optim: lr must be float, got 'fast'"),
    (_EXPERIMENT + ".method_config.dropout", 1.5, "method_config: dropout must be in [0, 1)"),
    (_EXPERIMENT + ".task", 5, "task must be str, got 5"),
    (_EXPERIMENT + ".audio_weights", 5, "audio_weights must be a path or null, got 5"),
    (_EXPERIMENT + ".audio_weights", "../../../../../../../../etc/passwd",
     "audio_weights '../../../../../../../../etc/passwd' lies outside the current directory and the file records no "
     "SHA-256 to check it against"),
    (_EXPERIMENT + ".visual_weights", "/etc/passwd", "visual_weights '/etc/passwd' lies outside the current directory"),
    (_EXPERIMENT + ".visual_weights", "/dev/zero", "visual_weights '/dev/zero' (the weights it was trained with) is "
                                                   "not a file here; get it"),
    (_EXPERIMENT + ".audio_weights", "gone/htsat.ckpt", "is not a file here; get it"),
    (_EXPERIMENT + ".backbone", {"visual": "swinv2:swinv2_tiny_test", "audio": "hf:/etc"},
     "extra_config.experiment.backbone.audio 'hf:/etc' lies outside the current directory"),
    (_EXPERIMENT + ".backbone", {"visual": "swinv2:swinv2_tiny_test", "audio": "hf:../../../../../../../../etc"},
     "backbone.audio 'hf:../../../../../../../../etc' lies outside the current directory"),
    (_EXPERIMENT + ".backbone", {"visual": "swinv2:swinv2_tiny_test", "audio": "hf:./gone"},
     "backbone.audio 'hf:./gone' (the encoder it was trained with) is not a folder here; pass --audio-weights"),
]


def _fixture_copy(tmp_path):
    from helpers import FIXTURES

    directory = tmp_path / "adapters"
    directory.mkdir()
    config = json.loads((FIXTURES / "adapters_v1" / ADAPTER_CONFIG_NAME).read_text())
    return directory, config


def _write(directory, config):
    (directory / ADAPTER_CONFIG_NAME).write_text(json.dumps(config))


@pytest.mark.parametrize("key, value, part", _FIELD_ROWS, ids=[f"{row[0]}={row[1]!r}"[:60] for row in _FIELD_ROWS])
def test_every_adapter_config_field_is_checked_naming_the_file_and_key(tmp_path, monkeypatch, key, value, part):
    from molt.checkpoints import pretrained_config

    monkeypatch.chdir(tmp_path)
    directory, config = _fixture_copy(tmp_path)
    _set(config, key, value)
    _write(directory, config)
    with pytest.raises((ValueError, FileNotFoundError)) as error:     # both: one line and exit 2 in the CLI
        pretrained_config(directory)
    message = str(error.value)
    assert message.startswith(str(directory / ADAPTER_CONFIG_NAME)), message
    assert part in message, message
    assert "\n" not in message


def test_the_fixture_itself_loads(tmp_path, monkeypatch):
    from molt.checkpoints import pretrained_config

    monkeypatch.chdir(tmp_path)
    directory, config = _fixture_copy(tmp_path)
    _write(directory, config)
    experiment, options = pretrained_config(directory)
    assert experiment.task == "ave" and options == {"class_names": ["a", "b", "c"], "num_classes": 3}


def test_recorded_weights_are_opened_only_when_molt_can_vouch_for_them(tmp_path, monkeypatch):
    """Inside the current directory (where molt train resolved the relative path it recorded), or anywhere with the
    SHA-256 the adapters record; the user's own --audio-weights replace what the file records."""
    import hashlib

    from molt.checkpoints import pretrained_config

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    weights = elsewhere / "htsat.ckpt"
    weights.write_bytes(b"weights")
    work = tmp_path / "work"
    work.mkdir()
    (work / "local.ckpt").write_bytes(b"local weights")
    monkeypatch.chdir(work)
    directory, config = _fixture_copy(tmp_path)
    experiment = config["extra_config"]["experiment"]

    experiment["audio_weights"] = "local.ckpt"           # relative, inside the current directory
    _write(directory, config)
    assert pretrained_config(directory)[0].audio_weights == "local.ckpt"

    experiment["audio_weights"] = str(weights)           # outside, no hash recorded: refused
    _write(directory, config)
    with pytest.raises(ValueError, match="lies outside the current directory .* pass --audio-weights PATH"):
        pretrained_config(directory)
    assert pretrained_config(directory, audio_weights=str(weights))[0].audio_weights == str(weights)  # user's own

    config["backbones"]["features.audio"]["weights_sha256"] = hashlib.sha256(b"weights").hexdigest()
    _write(directory, config)                            # outside, the recorded hash: the same weights
    assert pretrained_config(directory)[0].audio_weights == str(weights)
    weights.write_bytes(b"other weights")                # outside, another file at that path: refused
    with pytest.raises(ValueError, match="its SHA-256 is not the one the file records"):
        pretrained_config(directory)
    experiment["audio_weights"] = "../elsewhere/htsat.ckpt"   # relative but leaving the current directory
    _write(directory, config)
    with pytest.raises(ValueError, match="lies outside the current directory"):
        pretrained_config(directory)


def test_a_recorded_hf_encoder_folder_is_confined_like_a_weights_file(tmp_path, monkeypatch):
    import hashlib

    from molt.checkpoints import pretrained_config

    outside = tmp_path / "ast"
    outside.mkdir()
    (outside / "model.safetensors").write_bytes(b"ast weights")
    work = tmp_path / "work"
    (work / "local_ast").mkdir(parents=True)
    monkeypatch.chdir(work)
    directory, config = _fixture_copy(tmp_path)
    experiment = config["extra_config"]["experiment"]
    experiment["backbone"] = {"visual": "swinv2:swinv2_tiny_test", "audio": "hf:local_ast"}
    _write(directory, config)
    assert pretrained_config(directory)[0].backbone["audio"] == "hf:local_ast"   # inside the current directory
    experiment["backbone"]["audio"] = "hf:MIT/ast-finetuned-audioset-10-10-0.4593"
    _write(directory, config)                                                      # a hub id: not a path
    assert pretrained_config(directory)[0].backbone["audio"] == "hf:MIT/ast-finetuned-audioset-10-10-0.4593"
    experiment["backbone"]["audio"] = f"hf:{outside}"
    _write(directory, config)
    with pytest.raises(ValueError, match="backbone.audio .* lies outside the current directory"):
        pretrained_config(directory)
    mine = pretrained_config(directory, audio_weights=str(work / "local_ast"))[0]    # the user's own folder
    assert mine.backbone["audio"] == f"hf:{work / 'local_ast'}" and mine.audio_weights is None
    config["backbones"]["features.audio"]["weights_sha256"] = hashlib.sha256(b"ast weights").hexdigest()
    _write(directory, config)                                                      # the recorded weights
    assert pretrained_config(directory)[0].backbone["audio"] == f"hf:{outside}"
