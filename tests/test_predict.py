"""`molt predict TASK` on a user's video for every task: after one epoch on a few generated clips, the predictions
written for one of the generated videos are the model's predictions for that clip in the prepared data (what
`molt eval` scores), and the pictures are written. AVE also on clips of 6, 20 and 23.4 s. `molt analyze` on the
same models and data, for the tasks other than AVE (tests/test_analysis.py has AVE)."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from molt.app.cli import main
from molt.data.media import write_clip
from molt.app.evaluate import load_trained
from molt.tasks import get_task


def _train(task, data, out, *extra):
    assert main(["--quiet", "train", task, "--data", str(data), "--epochs", "1", "--out", str(out), *extra]) == 0
    return next(Path(out).glob("*/version_0/adapters/best"))


def _model_outputs(adapters, prepared, split, index):
    """The trained model's predictions for one prepared item (in eval mode, as `molt eval` runs it)."""
    model, config, _ = load_trained(adapters)
    model.eval()
    dataset = get_task(config.task).dataset(prepared, split)
    batch = default_collate([dataset[index]])
    with torch.no_grad():
        outputs = model(batch).predictions
    return model, outputs


def _predict(adapters, task, out, *inputs):
    assert main(["--quiet", "predict", task, "--checkpoint", str(adapters), "--out", str(out), *inputs]) == 0
    result = json.loads((out / "predictions.json").read_text())
    assert all(Path(path).is_file() for path in result["files"]), result["files"]
    return result


def _analyze(task, data, adapters, out):
    """`molt analyze layers|tokens TASK` on the task's data: the similarity table and the token maps are written."""
    assert main(["--quiet", "analyze", "layers", task, "--data", str(data), "--clips", "2", "--out",
                 str(out / "layers")]) == 0
    assert (out / "layers" / "layer_similarity.png").is_file() and list((out / "layers").glob("*.csv"))
    assert main(["--quiet", "analyze", "tokens", task, "--data", str(data), "--checkpoint", str(adapters),
                 "--clips", "1", "--out", str(out / "tokens")]) == 0
    assert (out / "tokens" / "tokens.json").is_file() and list((out / "tokens").glob("tokens_*.png"))


def _index_of(prepared, task, split, video_id_start):
    dataset = get_task(task).dataset(prepared, split)
    return next(i for i in range(len(dataset)) if dataset.item_without_media(i)["video_id"].startswith(video_id_start))


@pytest.fixture(scope="module")
def ave(tmp_path_factory):
    from molt.tasks.ave.synthetic import generate_ave

    root = tmp_path_factory.mktemp("predict_ave")
    generate_ave(root / "data", num_videos=16, seed=1, image_size=64, fps=4, workers=1, show_progress=False)
    return root, _train("ave", root / "data", root / "runs")


def test_ave_prediction_of_a_generated_clip_is_the_models_on_the_prepared_clip(ave, tmp_path):
    root, adapters = ave
    prepared = root / "data" / "prepared"
    dataset = get_task("ave").dataset(prepared, "test")
    video_id = dataset.item_without_media(0)["video_id"]
    result = _predict(adapters, "ave", tmp_path, "--video", str(root / "data" / "AVE" / f"{video_id}.mp4"))
    model, outputs = _model_outputs(adapters, prepared, "test", 0)
    names = list(model.task_options["class_names"]) + ["background"]
    assert [s["label"] for s in result["segments"]] == [names[i] for i in model.task.predict(outputs)[0].tolist()]
    np.testing.assert_allclose([s["event_probability"] for s in result["segments"]],
                               torch.sigmoid(outputs["event_logits"][0]).numpy(), atol=1e-4)
    assert result["seconds"] == 10 and result["windows"] == [{**result["windows"][0], "start": 0, "end": 10}]
    assert (tmp_path / "timeline.png").stat().st_size > 1000


def _tone_clip(path, seconds, fps=4, sample_rate=16000):
    frames = np.zeros((int(seconds * fps), 64, 64, 3), dtype=np.uint8)
    frames[:, 16:48, 16:48, 0] = 220
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    write_clip(path, frames, (0.3 * np.sin(2 * np.pi * 523 * t)).astype(np.float32), fps=fps,
               sample_rate=sample_rate)
    return path


@pytest.mark.parametrize("seconds, windows", [(6, [(0, 6)]), (20, [(0, 10), (10, 20)]), (23.4, [(0, 10), (10, 20),
                                                                                                 (20, 23)])])
def test_ave_any_length_is_one_stitched_timeline(ave, tmp_path, seconds, windows):
    _, adapters = ave
    video = _tone_clip(tmp_path / f"clip_{seconds}s.mp4", seconds)
    result = _predict(adapters, "ave", tmp_path / "out", "--video", str(video))
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
    result = _predict(adapters, "ave", tmp_path / "out", "--video", str(video))
    assert result["seconds"] == seconds and len(result["segments"]) == seconds


