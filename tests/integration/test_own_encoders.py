"""Any encoder pair end to end: every task trains an epoch on a tiny timm ViT + a tiny Hugging Face AST saved to a
folder (read offline), eval rebuilds the model from its adapters, one run uses a Whisper encoder, an in-block method
runs inside the ViT and AST blocks, a feature cache serves only the encoders it was made with, and the CLI's
bad-input paths end in one line and exit code 2. Nothing is downloaded."""
import json
from pathlib import Path

import pytest
import yaml

from helpers import predict_with_cli
from hf_models import save_tiny_ast, save_tiny_wav2vec2, save_tiny_whisper
from molt.app.cli import main
from molt.tasks import get_task


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return {"ast": save_tiny_ast(root / "ast"), "whisper": save_tiny_whisper(root / "whisper"),
            "wav2vec2": save_tiny_wav2vec2(root / "wav2vec2")}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _config(folder: Path, task: str, audio: Path, **method_config) -> Path:
    """A YAML config: the task's tiny preset on a 64-px timm ViT (random weights) and an hf: audio encoder."""
    data = {"base": f"{task}_molt_tiny",
            "backbone": {"visual": "timm:test_vit", "audio": f"hf:{audio}", "visual_options": {"img_size": 64}},
            "visual_weights": "random"}
    if method_config:
        data["method_config"] = method_config
    path = folder / f"{task}_own.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _generate(task: str, root: Path) -> tuple[Path, list[str]]:
    """A few generated clips of ``task``; the extra arguments its verbs need."""
    if task == "ave":
        from molt.tasks.ave.synthetic import generate_ave
        generate_ave(root, num_videos=16, seed=2, image_size=64, workers=1, show_progress=False)
        return root, []
    if task == "avs":
        from molt.tasks.avs.synthetic import generate_avs
        generate_avs(root, num_videos=12, seed=4, image_size=64, workers=1, show_progress=False)
        return root, ["--setting", "s4"]
    if task == "avqa":
        from molt.tasks.avqa.synthetic import generate_avqa
        generate_avqa(root, num_videos=10, seed=5, image_size=64, fps=2, workers=1, show_progress=False)
        return root, []
    from molt.tasks.avvp.synthetic import generate_llp
    generate_llp(root, num_videos=16, seed=3, image_size=64, workers=1, show_progress=False)
    return root, []


@pytest.mark.parametrize("task", ["ave", "avs", "avqa", "avvp"])
def test_every_task_trains_on_a_timm_vit_and_an_hf_ast(task, encoders, tmp_path):
    data, extra = _generate(task, tmp_path / "data")
    config = _config(tmp_path, task, encoders["ast"])
    out = tmp_path / "runs"
    assert main(["--quiet", "train", task, "--data", str(data), "--config", str(config), "--epochs", "1",
                 "--out", str(out), *extra]) == 0
    adapters = next(out.glob("*/version_0/adapters/best"))
    assert adapters.parent.parent.parent.name == f"{task}_molt_test_vit+ast"
    saved = json.loads((adapters / "adapter_config.json").read_text())
    names = {entry["name"] for entry in saved["backbones"].values()}
    assert names == {"timm:test_vit", f"hf:{encoders['ast']}"}
    hashes = [entry["weights_sha256"] for entry in saved["backbones"].values() if entry["name"].startswith("hf:")]
    assert hashes and len(hashes[0]) == 64
    evaluated = tmp_path / "eval"
    assert main(["--quiet", "eval", task, "--data", str(data), "--checkpoint", str(adapters), "--out",
                 str(evaluated)]) == 0
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert 0.0 <= metrics[get_task(task).monitor] <= 1.0 and metrics["checkpoint"] == str(adapters)
    if task == "ave":               # molt predict reads a video at the encoders' own input size and rate
        video = sorted((data / "AVE").glob("*.mp4"))[0]
        predicted = predict_with_cli(adapters, "ave", tmp_path / "predicted", "--video", str(video))
        assert len(predicted["segments"]) == 10


