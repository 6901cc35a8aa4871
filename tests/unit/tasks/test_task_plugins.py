"""Tasks and methods are plugins: every registered task has every piece, the layering holds, the CLI has one shape,
the library verbs run without Lightning, and adapters of the previous format still load."""
import dataclasses
import inspect
import json

import pytest
import torch

from helpers import FIXTURES, ROOT
from molt.app.cli import build_parser, main
from molt.config import load_config, preset_names
from molt.methods import MethodSpec, get_method, method_names, register_method
from molt.model import AudioVisualModel, build_model
from molt.tasks import (HeadConfig, SegmentHeadConfig, TaskHead, TaskParts, TaskSpec, build_head, get_task,
                        register_task, registered_tasks, task_names)
from molt.tasks.ave import AVEHeadConfig
from molt.tasks.avvp import AVVPHeadConfig
from molt.tasks import spec as spec_module

SRC = ROOT / "src" / "molt"
FIXTURE_V1 = FIXTURES / "adapters_v1"
TASK_FILES = ("__init__.py", "reader.py", "prepared.py", "synthetic.py", "head.py", "metrics.py", "figures.py")


# ------------------------------------------------------------------------------------------------------------------
# every task has every piece

def test_the_four_tasks_are_registered():
    assert task_names() == ["ave", "avqa", "avs", "avvp"]


@pytest.mark.parametrize("name", task_names())
def test_every_registered_task_has_every_piece(name):
    spec = get_task(name)
    folder = SRC / "tasks" / name
    for file in TASK_FILES:
        assert (folder / file).is_file(), f"task {name} has no {file}"
    assert inspect.isclass(spec.reader) and spec.reader.__module__ == f"molt.tasks.{name}.reader"
    assert spec.prepare.__module__ == spec.dataset.__module__ == f"molt.tasks.{name}.prepared"
    assert spec.synthesize.__module__ == f"molt.tasks.{name}.synthetic"
    assert issubclass(spec.head, TaskHead) and spec.head.__module__ == f"molt.tasks.{name}.head"
    assert spec.figures.__module__ == f"molt.tasks.{name}.figures"
    assert spec.monitor in [key for _, key in spec.metric_columns]
    assert "tiny" in spec.presets
    for backbone, preset in spec.presets.items():
        assert preset in preset_names(), f"{name}: preset {preset} is not shipped"
        config = load_config(preset)
        assert config.task == name and config.backbone == backbone
    assert set(spec.paper.parameters) <= set(spec.presets)
    # the head accepts what the real dataset decides (what molt params counts at paper scale)
    from molt.app.params import count_preset

    count = count_preset(spec.presets["tiny"])
    assert count.task == name and count.head_params > 0


def test_the_guide_lists_every_spec_field():
    guide = (ROOT / "docs" / "adding_a_task.md").read_text()
    for record in (TaskSpec, TaskParts):
        for field in dataclasses.fields(record):
            assert f"`{field.name}`" in guide, f"docs/adding_a_task.md does not describe {record.__name__}.{field.name}"
    for file in TASK_FILES:
        assert f"`{file}`" in guide


def test_a_spec_is_checked_when_it_is_made():
    ave = get_task("ave")
    with pytest.raises(ValueError, match="monitor metric 'mIoU' is not one of its metric columns"):
        dataclasses.replace(ave, monitor="mIoU")
    with pytest.raises(ValueError, match="needs a 'tiny' preset"):
        dataclasses.replace(ave, presets={"paper": "ave_molt_paper"})
    with pytest.raises(ValueError, match="default setting 'ms3'"):
        dataclasses.replace(ave, default_setting="ms3")


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="a task named 'ave' is already registered"):
        register_task(dataclasses.replace(get_task("ave"), description="another AVE"))
    with pytest.raises(ValueError, match="a method named 'molt' is already registered"):
        register_method(dataclasses.replace(get_method("molt")))
    assert method_names()[:3] == ["molt", "mettle", "lavish"]
    with pytest.raises(ValueError, match="unknown method 'nope'.*molt, mettle, lavish"):
        get_method("nope")
    with pytest.raises(ValueError, match="unknown task 'nope'.*ave, avqa, avs, avvp"):
        get_task("nope")


