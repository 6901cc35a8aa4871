"""The in-block methods with their own heads through the real trainer, checkpoint files and evaluation: one epoch of
``molt train ave --method dgsct --head official`` (and AVMoE's) on the generated AVE set, of ``molt train avqa
--method lavish --head official`` on a generated MUSIC-AVQA set and of ``molt train avs --method dgsct --head
official`` on a generated AVSBench set, then ``molt eval``."""
import json

import pytest

from molt.app.cli import main
from molt.app.evaluate import load_trained
from molt.tasks.ave.official import AVMoEAVEHead, DGSCTAVEHead
from molt.tasks.avqa.official import LAVisHAVQAHead
from molt.tasks.avs.official import DGSCTAVSHead


@pytest.mark.parametrize("method, head_class", [("dgsct", DGSCTAVEHead), ("avmoe", AVMoEAVEHead)])
def test_train_and_evaluate_with_the_official_head(ave_data, tmp_path, method, head_class):
    _train_and_evaluate("ave", ave_data, tmp_path, method, head_class)


def test_lavish_trains_and_evaluates_with_its_own_avqa_head(tmp_path):
    from molt.tasks.avqa.synthetic import generate_avqa

    generate_avqa(tmp_path / "data", num_videos=8, seed=5, image_size=64, fps=2, workers=1, show_progress=False)
    model = _train_and_evaluate("avqa", tmp_path / "data", tmp_path, "lavish", LAVisHAVQAHead)
    assert model.method.pooled_modalities == ("audio",) and model.task.width == 512


def test_dgsct_trains_and_evaluates_with_its_own_avs_decoder(tmp_path):
    from molt.tasks.avs.synthetic import generate_avs

    generate_avs(tmp_path / "data", num_videos=8, seed=4, image_size=64, workers=1, show_progress=False)
    model = _train_and_evaluate("avs", tmp_path / "data", tmp_path, "dgsct", DGSCTAVSHead, metric="mIoU")
    assert model.task.setting == "s4" and model.method.pooled_modalities == ("audio",)


def _train_and_evaluate(task, data, tmp_path, method, head_class, metric="accuracy"):
    """One epoch of ``molt train TASK --method METHOD --head official``, the saved adapters reloaded, ``molt eval``
    (its ``metric`` in [0, 1]); the reloaded model."""
    out = tmp_path / "runs"
    assert main(["--quiet", "train", task, "--data", str(data), "--epochs", "1", "--batch-size", "4",
                 "--method", method, "--head", "official", "--out", str(out)]) == 0
    adapters = next(out.glob("*/version_0/adapters/best"))
    saved = json.loads((adapters / "adapter_config.json").read_text())
    assert saved["method"]["config"]["head"] == "official"
    model, config, _ = load_trained(adapters)
    assert type(model.task) is head_class and config.method_config.head == "official"
    assert main(["--quiet", "eval", task, "--data", str(data), "--checkpoint", str(adapters),
                 "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads(next((tmp_path / "eval").rglob("metrics.json")).read_text())
    value = metrics.get(metric, metrics.get("metrics", {}).get(metric))
    assert value is not None and 0.0 <= value <= 1.0
    return model
