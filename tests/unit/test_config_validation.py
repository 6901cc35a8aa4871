"""Every number of an experiment config is checked against its meaning, wherever it comes from: one line naming the
file (or flag), the key, the value and the allowed range."""
import dataclasses
import types
import typing

import pytest

from molt.app.cli import main
from molt.config import OptimConfig, TrainerConfig, load_config
from molt.methods import get_method, method_names
from molt.tasks import registered_tasks
from molt.typed_config import field_range

#: numeric fields checked elsewhere than by a declared range: the block selections (an int is "the last n blocks",
#: checked against the backbone's depth when it is built) and the device count (-1 or >= 1, TrainerConfig)
_CHECKED_ELSEWHERE = {"blocks_visual", "blocks_audio", "devices"}


def _config_classes():
    classes = {OptimConfig, TrainerConfig}
    classes |= {get_method(name).config_class for name in method_names()}
    classes |= {spec.head.config_class for spec in registered_tasks()}
    return sorted(classes, key=lambda kind: kind.__name__)


def _is_number(annotation) -> bool:
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return any(argument in (int, float) for argument in (typing.get_args(annotation) if union else (annotation,)))


@pytest.mark.parametrize("kind", _config_classes(), ids=lambda kind: kind.__name__)
def test_every_numeric_field_declares_its_range(kind):
    hints = typing.get_type_hints(kind)
    undeclared = [f.name for f in dataclasses.fields(kind) if _is_number(hints[f.name])
                  and f.name not in _CHECKED_ELSEWHERE and field_range(kind, f.name) is None]
    assert not undeclared, f"{kind.__name__}: numeric fields without a range: {undeclared}"


def _outside(allowed) -> list:
    """Values just outside a range (an int field gets ints)."""
    values = []
    if allowed.at_least is not None:
        values.append(allowed.at_least - 1)
    if allowed.above is not None:
        values.append(allowed.above)
    if allowed.at_most is not None:
        values.append(allowed.at_most + 1)
    if allowed.below is not None:
        values.append(allowed.below)
    return values


def _ranged_fields():
    for kind in _config_classes():
        for f in dataclasses.fields(kind):
            allowed = field_range(kind, f.name)
            if allowed is not None:
                for value in _outside(allowed):
                    yield pytest.param(kind, f.name, value, allowed, id=f"{kind.__name__}.{f.name}={value}")


@pytest.mark.parametrize("kind, key, value, allowed", list(_ranged_fields()))
def test_a_value_outside_its_range_is_refused_naming_source_key_value_and_range(kind, key, value, allowed):
    source = "runs/x.yaml: section"
    with pytest.raises(ValueError) as error:
        kind.from_dict({key: value}, source=source)
    message = str(error.value)
    assert message.startswith(f"{source}: {key} must be {allowed.describe()}"), message
    assert f"got {value!r}" in message and "correct it in runs/x.yaml" in message
    with pytest.raises(ValueError, match=f"{key} must be"):  # a config built in Python is checked too
        kind(**{key: value})