def test_a_new_task_is_one_registration(monkeypatch):
    """A registered task appears in every verb's TASK choices and drives the ablation table's columns."""
    toy = dataclasses.replace(get_task("ave"), name="toy", metric_columns=(("Acc.", "accuracy"), ("Loss", "loss")))
    monkeypatch.setitem(spec_module._TASKS, "toy", toy)
    assert "toy" in task_names()
    parser = build_parser()
    for argv in (["synth", "toy", "--out", "x"], ["train", "toy", "--data", "x"],
                 ["eval", "toy", "--data", "x", "--checkpoint", "c"], ["extract", "toy", "--data", "x", "--out", "y"],
                 ["prepare", "toy", "--data", "x"], ["ablate", "toy", "--table", "7", "--data", "x"],
                 ["analyze", "layers", "toy", "--data", "x"]):
        assert parser.parse_args(argv).task == "toy"
    from molt.app.ablate import AblationTable

    table = AblationTable(table=7, title="Fusion", task="toy", setting=None, base_config="ave_molt_tiny",
                          rows=[{"variant": "MLP", "test": {"accuracy": 0.5, "loss": 0.25}, "trainable_params": 10,
                                 "activation_bytes": 2 ** 20}])
    assert "| TOY Acc. | TOY Loss |" in table.markdown() and "| 50.0 | 25.0 |" in table.markdown()


def test_a_method_spec_decides_caching_and_heads():
    assert get_method("molt").reads_taps and get_method("mettle").reads_taps and not get_method("lavish").reads_taps
    assert isinstance(get_method("lavish"), MethodSpec) and get_method("lavish").heads_option == "out_heads"
    from molt.config import switch_method

    lavish = switch_method(load_config("ave_molt_tiny"), "lavish")
    assert lavish.method_config.out_heads == load_config("ave_molt_tiny").method_config.num_heads
    back = switch_method(lavish, "mettle")
    assert back.method_config.num_heads == lavish.method_config.out_heads


# ------------------------------------------------------------------------------------------------------------------
# layering


def test_the_old_registry_module_is_only_a_shim():
    import molt.task_registry as shim

    with pytest.warns(DeprecationWarning, match="use molt.tasks"):
        assert shim.get_task_spec is get_task
    with pytest.warns(DeprecationWarning):
        assert set(shim.TASK_SPECS) == set(task_names())
    users = [path for path in SRC.rglob("*.py") if path.name != "task_registry.py"
             and ("task_registry" in path.read_text() or "TASK_SPECS" in path.read_text())]
    assert users == []


# ------------------------------------------------------------------------------------------------------------------
# one CLI shape

def _subparsers(parser):
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_every_flag_has_help_and_task_verbs_take_the_task_first():
    verbs = _subparsers(build_parser())
    for name, sub in verbs.items():
        for action in sub._actions:
            if action.dest == "help" or action.help == "==SUPPRESS==":
                continue
            assert action.help, f"molt {name}: {action.option_strings or action.dest} has no help text"
    for name in ("prepare", "train", "eval", "predict", "extract", "ablate", "analyze", "bench", "synth"):
        positional = [a.dest for a in verbs[name]._actions if not a.option_strings and a.dest != "help"]
        assert "task" in positional, f"molt {name} takes no TASK"
    for name in ("prepare", "train", "eval", "extract", "ablate", "analyze"):
        assert "--data" in verbs[name]._option_string_actions


def test_each_verb_shows_only_its_own_flags_with_defaults():
    verbs = _subparsers(build_parser())
    extract_help = verbs["extract"].format_help()
    for training_only in ("--epochs", "--lr", "--strategy", "--precision", "--resume"):
        assert training_only not in extract_help
    assert "(default: float16)" in extract_help and "(default: 256)" in extract_help
    assert "--epochs" in verbs["train"].format_help() and "--epochs" in verbs["ablate"].format_help()
    assert "(default: runs)" in verbs["train"].format_help()
    assert "--root" not in verbs["prepare"].format_help() and "--task " not in verbs["extract"].format_help()
    assert "--method" not in verbs["ablate"].format_help()      # MoLT's own ablation tables
    assert "(default: 0)" in verbs["extract"].format_help()     # --node-rank: a zero default is shown too
    for flag, choices in (("--accelerator", "auto,cpu,gpu"), ("--precision", "32-true,bf16-mixed"),
                          ("--strategy", "auto,ddp")):
        assert choices in verbs["train"].format_help(), flag
    assert "--accelerator" in extract_help and "--device " not in extract_help


