"""``molt app``: a page on localhost to try a trained model on your own video (Gradio, the ``app`` extra).

Part of molt-av (Apache-2.0). Choose the task and the adapters (a folder or a Hugging Face repository id,
``org/name@revision``), upload a video or pick one of the generated demo clips, type a question for AVQA, and
the page shows what ``molt predict`` writes: the task's picture (AVE event timeline, AVS masks over the frames,
AVQA temporal attention under the answer, AVVP audio and visual events per second), the headline label (AVE's
event, AVQA's answer with its top-5 probabilities, AVVP's events, AVS's sounding area per frame), the summary
lines and ``predictions.json``. Each run is :func:`molt.app.evaluate.predict_with_model`, the code of ``molt
predict``, on the model loaded once per adapters. A video ``molt predict`` refuses (no audio track, too short, not
a video) is a message on the page, not an error page.

Gradio is imported only when the app is built (:func:`build_app`), so ``molt --help`` stays fast; without it,
:func:`require_gradio` says in one line how to install it.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = ["APP_EXTRA_HINT", "require_gradio", "ModelCache", "headline", "picture_of", "run_prediction",
           "demo_clips", "build_app", "serve", "DEFAULT_PORT"]

_logger = logging.getLogger(__name__)

APP_EXTRA_HINT = "molt app needs Gradio: pip install 'molt-av[app]'"
DEFAULT_PORT = 7860
#: the picture each task's predictor draws, in the order they are looked for
_PICTURES = ("timeline.png", "overlay.png", "attention.png", "events.png")
#: what a refused video means to someone who just uploaded it (MediaError.reason -> explanation)
_MEDIA_REASONS = {
    "no audio track": "this video has no audio track; the models listen as well as look: upload a video with sound",
    "no video track": "this file has no pictures (no video track); upload a video, not only sound",
    "too short": "this video is too short for the task; upload a longer one",
    "undecodable": "this file is not a video that can be decoded; upload an mp4, mkv, webm, ... video",
    "empty file": "this file is empty; upload the video again",
    "missing file": "the uploaded file is gone; upload it again",
}
#: fonts the page asks for: the machine's own, so that it loads nothing from outside
_SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "sans-serif")
_MONO_FONTS = ("ui-monospace", "monospace")


def require_gradio():
    """The ``gradio`` module, or an ``ImportError`` whose one line says how to install the ``app`` extra."""
    try:
        import gradio
    except ImportError:
        raise ImportError(APP_EXTRA_HINT) from None
    return gradio


class ModelCache:
    """The last model loaded, kept while the same adapters are asked for again (one model at a time);
    ``visual_weights`` / ``audio_weights``: this machine's backbone weights files, for adapters that record others
    (``molt app --audio-weights``)."""

    def __init__(self, *, trust_checkpoint: bool = False, visual_weights: str | None = None,
                 audio_weights: str | None = None) -> None:
        self.trust_checkpoint = trust_checkpoint
        self.weights = {"visual_weights": visual_weights, "audio_weights": audio_weights}
        self._key: tuple | None = None
        self._loaded: tuple | None = None
        self._lock = threading.Lock()

    def get(self, checkpoint: str, task: str | None, revision: str | None = None):
        """``(model, experiment config, task options)`` of :func:`molt.app.evaluate.load_trained`."""
        from .evaluate import load_trained

        key = (checkpoint, revision)
        with self._lock:
            if key != self._key:
                self._loaded = load_trained(checkpoint, trust_checkpoint=self.trust_checkpoint, revision=revision,
                                            **self.weights)
                self._key = key
            model, config, options = self._loaded
        if task and task != config.task:
            raise ValueError(f"{checkpoint} was trained for task {config.task!r}, not {task!r}; choose "
                             f"{config.task} or other adapters")
        return model, config, options


def headline(task: str, result: dict[str, Any]) -> str:
    """The label the page shows in large type: AVE's event, AVQA's answer, AVVP's events, AVS's sounding area."""
    if task == "ave":
        return str(result["clip_category"])
    if task == "avqa":
        return str(result["answer"])
    if task == "avvp":
        return ", ".join(label["event"] for label in result["labels"]) or "no event"
    if task == "avs":
        shares = [f"{100 * row['foreground']:.0f}%" for row in result["frames"]]
        return "sounding area per frame: " + " ".join(shares)
    return str(result.get("summary", [""])[0])


def _details(task: str, result: dict[str, Any]) -> str:
    """Markdown under the headline: AVQA's top-5 answers, AVE's probability, AVVP's video-level probabilities."""
    if task == "avqa":
        rows = [f"| {item['answer']} | {item['probability']:.3f} |" for item in result["top"]]
        return "\n".join(["| answer | probability |", "| --- | --- |", *rows])
    if task == "ave":
        return (f"probability {result['clip_category_probability']:.3f}, {result['seconds']} s read in "
                f"{len(result['windows'])} window(s)")
    if task == "avvp":
        return ", ".join(f"{label['event']} ({label['probability']:.2f})" for label in result["labels"])
    return ""


