from importlib import resources

import pytest
import yaml

from molt.app.cli import build_parser, main
from molt.config import ExperimentConfig, load_config, preset_names
from molt.methods import MoLTConfig
from molt.tasks.ave import AVEHeadConfig


def test_presets_load_and_merge():
    assert {"ave_molt_tiny", "ave_molt_paper", "ave_molt_shared"} <= set(preset_names())
    shared = load_config("ave_molt_shared")
    paper = load_config("ave_molt_paper")
    assert shared.backbone == "shared" and paper.backbone == "paper"
    assert shared.method_config == paper.method_config
    tiny = load_config("ave_molt_tiny", {"trainer": {"max_epochs": 3}, "method_config": {"num_tokens": 2}})
    assert tiny.trainer.max_epochs == 3 and tiny.method_config.num_tokens == 2
    assert tiny.method_config.num_uda == 2  # untouched keys survive a nested override


def test_config_typos_are_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: ave\ntrainer:\n  max_epoch: 3\n")
    with pytest.raises(ValueError, match="max_epoch"):
        load_config(str(path))
    with pytest.raises(ValueError, match="unknown backbone .large.: name a pair"):
        ExperimentConfig(backbone="large")
    with pytest.raises(FileNotFoundError, match="no config preset named"):
        load_config("ave_molt_nope")


def test_cli_lists_verbs():
    text = build_parser().format_help()
    for verb in ("demo", "synth", "prepare", "train", "eval", "params"):
        assert verb in text


def test_cli_reports_bad_config_without_traceback(tmp_path, caplog):
    assert main(["train", "ave", "--data", str(tmp_path), "--config", "nope_preset"]) == 2
    assert "no config preset named" in caplog.text


def test_switch_method_keeps_the_common_footing():
    from molt.config import switch_method

    molt = load_config("ave_molt_paper", {"method_config": {"modalities": "audio"}})
    mettle = switch_method(molt, "mettle")
    assert mettle.method == "mettle" and mettle.backbone == molt.backbone and mettle.head == molt.head
    assert mettle.to_dict()["method_config"] == {"dim": 256, "num_tokens": 8, "num_heads": 8, "modalities": "audio"}
    lavish = switch_method(molt, "lavish")
    assert lavish.method_config.out_heads == 8 and "num_uda" not in lavish.to_dict()["method_config"]
    assert switch_method(molt, "molt") is molt


def test_train_without_config_uses_the_backbone_preset():
    from molt.tasks import get_task

    spec = get_task("ave")
    assert spec.default_preset(None) == "ave_molt_tiny"
    assert spec.default_preset("tiny-shared") == "ave_molt_tiny"
    assert spec.default_preset("paper") == "ave_molt_paper"
    assert load_config(spec.default_preset("shared")).backbone == "shared"
    assert get_task("avvp").default_preset("paper") == "avvp_molt_paper"
    from dataclasses import replace

    tiny_only = replace(get_task("avvp"), presets={"tiny": "avvp_molt_tiny"})
    with pytest.raises(ValueError, match="no preset for backbone 'paper'.*pass --config"):
        tiny_only.default_preset("paper")


def test_the_cli_spells_the_library_choices_as_the_library_does():
    from molt.app import cli
    from molt.backbones.shared import SHARED_AUDIO_FRONTENDS
    from molt.config import BACKBONE_DTYPES, BACKBONE_PRESETS
    from molt.methods import method_names

    assert cli._BACKBONES == BACKBONE_PRESETS
    assert cli._BACKBONE_DTYPES == BACKBONE_DTYPES
    assert cli._METHODS == tuple(method_names())
    from molt.methods.inblock import HEAD_KINDS
    assert cli._HEADS == HEAD_KINDS
    assert cli._SHARED_AUDIO_FRONTENDS == SHARED_AUDIO_FRONTENDS


def test_the_config_holds_the_parsed_method_and_head_configs_and_writes_what_the_yaml_said():
    config = load_config("ave_molt_paper")
    assert isinstance(config.method_config, MoLTConfig) and isinstance(config.head, AVEHeadConfig)
    assert config.method_config.share_projections == "modality" and config.head.hidden_dim == 256
    preset = yaml.safe_load((resources.files("molt") / "configs" / "ave_molt_paper.yaml").read_text())
    data = config.to_dict()
    assert data["method_config"] == preset["method_config"] and data["head"] == preset["head"]
    assert list(data["method_config"]) == list(preset["method_config"])  # the YAML's order, not the fields'
    again = ExperimentConfig.from_dict(data)
    assert again == config and again.to_dict() == data
    # a config built in code takes mappings too, parsed into the same objects
    direct = ExperimentConfig(method_config=preset["method_config"], head=preset["head"], backbone="paper")
    assert direct.method_config == config.method_config and direct.head == config.head
    with pytest.raises(ValueError, match="MoLTConfig"):
        ExperimentConfig(method="mettle", method_config=config.method_config)


def test_bad_method_and_head_values_name_the_file_and_key(tmp_path):
    cases = {
        "head_value.yaml": ("base: ave_molt_tiny\nhead:\n  pooling: max\n", ["head_value.yaml: head", "pooling"]),
        "head_type.yaml": ("base: ave_molt_tiny\nhead:\n  hidden_dim: wide\n",
                           ["head_type.yaml: head", "hidden_dim must be int or null"]),
        "head_other_task.yaml": ("base: avs_molt_tiny\nhead:\n  temporal_layers: 2\n",
                                 ["head_other_task.yaml: head", "temporal_layers", "accepted"]),
        "method_value.yaml": ("base: ave_molt_tiny\nmethod_config:\n  share_projections: layer\n",
                              ["method_value.yaml: method_config", "share_projections must be one of"]),
    }
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError) as error:
            load_config(str(tmp_path / name))
        for part in expected:
            assert part in str(error.value), (name, str(error.value))


def test_molt_backbones_lists_the_pairs_and_the_name_forms(capsys):
    from molt.app.cli import main
    from molt.backbones import BACKBONE_PAIRS

    assert main(["backbones"]) == 0
    text = capsys.readouterr().out
    assert all(f"  {name} " in text for name in BACKBONE_PAIRS)
    assert "timm:ANY_TIMM_MODEL" in text and "hf:/path/to/saved/folder" in text and "HF_HUB_OFFLINE=1" in text


@pytest.mark.parametrize("argv, expected", [
    (["synth", "ave", "--out", "x", "--videos", "0"], "molt synth: argument --videos: must be at least 1, got 0"),
    (["extract", "ave", "--data", "d", "--out", "o", "--chunk-size", "two"], "expected a whole number, got 'two'"),
    (["eval", "ave", "--data", "d", "--checkpoint", "c", "--batch-size", "0"], "--batch-size: must be at least 1"),
    (["trian"], "did you mean 'train'?"),
    (["train", "ave", "--data", "d", "--method", "molr"], "did you mean 'molt'?"),
    (["train", "ave"], "the following arguments are required: --data"),
])
def test_command_line_errors_are_one_line_with_the_fix(capsys, argv, expected):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and expected in error and "--help)" in error