def test_old_spellings_work_with_a_deprecation_warning(caplog):
    from molt.app.cli import _modern_spelling

    tasks = task_names()
    cases = [
        (["extract", "--task", "avs", "--data", "d", "--out", "o"], ["extract", "avs", "--data", "d", "--out", "o"],
         "molt extract --task avs; use molt extract avs"),
        (["-q", "extract", "--data", "d", "--task=avs"], ["-q", "extract", "avs", "--data", "d"], "--task avs"),
        (["bench", "efficiency", "--backbone", "tiny"], ["bench", "efficiency", "ave", "--backbone", "tiny"],
         "molt bench efficiency without a task; use molt bench efficiency ave"),
        (["bench", "efficiency", "--task", "avs"], ["bench", "efficiency", "avs"], "molt bench efficiency avs"),
        (["analyze", "layers", "--task", "avqa", "--data", "d"], ["analyze", "layers", "avqa", "--data", "d"],
         "molt analyze layers avqa"),
        (["prepare", "ave", "--root", "r"], ["prepare", "ave", "--data", "r"],
         "molt prepare --root r; use molt prepare --data r"),
        (["extract", "ave", "--device", "cuda"], ["extract", "ave", "--accelerator", "gpu"],
         "molt extract --device cuda; use molt extract --accelerator gpu"),
        (["predict", "avs", "--overlay-video", "yes"], ["predict", "avs", "--overlay-video"], "a switch"),
        (["predict", "avs", "--overlay-video", "no"], ["predict", "avs"], "a switch"),
        (["params", "--all"], ["params"], "every preset is the default"),
        (["train", "ave", "--data", "d"], ["train", "ave", "--data", "d"], None),
        (["bench", "efficiency", "--setting", "ms3", "avs"], ["bench", "efficiency", "--setting", "ms3", "avs"], None),
        (["extract", "ave", "--device", "cuda:1"], ["extract", "ave", "--accelerator", "gpu"],
         "molt extract --device cuda:1; use molt extract --accelerator gpu"),
    ]
    for old, new, note in cases:
        modern, notes = _modern_spelling(old, tasks)
        assert modern == new, old
        assert (note is None and notes == []) or any(note in f"{a}; use {b}" for a, b in notes), (old, notes)
    with pytest.raises(ValueError, match="disagree"):
        _modern_spelling(["ablate", "ave", "--task", "avs", "--table", "7", "--data", "d"], tasks)
    assert main(["ablate", "ave", "--task", "avs", "--table", "7", "--data", "d"]) == 2
    assert main(["params", "--all", "--list"]) == 0
    assert "deprecated: molt params --all; use molt params (every preset is the default)" in caplog.text
    with pytest.raises(SystemExit):
        main(["prepare", "ave"])     # --data is required, as the usage line says


def test_a_task_help_lists_only_that_tasks_flags(capsys):
    for argv, shown, hidden in ((["predict", "avs", "--help"], ["--frames", "--overlay-video"], ["--question"]),
                                (["predict", "avqa", "--help"], ["--question"], ["--frames", "--overlay-video"]),
                                (["predict", "--help"], ["--question", "--frames"], []),
                                (["prepare", "ave", "--help"], [], ["--duplicates"])):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert all(flag in out for flag in shown) and not any(flag in out for flag in hidden), argv
        assert "usage: molt" in out and "[TASK]" not in out and "[--data" not in out


# ------------------------------------------------------------------------------------------------------------------
# adapters of the previous format