def test_whisper_encoder_and_in_block_methods(encoders, tmp_path):
    data, _ = _generate("ave", tmp_path / "data")
    whisper = _config(tmp_path, "ave", encoders["whisper"])
    assert main(["--quiet", "train", "ave", "--data", str(data), "--config", str(whisper), "--epochs", "1",
                 "--out", str(tmp_path / "whisper")]) == 0
    result = json.loads(next((tmp_path / "whisper").glob("*/version_0/result.json")).read_text())
    assert 0.0 <= result["test"]["accuracy"] <= 1.0
    ast = _config(tmp_path, "ave", encoders["ast"])
    assert main(["--quiet", "train", "ave", "--data", str(data), "--config", str(ast), "--method", "lavish",
                 "--epochs", "1", "--out", str(tmp_path / "lavish")]) == 0
    assert next((tmp_path / "lavish").glob("ave_lavish_*/version_0/adapters/best/adapter_model.safetensors"))
    # wav2vec2 layers do not expose their sub-layers: in-block methods are refused in one line, exit code 2
    wav2vec2 = _config(tmp_path, "ave", encoders["wav2vec2"])
    assert main(["--quiet", "train", "ave", "--data", str(data), "--config", str(wav2vec2), "--method", "dgsct",
                 "--epochs", "1", "--out", str(tmp_path / "refused")]) == 2


def _one_error_line(caplog) -> str:
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR" and
              record.name == "molt"]
    caplog.clear()
    assert len(errors) == 1 and "\n" not in errors[0]
    return errors[0]


def test_the_cli_flags_and_a_feature_cache_bound_to_its_encoders(encoders, tmp_path, capsys, caplog):
    data, _ = _generate("ave", tmp_path / "data")
    flags = ["--config", "ave_molt_tiny", "--visual-backbone", "timm:test_vit", "--visual-weights", "random",
             "--audio-backbone", f"hf:{encoders['ast']}"]
    cache = tmp_path / "cache"
    assert main(["--quiet", "extract", "ave", "--data", str(data), "--out", str(cache), *flags]) == 0
    assert main(["--quiet", "train", "ave", "--data", str(data), "--features", str(cache), "--epochs", "1",
                 "--out", str(tmp_path / "runs"), *flags]) == 0
    caplog.clear()
    other = [*flags[:-1], f"hf:{encoders['whisper']}"]
    assert main(["--quiet", "train", "ave", "--data", str(data), "--features", str(cache), "--epochs", "1",
                 "--out", str(tmp_path / "other"), *other]) == 2
    assert "whisper" in _one_error_line(caplog)
    capsys.readouterr()
    assert main(["params", "ave", "--visual-backbone", "timm:test_vit", "--audio-backbone",
                 f"hf:{encoders['ast']}"]) == 0
    assert "test_vit+ast" in capsys.readouterr().out
    assert main(["--quiet", "analyze", "layers", "ave", "--data", str(data), "--out", str(tmp_path / "layers"),
                 "--visual-backbone", "timm:test_vit", "--visual-weights", "random", "--audio-backbone",
                 f"hf:{encoders['ast']}", "--clips", "2"]) == 0
    measured = json.loads((tmp_path / "layers" / "layer_similarity.json").read_text())
    assert measured["backbones"]["audio"]["name"] == f"hf:{encoders['ast']}"
    for bad, message in ((["--visual-backbone", "timm:no_such_model_xyz", "--visual-weights", "random"],
                          "no_such_model_xyz"),
                         (["--audio-backbone", f"hf:{tmp_path / 'missing'}"], "missing"),
                         (["--audio-backbone", "hf:someone/not-in-the-cache"], "not-in-the-cache")):
        assert main(["--quiet", "train", "ave", "--data", str(data), "--config", "ave_molt_tiny", "--epochs", "1",
                     "--out", str(tmp_path / "bad"), *bad]) == 2
        assert message in _one_error_line(caplog)