def picture_of(result: dict[str, Any]) -> str | None:
    """The task's picture among the files ``molt predict`` wrote."""
    files = [Path(path) for path in result.get("files", [])]
    for name in _PICTURES:
        for path in files:
            if path.name == name:
                return str(path)
    return next((str(path) for path in files if path.suffix == ".png"), None)


def refusal(error: Exception) -> str:
    """One line for a person: what is wrong with the input and what to do."""
    from ..data.media import MediaError

    if isinstance(error, MediaError):
        reason = _MEDIA_REASONS.get(error.reason, error.reason)
        return f"{Path(error.path).name}: {reason}" + (f" ({error.detail})" if error.detail else "")
    return str(error).replace("\n", " ")


def run_prediction(cache: ModelCache, task: str, checkpoint: str, video: str | None, *, question: str | None = None,
                   revision: str | None = None, out_dir: str | os.PathLike) -> dict[str, Any]:
    """What one press of *Run* does: ``molt predict``'s predictions (and files in ``out_dir``) for ``video``.

    Raises:
        ValueError, FileNotFoundError, NotImplementedError: input the page reports in one line (:func:`refusal`).
    """
    from .evaluate import predict_with_model

    if not str(checkpoint or "").strip():
        raise ValueError("choose the adapters: a folder written by molt train or a Hugging Face repository id")
    if not video:
        raise ValueError("upload a video (or pick a demo clip) first")
    options: dict[str, Any] = {}
    if task == "avqa":
        if not str(question or "").strip():
            raise ValueError("type a question about the video (AVQA answers questions)")
        options["question"] = question
    model, _, task_options = cache.get(str(checkpoint).strip(), task, revision=(revision or "").strip() or None)
    return predict_with_model(model, task_options, video, out_dir=out_dir, **options)


def demo_clips(folder: str | os.PathLike | None = None, *, count: int = 4) -> list[Path]:
    """Video files to offer beside the upload: those in ``folder``, or ``count`` generated AVE clips written once
    into a temporary folder (:func:`molt.tasks.ave.synthetic.generate_ave`)."""
    if folder is not None:
        found = sorted(path for path in Path(folder).rglob("*")
                       if path.suffix.lower() in (".mp4", ".mkv", ".webm", ".avi", ".mov"))
        if not found:
            raise FileNotFoundError(f"--clips {folder}: no video files (mp4, mkv, webm, avi, mov) in it")
        return found
    from ..tasks.ave.synthetic import generate_ave

    root = Path(tempfile.gettempdir()) / "molt-app-clips"
    if not (root / "Annotations.txt").is_file():
        generate_ave(root, num_videos=count, seed=0, image_size=64, fps=4, num_classes=min(count, 8), workers=1,
                     show_progress=False, overwrite=True)
    return sorted((root / "AVE").glob("*.mp4"))


