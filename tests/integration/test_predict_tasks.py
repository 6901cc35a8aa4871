"""`molt predict TASK` for AVVP, AVS and MUSIC-AVQA: after one epoch on a few generated clips, the predictions written
for one of the generated videos are the model's predictions for that clip in the prepared data (what `molt eval`
scores), and the pictures are written; `molt analyze layers|tokens` on the same models and data."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import model_outputs, predict_with_cli, train_one_epoch
from molt.app.cli import main
from molt.tasks import get_task


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


def test_avvp_prediction_is_the_models_on_the_prepared_clip(tmp_path):
    from molt.tasks.avvp.synthetic import generate_llp

    generate_llp(tmp_path / "data", num_videos=20, seed=3, image_size=64, workers=1, show_progress=False)
    adapters = train_one_epoch("avvp", tmp_path / "data", tmp_path / "runs")
    prepared = tmp_path / "data" / "prepared"
    video = sorted((tmp_path / "data" / "LLP_dataset" / "video").glob("*.mp4"))[0]
    result = predict_with_cli(adapters, "avvp", tmp_path / "out", "--video", str(video))
    index = _index_of(prepared, "avvp", "train", video.stem)
    model, outputs = model_outputs(adapters, prepared, "train", index)
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
    adapters = train_one_epoch("avs", tmp_path / "data", tmp_path / "runs")
    prepared = next((tmp_path / "data").glob("prepared_s4"))
    dataset = get_task("avs").dataset(prepared, "test")
    name = dataset.item_without_media(0)["video_id"]
    frames = next((tmp_path / "data").rglob(f"visual_frames/*/*/{name}"))
    audio = next((tmp_path / "data").rglob(f"{name}.wav"))
    result = predict_with_cli(adapters, "avs", tmp_path / "out", "--frames", str(frames), "--audio", str(audio),
                              "--overlay-video")
    model, outputs = model_outputs(adapters, prepared, "test", 0)
    masks = model.task.predict(outputs)[0].numpy()
    for row, mask in zip(result["frames"], masks):
        np.testing.assert_array_equal(np.asarray(Image.open(row["mask"])) > 0, mask > 0)
    assert [row["foreground"] for row in result["frames"]] == pytest.approx(masks.mean(axis=(1, 2)), abs=1e-4)
    assert (tmp_path / "out" / "overlay.png").is_file() and (tmp_path / "out" / "overlay.mp4").stat().st_size > 0
    _analyze("avs", tmp_path / "data", adapters, tmp_path)


def test_avqa_answer_is_the_models_for_that_question(tmp_path):
    from molt.tasks.avqa.synthetic import generate_avqa

    generate_avqa(tmp_path / "data", num_videos=12, seed=5, image_size=64, fps=2, workers=1, show_progress=False)
    adapters = train_one_epoch("avqa", tmp_path / "data", tmp_path / "runs")
    prepared = tmp_path / "data" / "prepared"
    row = json.loads((prepared / "index.json").read_text())["rows"][0]
    index = _index_of(prepared, "avqa", row["split"], row["video_id"])
    video = next((tmp_path / "data").rglob(f"{row['video_id']}.mp4"))
    question = row["question"]
    assert get_task("avqa").dataset(prepared, row["split"]).item_without_media(index)["question_id"] == \
        row["question_id"]
    result = predict_with_cli(adapters, "avqa", tmp_path / "out", "--video", str(video), "--question", question)
    model, outputs = model_outputs(adapters, prepared, row["split"], index)
    probabilities = torch.softmax(outputs["answer_logits"][0], dim=-1)
    answers = model.task_options["answers"]
    assert result["answer"] == answers[int(probabilities.argmax())]
    assert [r["probability"] for r in result["top"]] == pytest.approx(
        torch.topk(probabilities, k=len(result["top"])).values.tolist(), abs=1e-4)
    assert result["question_type"]["family"] == row["family"] and result["question_type"]["subtype"] == \
        row["subtype"]
    assert result["unknown_words"] == [] and (tmp_path / "out" / "attention.png").is_file()
    unknown = predict_with_cli(adapters, "avqa", tmp_path / "out2", "--video", str(video), "--question",
                       "Is the banjo playing longer than the theremin?")
    assert unknown["unknown_words"] == ["banjo", "theremin"]
    assert unknown["question_type"]["template"] == "Is the <Object> playing longer than the <Object>?"
    _analyze("avqa", tmp_path / "data", adapters, tmp_path)
