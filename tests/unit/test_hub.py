"""Adapters by Hugging Face repository id, offline: a generated model is put into a Hugging Face cache in the layout
``huggingface_hub`` reads (``models--ORG--NAME/{refs,snapshots}``) under a test ``HF_HOME``, and with
``HF_HUB_OFFLINE=1`` ``from_pretrained`` and ``molt eval|predict --checkpoint ORG/NAME`` load it by id, revision,
tag and commit; a revision or a file the cache lacks, and a backbone weights file that is missing, are one line
(exit code 2 in the CLI). The model card of a save parses as hub metadata."""
import json
import shutil

import numpy as np
import pytest
import torch

from molt.card import metric_id, read_card_metadata
from molt.checkpoints import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from molt.config import load_config
from molt.data.media import write_clip
from molt.hub import HubError, parse_hub_id, resolve_pretrained
from molt.model import AudioVisualModel, build_model

REPO = "molt-tests/molt-ave-tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OLD_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
RESULTS = {"test": {"accuracy": 0.625, "loss": 1.25}, "best_val_accuracy": 0.75, "monitor": "val/accuracy",
           "environment": {"torch": torch.__version__, "python": "3.11"}}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """A generated tiny AVE model (random adapters, 3 classes) saved with a run's results."""
    torch.manual_seed(0)
    model = build_model(load_config("ave_molt_tiny"), {"num_classes": 3, "class_names": ["dog", "car", "bell"]})
    for parameter in model.trainable_state_dict().values():     # not the initial values: loading must copy them
        parameter.data.add_(0.01)
    folder = tmp_path_factory.mktemp("adapters") / "best"
    model.save_pretrained(folder, results=RESULTS)
    return folder


def populate_cache(hf_home, folder, repo=REPO, refs=None, drop=()):
    """``folder``'s files as snapshots of ``repo`` in the cache of ``hf_home`` (refs: name -> commit)."""
    refs = refs or {"main": COMMIT}
    storage = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    for name, commit in refs.items():
        snapshot = storage / "snapshots" / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        for file in folder.iterdir():
            if file.name not in drop:
                shutil.copy2(file, snapshot / file.name)
        ref = storage / "refs" / name
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    return storage


@pytest.fixture
def offline_cache(tmp_path, monkeypatch, adapters):
    hf_home = tmp_path / "hf_home"
    populate_cache(hf_home, adapters, refs={"main": COMMIT, "v1": OLD_COMMIT})
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hf_home


def cli_errors(argv, caplog):
    """Exit code 2 and the one error line ``molt`` logged for ``argv``."""
    from molt.app.cli import main

    caplog.clear()
    assert main(argv) == 2
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


def _same_tensors(a, b):
    left, right = a.trainable_state_dict(), b.trainable_state_dict()
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name


def test_hub_ids_parse_with_and_without_revision():
    assert parse_hub_id("org/name") == ("org/name", None)
    assert parse_hub_id("org/name@v2") == ("org/name", "v2")
    assert parse_hub_id("org/name", "main") == ("org/name", "main")
    with pytest.raises(HubError, match="disagree"):
        parse_hub_id("org/name@v2", "v3")


def test_a_repository_id_loads_offline_from_the_cache_by_branch_tag_and_commit(offline_cache, adapters):
    local = AudioVisualModel.from_pretrained(adapters)
    storage = offline_cache / "hub" / f"models--{REPO.replace('/', '--')}"
    assert resolve_pretrained(REPO) == storage / "snapshots" / COMMIT
    assert resolve_pretrained(f"{REPO}@v1") == storage / "snapshots" / OLD_COMMIT
    assert resolve_pretrained(REPO, revision=OLD_COMMIT) == storage / "snapshots" / OLD_COMMIT
    _same_tensors(AudioVisualModel.from_pretrained(REPO), local)
    _same_tensors(AudioVisualModel.from_pretrained(f"{REPO}@v1"), local)


def test_a_revision_the_cache_lacks_is_one_line_naming_the_cached_ones(offline_cache, caplog):
    with pytest.raises(HubError) as error:
        resolve_pretrained(f"{REPO}@v9")
    message = str(error.value)
    assert "\n" not in message and "'v9'" in message and "main" in message and "v1" in message
    assert "HF_HUB_OFFLINE" in message
    line = cli_errors(["eval", "ave", "--data", "unused", "--checkpoint", REPO, "--revision", "v9"], caplog)
    assert "'v9'" in line and REPO in line


