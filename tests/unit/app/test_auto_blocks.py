"""blocks_visual / blocks_audio: auto: molt train measures the layers on training clips and takes the late blocks."""
import json

import pytest

from molt.app.train import train
from molt.config import load_config
from molt.model import AudioVisualModel


def test_auto_blocks_are_chosen_recorded_and_rebuilt(ave_data, tmp_path):
    config = load_config("ave_molt_tiny", {"trainer": {"max_epochs": 1},
                                           "method_config": {"blocks_visual": "auto", "blocks_audio": "auto"}})
    result = train(config, data=ave_data, out_dir=tmp_path, enable_progress_bar=False)
    chosen = result["auto_blocks"]
    assert set(chosen) == {"visual", "audio"} and all(chosen[side] and max(chosen[side]) == 7 for side in chosen)
    measured = json.loads((tmp_path / "ave_molt_tiny" / "version_0" / "layers" / "layer_similarity.json").read_text())
    assert {side: measured["backbones"][side]["split"]["late"] for side in chosen} == chosen
    assert len(measured["backbones"]["visual"]["similarity"]) == 8 and measured["auto"] == ["visual", "audio"]
    model = AudioVisualModel.from_pretrained(result["adapters"])   # the adapters name the chosen blocks
    assert model.features.visual_blocks == chosen["visual"] and model.features.audio_blocks == chosen["audio"]


def test_auto_blocks_cannot_come_from_a_feature_cache_nor_reach_the_library(ave_data, tmp_path):
    from molt.model import build_model

    config = load_config("ave_molt_tiny", {"method_config": {"blocks_visual": "auto"}})
    with pytest.raises(ValueError, match="blocks auto measures the backbones.*feature cache"):
        train(config, data=ave_data, out_dir=tmp_path, features=tmp_path / "cache", enable_progress_bar=False)
    with pytest.raises(ValueError, match="'auto' is chosen from data by molt train"):
        build_model(config, {"num_classes": 28})
