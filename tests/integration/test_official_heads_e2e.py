"""The in-block methods with their own heads through the real trainer, checkpoint files and evaluation: one epoch of
``molt train ave --method dgsct --head official`` (and AVMoE's) on the generated AVE set, and of DG-SCT's AVS decoder
on a generated AVSBench set, then ``molt eval``."""
import json

import pytest

from molt.app.cli import main
from molt.app.evaluate import load_trained
from molt.tasks.ave.official import AVMoEAVEHead, DGSCTAVEHead


@pytest.mark.parametrize("method, head_class", [("dgsct", DGSCTAVEHead), ("avmoe", AVMoEAVEHead)])
def test_train_and_evaluate_with_the_official_head(ave_data, tmp_path, method, head_class):
    out = tmp_path / "runs"
    assert main(["--quiet", "train", "ave", "--data", str(ave_data), "--epochs", "1", "--batch-size", "4",
                 "--method", method, "--head", "official", "--out", str(out)]) == 0
    adapters = next(out.glob("*/version_0/adapters/best"))
    saved = json.loads((adapters / "adapter_config.json").read_text())
    assert saved["method"]["config"]["head"] == "official"
    model, config, _ = load_trained(adapters)
    assert type(model.task) is head_class and config.method_config.head == "official"
    assert main(["--quiet", "eval", "ave", "--data", str(ave_data), "--checkpoint", str(adapters),
                 "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads(next((tmp_path / "eval").rglob("metrics.json")).read_text())
    accuracy = metrics.get("accuracy", metrics.get("metrics", {}).get("accuracy"))
    assert accuracy is not None and 0.0 <= accuracy <= 1.0


def test_train_and_evaluate_avs_with_dgscts_own_decoder(tmp_path):
    from molt.tasks.avs.official import DGSCTAVSHead
    from molt.tasks.avs.synthetic import generate_avs

    generate_avs(tmp_path / "data", num_videos=8, seed=4, image_size=64, workers=1, show_progress=False)
    out = tmp_path / "runs"
    assert main(["--quiet", "train", "avs", "--data", str(tmp_path / "data"), "--epochs", "1", "--batch-size", "2",
                 "--method", "dgsct", "--head", "official", "--out", str(out)]) == 0
    adapters = next(out.glob("*/version_0/adapters/best"))
    model, config, _ = load_trained(adapters)
    assert type(model.task) is DGSCTAVSHead and model.task.setting == "s4"
    assert main(["--quiet", "eval", "avs", "--data", str(tmp_path / "data"), "--checkpoint", str(adapters),
                 "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads(next((tmp_path / "eval").rglob("metrics.json")).read_text())
    miou = metrics.get("mIoU", metrics.get("metrics", {}).get("mIoU"))
    assert miou is not None and 0.0 <= miou <= 1.0