def build_app(checkpoint: str | None = None, *, task: str | None = None, clips: list[Path] | None = None,
              trust_checkpoint: bool = False, work_dir: str | os.PathLike | None = None,
              visual_weights: str | None = None, audio_weights: str | None = None):
    """The Gradio page (a ``gradio.Blocks``); its *Run* button is also the API endpoint ``/predict`` (inputs:
    task, adapters, revision, video file, demo clip name, question)."""
    gr = require_gradio()
    from ..tasks import task_names

    cache = ModelCache(trust_checkpoint=trust_checkpoint, visual_weights=visual_weights, audio_weights=audio_weights)
    clip_paths = {path.name: str(path) for path in clips or []}
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="molt-app-"))
    runs = {"count": 0}
    lock = threading.Lock()

    def predict(task_name, adapters, revision, upload, clip, question):
        video = upload or clip_paths.get(clip or "")
        with lock:
            runs["count"] += 1
            out = work / f"run_{runs['count']}"
        try:
            result = run_prediction(cache, task_name, adapters, video, question=question, revision=revision,
                                    out_dir=out)
        except (ValueError, FileNotFoundError, NotImplementedError) as error:
            return ("", None, f"Cannot predict: {refusal(error)}", None)
        label = f"## {headline(task_name, result)}\n\n{_details(task_name, result)}"
        # the upload's temporary folder means nothing to the person who uploaded it: the summary names the file
        summary = [line.replace(str(video), Path(video).name) for line in result.get("summary", [])]
        return (label, picture_of(result), "\n".join(summary), result)

    with gr.Blocks(title="molt-av: try a model", analytics_enabled=False) as app:
        gr.Markdown("# molt-av: try a model\nChoose the task and the adapters (a folder written by `molt train`, or "
                    "a Hugging Face repository id `org/name@revision`), upload a video with sound or pick a demo "
                    "clip, and run. The page shows what `molt predict` writes.")
        with gr.Row():
            with gr.Column():
                task_box = gr.Dropdown(choices=task_names(), value=task or "ave", label="Task", elem_id="molt-task")
                adapters_box = gr.Textbox(value=checkpoint or "", label="Adapters: folder or repository id",
                                          elem_id="molt-checkpoint")
                revision_box = gr.Textbox(value="", label="Revision (branch, tag or commit; optional)",
                                          elem_id="molt-revision")
                upload_box = gr.File(label="Video", type="filepath", elem_id="molt-video")
                clip_box = gr.Dropdown(choices=list(clip_paths), value=None, label="or a generated demo clip",
                                       elem_id="molt-clip")
                question_box = gr.Textbox(label="Question (AVQA)", placeholder="Is the violin playing longer than "
                                                                               "the piano?", elem_id="molt-question",
                                          visible=(task or "ave") == "avqa")
                run_button = gr.Button("Run", variant="primary", elem_id="molt-run")
            with gr.Column():
                label_box = gr.Markdown(elem_id="molt-label")
                picture_box = gr.Image(label="Result", type="filepath", elem_id="molt-picture")
                status_box = gr.Textbox(label="Summary", lines=6, elem_id="molt-status")
                json_box = gr.JSON(label="predictions.json", elem_id="molt-json")
        task_box.change(lambda name: gr.Textbox(visible=name == "avqa"), inputs=task_box, outputs=question_box,
                        api_name=False)
        run_button.click(predict, inputs=[task_box, adapters_box, revision_box, upload_box, clip_box, question_box],
                         outputs=[label_box, picture_box, status_box, json_box], api_name="predict")
    app.molt_work_dir = work
    return app


def serve(checkpoint: str | None = None, *, task: str | None = None, host: str = "127.0.0.1",
          port: int = DEFAULT_PORT, clips: str | os.PathLike | None = None, trust_checkpoint: bool = False,
          block: bool = True, visual_weights: str | None = None, audio_weights: str | None = None):
    """Start the page on ``http://host:port`` (``block=False``: return the running app, for tests and scripts)."""
    gr = require_gradio()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app(checkpoint, task=task, clips=demo_clips(clips), trust_checkpoint=trust_checkpoint,
                    visual_weights=visual_weights, audio_weights=audio_weights)
    theme = gr.themes.Default(font=list(_SYSTEM_FONTS), font_mono=list(_MONO_FONTS))
    app.queue().launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=True, theme=theme,
                       allowed_paths=[str(app.molt_work_dir)], footer_links=[], ssr_mode=False)
    return app
