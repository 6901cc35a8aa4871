"""``molt app`` through its API, as the page's *Run* button calls it (``gradio_client``, no browser): the app is
served on a free localhost port with a generated tiny AVE model, and what it shows for an uploaded clip and for a
demo clip is what ``molt predict`` writes (same label, same per-second predictions, its timeline picture); the
inputs ``molt predict`` refuses (no audio track, too short, not a video) are one message on the page; without
Gradio, ``molt app`` is one line naming the extra. The browser test is tests/integration/test_app_browser.py."""
import socket
import sys

import numpy as np
import pytest
import torch

from helpers import predict_with_cli, video_without_audio
from molt.app.web import APP_EXTRA_HINT, headline, picture_of
from molt.config import load_config
from molt.data.media import write_clip
from molt.model import build_model


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tone_clip(path, seconds, fps=4, sample_rate=16000, colour=1):
    frames = np.zeros((int(seconds * fps), 64, 64, 3), dtype=np.uint8)
    frames[:, 16:48, 16:48, colour] = 200
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    write_clip(path, frames, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), fps=fps, sample_rate=sample_rate)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``(client, adapters, clips folder)``: the app serving a generated tiny AVE model on a free port."""
    pytest.importorskip("gradio", reason="molt app needs the app extra: pip install 'molt-av[app]'")
    from gradio_client import Client

    from molt.app.web import serve

    root = tmp_path_factory.mktemp("web")
    torch.manual_seed(1)
    model = build_model(load_config("ave_molt_tiny"), {"num_classes": 3, "class_names": ["dog", "car", "bell"]})
    adapters = model.save_pretrained(root / "adapters")
    clips = root / "clips"
    clips.mkdir()
    tone_clip(clips / "demo_tone.mp4", 4)
    port = free_port()
    app = serve(str(adapters), task="ave", port=port, clips=clips, block=False)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False), adapters, clips
    finally:
        app.close()


def _run(client, adapters, upload=None, clip=None, task="ave", question=""):
    from gradio_client import handle_file

    return client.predict(task, str(adapters), "", handle_file(str(upload)) if upload else None, clip, question,
                          api_name="/predict")


def test_the_page_shows_what_molt_predict_writes(served, tmp_path):
    client, adapters, _ = served
    video = tone_clip(tmp_path / "mine.mp4", 6, colour=0)
    label, picture, summary, shown = _run(client, adapters, upload=video)
    expected = predict_with_cli(adapters, "ave", tmp_path / "cli", "--video", str(video))
    assert shown["segments"] == expected["segments"] and shown["windows"] == expected["windows"]
    assert label.startswith(f"## {expected['clip_category']}\n")
    assert shown["clip_category"] == expected["clip_category"]
    with open(picture, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert summary.splitlines()[1:] == expected["summary"][1:]


def test_a_demo_clip_runs_by_name(served, tmp_path):
    client, adapters, clips = served
    label, picture, _, shown = _run(client, adapters, clip="demo_tone.mp4")
    expected = predict_with_cli(adapters, "ave", tmp_path / "cli", "--video", str(clips / "demo_tone.mp4"))
    assert shown["segments"] == expected["segments"] and shown["seconds"] == 4 and picture


@pytest.mark.parametrize("kind, expected", [("no audio", "no audio track"), ("too short", "too short"),
                                            ("not a video", "not a video that can be decoded")])
def test_inputs_molt_predict_refuses_are_one_message(served, tmp_path, kind, expected):
    client, adapters, _ = served
    if kind == "no audio":
        video = video_without_audio(tmp_path / "silent.mp4")
    elif kind == "too short":
        video = tone_clip(tmp_path / "blink.mp4", 0.5)
    else:
        video = tmp_path / "notes.mp4"
        video.write_text("not a video\n")
    label, picture, message, shown = _run(client, adapters, upload=video)
    assert (label, picture, shown) == ("", None, None)
    assert message.startswith(f"Cannot predict: {video.name}: ") and expected in message and "\n" not in message


def test_adapters_of_another_task_and_a_missing_question_are_messages(served, tmp_path):
    client, adapters, clips = served
    _, _, message, _ = _run(client, adapters, clip="demo_tone.mp4", task="avvp")
    assert message.startswith("Cannot predict: ") and "trained for task 'ave', not 'avvp'" in message
    _, _, message, _ = _run(client, adapters, clip="demo_tone.mp4", task="avqa")
    assert "type a question" in message
    _, _, message, _ = _run(client, adapters)
    assert "upload a video" in message


def test_headlines_and_pictures_of_every_task():
    assert headline("avqa", {"answer": "yes", "top": []}) == "yes"
    assert headline("avvp", {"labels": [{"event": "Dog"}, {"event": "Speech"}]}) == "Dog, Speech"
    assert headline("avvp", {"labels": []}) == "no event"
    assert headline("avs", {"frames": [{"foreground": 0.25}, {"foreground": 0.5}]}).endswith("25% 50%")
    files = ["out/mask_0.png", "out/overlay.png", "out/predictions.json"]
    assert picture_of({"files": files}) == "out/overlay.png"
    assert picture_of({"files": ["out/attention.png", "out/predictions.json"]}) == "out/attention.png"


def test_without_gradio_molt_app_is_one_line_naming_the_extra(monkeypatch, caplog):
    from molt.app.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)
    caplog.clear()
    assert main(["app"]) == 2
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert errors == [APP_EXTRA_HINT] and "pip install 'molt-av[app]'" in errors[0]


TASK_OPTIONS = {"avqa": {"question_vocab": ["<pad>", "<unk>", "is", "the", "violin", "playing"],
                         "answers": ["yes", "no", "two", "one", "zero", "three"]},
                "avs": {"mask_size": 32}, "avvp": {"num_classes": 3, "class_names": ["Dog", "Speech", "Car"]}}
PICTURES = {"avqa": "attention.png", "avs": "overlay.png", "avvp": "events.png"}


@pytest.mark.parametrize("task", sorted(TASK_OPTIONS))
def test_run_shows_each_tasks_label_and_picture_as_molt_predict_writes_them(task, tmp_path):
    """What *Run* computes for AVQA, AVS and AVVP (generated tiny models, no server): ``molt predict``'s result, its
    picture, and the headline the page shows."""
    from molt.app.web import ModelCache, run_prediction

    torch.manual_seed(3)
    adapters = build_model(load_config(f"{task}_molt_tiny"), TASK_OPTIONS[task]).save_pretrained(tmp_path / "m")
    video = tone_clip(tmp_path / "ten.mp4", 10)
    question = ["--question", "Is the violin playing?"] if task == "avqa" else []
    expected = predict_with_cli(adapters, task, tmp_path / "cli", "--video", str(video), *question)
    shown = run_prediction(ModelCache(), task, str(adapters), str(video), question="Is the violin playing?",
                           out_dir=tmp_path / "page")
    assert picture_of(shown) == str(tmp_path / "page" / PICTURES[task])
    def without_paths(result):    # the folders differ; AVS rows name their mask files
        rows = [{k: v for k, v in row.items() if k != "mask"} for row in result.get("frames", [])]
        return {**{key: value for key, value in result.items() if key != "files"}, "frames": rows}

    assert without_paths(shown) == without_paths(expected)
    label = headline(task, shown)
    if task == "avqa":
        assert label == expected["answer"] and len(expected["top"]) == 5
    elif task == "avvp":
        assert label == (", ".join(item["event"] for item in expected["labels"]) or "no event")
    else:
        assert label.count("%") == len(expected["frames"]) == 5