def test_avvp_prediction_is_the_models_on_the_prepared_clip(tmp_path):
    from molt.tasks.avvp.synthetic import generate_llp

    generate_llp(tmp_path / "data", num_videos=20, seed=3, image_size=64, workers=1, show_progress=False)
    adapters = _train("avvp", tmp_path / "data", tmp_path / "runs")
    prepared = tmp_path / "data" / "prepared"
    video = sorted((tmp_path / "data" / "LLP_dataset" / "video").glob("*.mp4"))[0]
    result = _predict(adapters, "avvp", tmp_path / "out", "--video", str(video))
    index = _index_of(prepared, "avvp", "train", video.stem)
    model, outputs = _model_outputs(adapters, prepared, "train", index)
    predicted = model.task.predict(outputs)[0]
    names = list(model.task_options["class_names"])
    for t, row in enumerate(result["segments"]):
        for s, stream in enumerate(("audio", "visual")):
            assert [e["event"] for e in row[stream]] == [names[c] for c in torch.nonzero(predicted[t, s]).flatten()]
    assert (tmp_path / "out" / "events.png").stat().st_size > 1000
    _analyze("avvp", tmp_path / "data", adapters, tmp_path)


def test_avs_prediction_from_frames_and_wav_is_the_models_on_the_prepared_clip(tmp_path):
    from molt.tasks.avs.synthetic import generate_avs

    generate_avs(tmp_path / "data", num_videos=16, seed=4, image_size=64, workers=1, show_progress=False)
    adapters = _train("avs", tmp_path / "data", tmp_path / "runs")
    prepared = next((tmp_path / "data").glob("prepared_s4"))
    dataset = get_task("avs").dataset(prepared, "test")
    name = dataset.item_without_media(0)["video_id"]
    frames = next((tmp_path / "data").rglob(f"visual_frames/*/*/{name}"))
    audio = next((tmp_path / "data").rglob(f"{name}.wav"))
    result = _predict(adapters, "avs", tmp_path / "out", "--frames", str(frames), "--audio", str(audio),
                      "--overlay-video", "yes")
    model, outputs = _model_outputs(adapters, prepared, "test", 0)
    masks = model.task.predict(outputs)[0].numpy()
    for row, mask in zip(result["frames"], masks):
        np.testing.assert_array_equal(np.asarray(Image.open(row["mask"])) > 0, mask > 0)
    assert [row["foreground"] for row in result["frames"]] == pytest.approx(masks.mean(axis=(1, 2)), abs=1e-4)
    assert (tmp_path / "out" / "overlay.png").is_file() and (tmp_path / "out" / "overlay.mp4").stat().st_size > 0
    _analyze("avs", tmp_path / "data", adapters, tmp_path)


def test_avqa_answer_is_the_models_for_that_question(tmp_path):
    from molt.tasks.avqa.synthetic import generate_avqa

    generate_avqa(tmp_path / "data", num_videos=12, seed=5, image_size=64, fps=2, workers=1, show_progress=False)
    adapters = _train("avqa", tmp_path / "data", tmp_path / "runs")
    prepared = tmp_path / "data" / "prepared"
    row = json.loads((prepared / "index.json").read_text())["rows"][0]
    index = _index_of(prepared, "avqa", row["split"], row["video_id"])
    video = next((tmp_path / "data").rglob(f"{row['video_id']}.mp4"))
    question = row["question"]
    assert get_task("avqa").dataset(prepared, row["split"]).item_without_media(index)["question_id"] == \
        row["question_id"]
    result = _predict(adapters, "avqa", tmp_path / "out", "--video", str(video), "--question", question)
    model, outputs = _model_outputs(adapters, prepared, row["split"], index)
    probabilities = torch.softmax(outputs["answer_logits"][0], dim=-1)
    answers = model.task_options["answers"]
    assert result["answer"] == answers[int(probabilities.argmax())]
    assert [r["probability"] for r in result["top"]] == pytest.approx(
        torch.topk(probabilities, k=len(result["top"])).values.tolist(), abs=1e-4)
    assert result["question_type"]["family"] == row["family"] and result["question_type"]["subtype"] == \
        row["subtype"]
    assert result["unknown_words"] == [] and (tmp_path / "out" / "attention.png").is_file()
    unknown = _predict(adapters, "avqa", tmp_path / "out2", "--video", str(video), "--question",
                       "Is the banjo playing longer than the theremin?")
    assert unknown["unknown_words"] == ["banjo", "theremin"]
    assert unknown["question_type"]["template"] == "Is the <Object> playing longer than the <Object>?"
    _analyze("avqa", tmp_path / "data", adapters, tmp_path)
