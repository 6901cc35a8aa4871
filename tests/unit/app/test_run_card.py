"""`molt train` ends with a model card that holds the run's metrics: the card of the session's 1-epoch AVE run parses as
hub metadata whose test accuracy and best validation score are those of the run's result.json."""
import json

import pytest

from molt.card import read_card_metadata


def test_the_card_of_a_run_has_its_metrics(ave_run):
    result = json.loads((ave_run / "result.json").read_text())
    meta = read_card_metadata(ave_run / "adapters" / "best")
    assert meta["library_name"] == "molt-av" and "ave" in meta["tags"] and meta["datasets"] == ["AVE"]
    [metric] = meta["model-index"][0]["results"][0]["metrics"]
    assert metric["type"] == "accuracy" and metric["value"] == pytest.approx(result["test"]["accuracy"], abs=1e-6)
    molt = meta["molt"]
    assert molt["results"]["test"] == result["test"]
    assert molt["best_validation"] == {"best_val_accuracy": result["best_val_accuracy"]}
    assert molt["environment"] == result["environment"] and molt["config"]["trainer"]["max_epochs"] == 1
    text = (ave_run / "adapters" / "best" / "README.md").read_text()
    assert f"| test | {result['test']['accuracy']:.4f} |" in text
