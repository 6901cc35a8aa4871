"""`molt predict ave` on a user's video: after one epoch on the session's generated clips, the predictions written for
one of the generated videos are the model's predictions for that clip in the prepared data (what `molt eval`
scores), and the timeline is drawn; also on clips of 6, 20 and 23.4 s. The other tasks are in
tests/integration/test_predict_tasks.py."""
import shutil
import subprocess

import numpy as np
import pytest
import torch

from helpers import model_outputs, predict_with_cli, write_tone_clip
from molt.app.evaluate import load_trained
from molt.tasks import get_task


@pytest.fixture(scope="module")
def ave(ave_data, ave_run):
    """The session's AVE root and the best adapters of its 1-epoch run."""
    return ave_data, ave_run / "adapters" / "best"


def test_ave_prediction_of_a_generated_clip_is_the_models_on_the_prepared_clip(ave, tmp_path):
    root, adapters = ave
    prepared = root / "prepared"
    dataset = get_task("ave").dataset(prepared, "test")
    video_id = dataset.item_without_media(0)["video_id"]
    result = predict_with_cli(adapters, "ave", tmp_path, "--video", str(root / "AVE" / f"{video_id}.mp4"))
    model, outputs = model_outputs(adapters, prepared, "test", 0)
    names = list(model.task_options["class_names"]) + ["background"]
    assert [s["label"] for s in result["segments"]] == [names[i] for i in model.task.predict(outputs)[0].tolist()]
    np.testing.assert_allclose([s["event_probability"] for s in result["segments"]],
                               torch.sigmoid(outputs["event_logits"][0]).numpy(), atol=1e-4)
    assert result["seconds"] == 10 and result["windows"] == [{**result["windows"][0], "start": 0, "end": 10}]
    assert (tmp_path / "timeline.png").stat().st_size > 1000


@pytest.mark.parametrize("seconds, windows", [(6, [(0, 6)]), (20, [(0, 10), (10, 20)]), (23.4, [(0, 10), (10, 20),
                                                                                                 (20, 23)])])
def test_ave_any_length_is_one_stitched_timeline(ave, tmp_path, seconds, windows):
    _, adapters = ave
    video = write_tone_clip(tmp_path / f"clip_{seconds}s.mp4", seconds)
    result = predict_with_cli(adapters, "ave", tmp_path / "out", "--video", str(video))
    assert [(w["start"], w["end"]) for w in result["windows"]] == windows
    assert result["seconds"] == windows[-1][1] and [s["second"] for s in result["segments"]] == list(
        range(windows[-1][1]))
    # each window is what the model predicts for those seconds alone
    model, _, _ = load_trained(adapters)
    model.eval()
    from molt.tasks.predicting import decode_video

    media = decode_video(model, video, result["seconds"])
    names = list(model.task_options["class_names"]) + ["background"]
    for start, end in windows:
        with torch.no_grad():
            outputs = model({key: value[None, start:end] for key, value in media.items()}).predictions
        assert [s["label"] for s in result["segments"][start:end]] == \
            [names[i] for i in model.task.predict(outputs)[0].tolist()]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
@pytest.mark.parametrize("seconds", [6, 20])
def test_ave_clip_made_by_ffmpeg(ave, tmp_path, seconds):
    _, adapters = ave
    video = tmp_path / f"ffmpeg_{seconds}.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc=size=96x96:rate=10:duration="
                    f"{seconds}", "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-shortest",
                    "-c:v", "libx264", "-c:a", "aac", str(video)], check=True)
    result = predict_with_cli(adapters, "ave", tmp_path / "out", "--video", str(video))
    assert result["seconds"] == seconds and len(result["segments"]) == seconds
