"""molt.checkpoints: files written by the previous release still load (adapter format 2, training checkpoints
without a format version), adapter format 3 writes the method config once, and the training-checkpoint and
random-generator helpers the trainer uses."""
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import FIXTURES
from molt.checkpoints import (ADAPTER_CONFIG_NAME, ADAPTER_FORMAT_VERSION, ADAPTER_WEIGHTS_NAME,
                              CHECKPOINT_FORMAT_VERSION, CONFIG_KEY, FORMAT_VERSION_KEY, MODEL_PREFIX, RNG_KEY,
                              STATE_DICT_KEY, TASK_OPTIONS_KEY, add_training_entries, capture_random_states,
                              read_training_checkpoint, restore_random_states)
from molt.config import load_config
from molt.model import AudioVisualModel, build_model


ADAPTERS_V2 = FIXTURES / "adapters_v2"
CHECKPOINT_V1 = FIXTURES / "checkpoint_v1" / "last.ckpt"


def _assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


# ------------------------------------------------------------------------------------------------------------------
# adapter directories

def test_adapters_of_format_2_load_with_the_same_tensors():
    saved = json.loads((ADAPTERS_V2 / ADAPTER_CONFIG_NAME).read_text())
    assert saved["format_version"] == 2                      # the method config twice: the layout of the fixture
    assert saved["extra_config"]["experiment"]["method_config"]["dim"] == saved["method"]["config"]["dim"] == 4
    model = AudioVisualModel.from_pretrained(ADAPTERS_V2)
    _assert_same_tensors(model.trainable_state_dict(), load_file(str(ADAPTERS_V2 / ADAPTER_WEIGHTS_NAME)))
    assert model.method.config.to_dict() == saved["method"]["config"]
    assert model.task_options == saved["extra_config"]["task_options"]


def test_format_3_writes_the_method_config_once_and_the_same_tensors(tmp_path):
    model = AudioVisualModel.from_pretrained(ADAPTERS_V2)
    model.save_pretrained(tmp_path / "v3")
    old = json.loads((ADAPTERS_V2 / ADAPTER_CONFIG_NAME).read_text())
    new = json.loads((tmp_path / "v3" / ADAPTER_CONFIG_NAME).read_text())
    assert new["format_version"] == ADAPTER_FORMAT_VERSION == 3
    assert "method_config" not in new["extra_config"]["experiment"]
    assert new["method"] == old["method"] and new["tensors"] == old["tensors"] and new["backbones"] == old["backbones"]
    old_experiment = {k: v for k, v in old["extra_config"]["experiment"].items() if k != "method_config"}
    # a trainer option added since that release is written at its default
    old_experiment["trainer"] = {**old_experiment["trainer"], "progress_every_n_steps": None}
    assert new["extra_config"]["experiment"] == old_experiment
    # the same file on disk: tensor names and trained values unchanged
    _assert_same_tensors(load_file(str(tmp_path / "v3" / ADAPTER_WEIGHTS_NAME)),
                         load_file(str(ADAPTERS_V2 / ADAPTER_WEIGHTS_NAME)))
    again = AudioVisualModel.from_pretrained(tmp_path / "v3")
    _assert_same_tensors(again.trainable_state_dict(), model.trainable_state_dict())
    assert again.method.config == model.method.config and again.task_options == model.task_options


def test_format_3_without_a_method_record_is_refused_in_one_line(tmp_path):
    shutil.copytree(ADAPTERS_V2, tmp_path / "adapters")
    record = json.loads((tmp_path / "adapters" / ADAPTER_CONFIG_NAME).read_text())
    record["format_version"] = 3
    record["method"] = None
    (tmp_path / "adapters" / ADAPTER_CONFIG_NAME).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="no method config under 'method'"):
        AudioVisualModel.from_pretrained(tmp_path / "adapters")


# ------------------------------------------------------------------------------------------------------------------
# training checkpoints

def test_a_training_checkpoint_of_the_previous_release_is_read_and_rebuilds_its_model():
    from molt.app.evaluate import load_trained

    state = read_training_checkpoint(CHECKPOINT_V1)              # weights_only, as eval, predict and resume read it
    assert FORMAT_VERSION_KEY not in state and {CONFIG_KEY, TASK_OPTIONS_KEY, RNG_KEY} <= set(state)
    model, config, task_options = load_trained(CHECKPOINT_V1, task="ave")
    trained = {name[len(MODEL_PREFIX):]: tensor for name, tensor in state[STATE_DICT_KEY].items()}
    _assert_same_tensors(model.trainable_state_dict(), trained)
    assert config.to_dict()["method_config"] == state[CONFIG_KEY]["method_config"]
    assert task_options == state[TASK_OPTIONS_KEY]
    # the same run exported its adapters after one epoch: the adapter fixture holds the same tensors
    _assert_same_tensors(trained, load_file(str(ADAPTERS_V2 / ADAPTER_WEIGHTS_NAME)))


def test_a_run_resumes_from_a_training_checkpoint_of_the_previous_release(tmp_path):
    from molt.app.train import train
    from molt.tasks.ave.synthetic import generate_ave

    data = tmp_path / "data"
    generate_ave(data, num_videos=12, seed=0, image_size=64, fps=4, workers=1, show_progress=False)
    config = load_config(str(FIXTURES / "checkpoint_v1" / "tiny.yaml"),
                         {"trainer": {"max_epochs": 2, "batch_size": 4, "seed": 0}})
    result = train(config, data=data, out_dir=tmp_path / "runs", resume=str(CHECKPOINT_V1),
                   enable_progress_bar=False)
    assert result["global_step"] == 2 * read_training_checkpoint(CHECKPOINT_V1)["global_step"]
    last = read_training_checkpoint(Path(result["run_dir"]) / "checkpoints" / "last.ckpt")
    assert last[FORMAT_VERSION_KEY] == CHECKPOINT_FORMAT_VERSION


def test_a_training_checkpoint_of_a_newer_format_is_refused(tmp_path):
    state = read_training_checkpoint(CHECKPOINT_V1)
    state[FORMAT_VERSION_KEY] = CHECKPOINT_FORMAT_VERSION + 1
    torch.save(state, tmp_path / "newer.ckpt")
    with pytest.raises(ValueError, match="newer than this library supports"):
        read_training_checkpoint(tmp_path / "newer.ckpt")


def test_training_entries_keep_only_trainable_tensors_and_plain_data(tmp_path):
    config = load_config("ave_molt_tiny")
    model = build_model(config, {"num_classes": 3})
    checkpoint = {STATE_DICT_KEY: {MODEL_PREFIX + name: tensor for name, tensor in model.state_dict().items()},
                  "global_step": 0}
    add_training_entries(checkpoint, model, config, {"num_classes": 3})
    assert sorted(checkpoint[STATE_DICT_KEY]) == sorted(MODEL_PREFIX + name for name in model.trainable_state_dict())
    torch.save(checkpoint, tmp_path / "new.ckpt")
    state = read_training_checkpoint(tmp_path / "new.ckpt")
    assert state[FORMAT_VERSION_KEY] == CHECKPOINT_FORMAT_VERSION and state[CONFIG_KEY] == config.to_dict()


def test_random_states_round_trip():
    states = capture_random_states()
    drawn = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    restore_random_states(states)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(drawn[0], again[0]) and np.array_equal(drawn[1], again[1]) and drawn[2] == again[2]