def test_adapters_of_format_1_load_and_reproduce_their_outputs(tmp_path):
    saved = json.loads((FIXTURE_V1 / "adapter_config.json").read_text())
    assert saved["format_version"] == 1 and all(name.startswith(("features.molt.", "task."))
                                                for name in saved["tensors"])
    model = AudioVisualModel.from_pretrained(FIXTURE_V1).eval()
    reference = json.loads((FIXTURE_V1 / "reference_outputs.json").read_text())
    generator = torch.Generator().manual_seed(1)
    batch = {"frames": torch.randint(0, 256, (1, 10, 3, 64, 64), dtype=torch.uint8, generator=generator),
             "audio": 0.1 * torch.randn(1, 10, 32000, generator=generator)}
    with torch.no_grad():
        predictions = model(batch).predictions
    for key, values in reference["predictions"].items():
        torch.testing.assert_close(predictions[key], torch.tensor(values), rtol=1e-4, atol=1e-5)
    # saved again, it is a directory of today's format (3) with the new names, and it loads to the same tensors
    model.save_pretrained(tmp_path / "v2")
    upgraded = json.loads((tmp_path / "v2" / "adapter_config.json").read_text())
    assert upgraded["format_version"] == 3
    assert any(name.startswith("features.method.") for name in upgraded["tensors"])
    assert not any(name.startswith("features.molt.") for name in upgraded["tensors"])
    again = AudioVisualModel.from_pretrained(tmp_path / "v2")
    for name, tensor in model.trainable_state_dict().items():
        assert torch.equal(tensor, again.trainable_state_dict()[name]), name


def test_a_damaged_adapter_directory_is_named(tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(FIXTURE_V1, broken)
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{weights}.*damaged or truncated"):
        AudioVisualModel.from_pretrained(broken)
    with pytest.raises(FileNotFoundError, match="is not an adapter directory"):
        AudioVisualModel.from_pretrained(tmp_path / "missing")


# ------------------------------------------------------------------------------------------------------------------
# the library verbs run without Lightning


def test_prepare_takes_out_and_limit_for_every_task(tmp_path, caplog):
    """``molt prepare TASK --data ROOT --out DIR --limit N`` is the same verb for every task."""
    from molt.tasks.avvp import generate_llp

    root = tmp_path / "llp"
    generate_llp(root, num_videos=12, seed=0, workers=1, show_progress=False)
    assert main(["prepare", "avvp", "--data", str(root), "--out", str(tmp_path / "few"), "--limit", "4",
                 "--workers", "1"]) == 0
    index = json.loads((tmp_path / "few" / "index.json").read_text())
    assert sum(index["splits"].values()) <= 4 and len([v for v in index["videos"] if v]) == 4
    assert not (root / "prepared").exists()


def test_every_head_has_a_typed_config_of_its_head_section():
    for spec in registered_tasks():
        config_class = spec.head.config_class
        assert issubclass(config_class, HeadConfig) and config_class is not HeadConfig, spec.name
        assert set(spec.head_option_names()) == {f.name for f in dataclasses.fields(config_class)}
        assert "dim" not in spec.head_option_names() and "dim" in spec.head_argument_names()


def test_the_segment_heads_share_their_option_checks():
    for kind in (AVEHeadConfig, AVVPHeadConfig):
        assert issubclass(kind, SegmentHeadConfig)
        with pytest.raises(ValueError, match="pooling must be one of"):
            kind(pooling="max")
        with pytest.raises(ValueError, match="modalities must be one of"):
            kind(modalities="text")
        with pytest.raises(ValueError, match="num_segments must be at least 1 \\(segments per clip\\), got 0"):
            kind(num_segments=0)
    with pytest.raises(ValueError, match="num_heads \\(3\\) must divide hidden_dim \\(32\\)"):
        build_head("avvp", dim=16, num_classes=4, hidden_dim=32, num_heads=3)
    with pytest.raises(ValueError, match="num_heads \\(3\\) must divide hidden_dim \\(16\\)"):
        build_head("ave", dim=16, num_classes=4, num_heads=3)


def test_the_head_reads_the_methods_modalities_unless_its_config_sets_them():
    audio_only = load_config("ave_molt_tiny", {"method_config": {"modalities": "audio"}})
    assert build_model(audio_only, {"num_classes": 3}, backbones_on_meta=True).task.modalities == "audio"
    assert "modalities" not in audio_only.to_dict()["head"]
    visual_head = load_config("ave_molt_tiny", {"head": {"modalities": "visual"}})
    assert build_model(visual_head, {"num_classes": 3}, backbones_on_meta=True).task.modalities == "visual"