def test_a_repository_without_the_weights_file_is_one_line(tmp_path, monkeypatch, adapters, caplog):
    hf_home = tmp_path / "hf_home"
    populate_cache(hf_home, adapters, repo="molt-tests/incomplete", drop=(ADAPTER_WEIGHTS_NAME,))
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match=f"has no {ADAPTER_WEIGHTS_NAME}"):
        AudioVisualModel.from_pretrained("molt-tests/incomplete")
    line = cli_errors(["predict", "ave", "--checkpoint", "molt-tests/incomplete", "--video", __file__], caplog)
    assert ADAPTER_WEIGHTS_NAME in line and "molt-tests/incomplete" in line


def test_a_repository_not_in_the_cache_offline_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="not in the Hugging Face cache .*HF_HUB_OFFLINE=1"):
        resolve_pretrained("molt-tests/nowhere")
    with pytest.raises(FileNotFoundError, match="is not an adapter directory"):
        resolve_pretrained(tmp_path / "a" / "b" / "missing")


def test_predict_by_repository_id_equals_predict_by_folder(offline_cache, adapters, tmp_path):
    from helpers import predict_with_cli

    frames = np.zeros((12, 64, 64, 3), dtype=np.uint8)
    frames[:, 16:48, 16:48, 1] = 200
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * 16000) / 16000)).astype(np.float32)
    video = tmp_path / "clip.mp4"
    write_clip(video, frames, audio, fps=4, sample_rate=16000)
    by_folder = predict_with_cli(adapters, "ave", tmp_path / "folder", "--video", str(video))
    by_id = predict_with_cli(REPO, "ave", tmp_path / "id", "--video", str(video))
    assert by_id["segments"] == by_folder["segments"] and by_id["clip_category"] == by_folder["clip_category"]


def test_a_missing_backbone_weights_file_names_it_and_where_the_card_says_to_get_it(tmp_path, adapters):
    folder = tmp_path / "adapters"
    shutil.copytree(adapters, folder)
    record = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())
    missing = tmp_path / "elsewhere" / "HTSAT_AudioSet_Saved_1.ckpt"
    record["extra_config"]["experiment"]["audio_weights"] = str(missing)
    (folder / ADAPTER_CONFIG_NAME).write_text(json.dumps(record))
    with pytest.raises(FileNotFoundError) as error:
        AudioVisualModel.from_pretrained(folder)
    message = str(error.value)
    assert "\n" not in message and str(missing) in message and "README.md" in message
    assert "HTS-Audio-Transformer" in message and "--audio-weights" in message


def test_the_card_of_a_save_is_hub_metadata_with_the_runs_results(adapters):
    from huggingface_hub import ModelCard

    meta = read_card_metadata(adapters)
    assert meta["library_name"] == "molt-av" and {"molt-av", "ave", "molt"} <= set(meta["tags"])
    assert meta["datasets"] == ["AVE"] and meta["metrics"] == ["accuracy"]
    [result] = meta["model-index"][0]["results"]
    assert result["metrics"] == [{"type": "accuracy", "name": "Acc. (accuracy)", "value": 0.625}]
    molt = meta["molt"]
    assert molt["task"] == "ave" and molt["method"] == "molt" and molt["config"]["method_config"]["num_tokens"]
    assert set(molt["backbones"]) == {"visual", "audio"}
    assert all("weights_sha256" in entry for entry in molt["backbones"].values())
    assert molt["best_validation"] == {"best_val_accuracy": 0.75} and molt["environment"] == RESULTS["environment"]
    card = ModelCard.load(adapters / "README.md")
    assert card.data.library_name == "molt-av"
    [evaluation] = card.data.eval_results
    assert evaluation.metric_type == "accuracy" and evaluation.metric_value == 0.625
    text = card.text
    assert "molt predict ave --checkpoint" in text and "| test | 0.6250 |" in text and "from_pretrained" in text


def test_metric_ids():
    assert [metric_id(name) for name in ("accuracy", "AQ/accuracy", "mIoU", "F_score", "segment_type_av_f1")] == [
        "accuracy", "accuracy", "mean_iou", "f1", "f1"]