# (section, key, value, accepted?, message part): the ranges as the tester asked for them
_ROWS = [
    ("trainer", "max_epochs", -5, False, "max_epochs must be at least 1 (epochs to train), got -5"),
    ("trainer", "max_epochs", 0, False, "max_epochs must be at least 1"),
    ("trainer", "max_epochs", 1, True, ""),
    ("trainer", "batch_size", 0, False, "batch_size must be at least 1 (clips per batch), got 0"),
    ("trainer", "num_workers", -1, False, "num_workers must be at least 0"),
    ("trainer", "num_workers", 0, True, ""),
    ("trainer", "accumulate_grad_batches", 0, False, "accumulate_grad_batches must be at least 1"),
    ("trainer", "gradient_clip_val", -1.0, False, "gradient_clip_val must be at least 0"),
    ("trainer", "gradient_clip_val", 0.0, True, ""),
    ("trainer", "gradient_clip_val", None, True, ""),
    ("trainer", "checkpoint_every_n_steps", 0, False, "checkpoint_every_n_steps must be at least 1"),
    ("trainer", "seed", -1, False, "seed must be in [0, 4294967295]"),
    ("trainer", "devices", 0, False, "devices must be at least 1 (or -1: all devices), got 0"),
    ("trainer", "devices", -1, True, ""),
    ("trainer", "devices", "auto", True, ""),
    ("optim", "lr", -0.1, False, "lr must be at least 0 (learning rate of the adapters, 0: frozen), got -0.1"),
    ("optim", "lr", 0.0, True, ""),       # 0 freezes the adapters (the head alone trains)
    ("optim", "lr", float("nan"), False, "lr must be at least 0"),
    ("optim", "lr", float("inf"), False, "lr must be at least 0"),
    ("optim", "head_lr", -1e-3, False, "head_lr must be at least 0"),
    ("optim", "weight_decay", -1e-4, False, "weight_decay must be at least 0"),
    ("optim", "weight_decay", 0.0, True, ""),
    ("optim", "gamma", 1.5, False, "gamma must be in (0, 1]"),
    ("optim", "step_size", 0, False, "step_size must be at least 1"),
    ("method_config", "dropout", 1.0, False, "dropout must be in [0, 1) (attention dropout probability), got 1.0"),
    ("method_config", "dropout", 0.0, True, ""),
    ("method_config", "num_tokens", 0, False, "num_tokens must be at least 1 (tokens per modality)"),
    ("method_config", "num_tokens_audio", 0, False, "num_tokens_audio must be at least 1"),
    ("method_config", "tor_weight", -0.1, False, "tor_weight must be at least 0"),
    ("method_config", "num_uda", -1, False, "num_uda must be at least 0"),
    ("method_config", "router_hidden", 0, False, "router_hidden must be at least 1"),
    ("head", "dropout", -0.5, False, "dropout must be in [0, 1) (dropout probability), got -0.5"),
    ("head", "event_threshold", 1.0, False, "event_threshold must be in (0, 1)"),
    ("head", "event_weight", -1.0, False, "event_weight must be at least 0"),
    ("head", "num_segments", 0, False, "num_segments must be at least 1"),
    ("head", "temporal_layers", -1, False, "temporal_layers must be at least 0"),
    (None, "audio_clip_seconds", 0, False, "audio_clip_seconds must be at least 1"),
]


@pytest.mark.parametrize("section, key, value, accepted, part", _ROWS,
                         ids=[f"{row[0]}.{row[1]}={row[2]!r}" for row in _ROWS])
def test_config_numbers_in_a_yaml_file(tmp_path, section, key, value, accepted, part):
    import yaml

    path = tmp_path / "experiment.yaml"
    body = {key: value} if section is None else {section: {key: value}}
    path.write_text(yaml.safe_dump({"base": "ave_molt_tiny", **body}))
    if accepted:
        config = load_config(str(path))
        holder = config if section is None else getattr(config, section)
        assert getattr(holder, key) == value
        return
    with pytest.raises(ValueError) as error:
        load_config(str(path))
    message = str(error.value)
    where = f"{path}: " if section is None else f"{path}: {section}: "
    assert message.startswith(where) and part in message, message
    if "devices" not in key:
        assert message.endswith(f"correct it in {path}"), message


# command-line flags land in the same typed config and are checked against the same ranges, naming the flag
_FLAGS = [
    (["--epochs", "-1"], "--epochs: max_epochs must be at least 1 (epochs to train), got -1"),
    (["--epochs", "0"], "--epochs: max_epochs must be at least 1"),
    (["--lr", "-0.1"], "--lr: lr must be at least 0 (learning rate of the adapters, 0: frozen), got -0.1"),
    (["--lr", "nan"], "--lr: lr must be at least 0"),
    (["--batch-size", "0"], "--batch-size: batch_size must be at least 1"),
    (["--workers", "-2"], "--workers: num_workers must be at least 0"),
    (["--seed", "-1"], "--seed: seed must be in [0, 4294967295]"),
    (["--devices", "0"], "--devices: devices must be at least 1 (or -1: all devices)"),
    (["--checkpoint-every-n-steps", "0"], "--checkpoint-every-n-steps: checkpoint_every_n_steps must be at least 1"),
    (["--progress-every-n-steps", "-3"], "--progress-every-n-steps: progress_every_n_steps must be at least 1"),
]


@pytest.mark.parametrize("verb", ["train", "ablate"])
@pytest.mark.parametrize("flags, part", _FLAGS, ids=[" ".join(row[0]) for row in _FLAGS])
def test_numeric_flags_are_checked_naming_the_flag(tmp_path, caplog, verb, flags, part):
    argv = [verb, "ave", "--data", str(tmp_path / "nowhere"), *flags, "--out", str(tmp_path / "out")]
    if verb == "ablate":
        argv[2:2] = ["--table", "7"]
    assert main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name == "molt"]
    assert len(errors) == 1 and part in errors[0] and f"pass {flags[0]} with a value in that range" in errors[0]
    assert not (tmp_path / "out").exists()
