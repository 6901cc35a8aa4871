"""Plain-PyTorch evaluation and prediction of trained models, for any registered task.

Part of molt-av (Apache-2.0). ``molt eval`` and ``molt predict`` run here, without Lightning: a model is rebuilt
with :func:`load_trained` (an adapter directory through :meth:`AudioVisualModel.from_pretrained`, or a training
checkpoint ``best.ckpt`` / ``last.ckpt``), evaluated on a split of the task's prepared data with the task head's
metric sums, and drawn with the task's pictures.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..checkpoints import ADAPTER_CONFIG_NAME, checkpoint_config, load_checkpoint_tensors, read_training_checkpoint
from ..config import ExperimentConfig
from ..data.files import check_output_dir
from ..model import AudioVisualModel, build_model, resolve_device
from ..tasks import get_task
from ..tasks.base import batch_to

__all__ = ["load_trained", "load_training_checkpoint", "evaluate", "predict_with_checkpoint", "predict_with_model",
           "check_video", "checkpoint_label"]

_logger = logging.getLogger(__name__)


def load_training_checkpoint(path: str | os.PathLike, *, trust_checkpoint: bool = False,
                             visual_weights: str | None = None, audio_weights: str | None = None
                             ) -> AudioVisualModel:
    """Rebuild a model from a training checkpoint of ``molt train`` (read by
    :func:`~molt.checkpoints.read_training_checkpoint`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be read, is not a molt checkpoint, or lacks trainable tensors of its model.
    """
    state = read_training_checkpoint(path)
    config, task_options = checkpoint_config(state, path, visual_weights=visual_weights, audio_weights=audio_weights)
    model = build_model(config, task_options, trust_checkpoint=trust_checkpoint)
    load_checkpoint_tensors(model, state, path)
    return model


def load_trained(checkpoint: str | os.PathLike, *, task: str | None = None, trust_checkpoint: bool = False,
                 revision: str | None = None, visual_weights: str | None = None,
                 audio_weights: str | None = None) -> tuple[AudioVisualModel, ExperimentConfig, dict[str, Any]]:
    """``(model, experiment config, task options)`` from an adapter directory, a Hugging Face repository id of one
    (``org/name``, ``org/name@revision`` or ``revision``; see :func:`molt.hub.resolve_pretrained`) or a training
    checkpoint file (``.ckpt``).

    ``task``, when given, must be the task the checkpoint was trained for. ``trust_checkpoint`` is passed to the
    backbones (an HTS-AT weights file that pickles more than tensors). ``visual_weights`` / ``audio_weights``
    replace the weights files the checkpoint records (see :func:`~molt.checkpoints.confine_weights`)."""
    path = Path(checkpoint)
    _refuse_a_run_folder(path)
    weights = {"visual_weights": visual_weights, "audio_weights": audio_weights}
    if path.is_file() or (path.suffix == ".ckpt" and revision is None):
        model = load_training_checkpoint(path, trust_checkpoint=trust_checkpoint, **weights)
    else:
        model = AudioVisualModel.from_pretrained(checkpoint, revision=revision, trust_checkpoint=trust_checkpoint,
                                                 **weights)
    if task is not None and task != model.experiment_config.task:
        raise ValueError(f"{checkpoint} was trained for task {model.experiment_config.task!r}, not {task!r}")
    return model, model.experiment_config, model.task_options


def _refuse_a_run_folder(path: Path) -> None:
    """A ``ValueError`` pointing at the adapters inside when ``path`` is a run folder (or a run's root) rather than
    the adapters folder or checkpoint file a trained model is loaded from."""
    if not path.is_dir() or (path / ADAPTER_CONFIG_NAME).is_file():
        return
    found = sorted(path.glob(f"adapters/*/{ADAPTER_CONFIG_NAME}")) or sorted(
        path.glob(f"version_*/adapters/*/{ADAPTER_CONFIG_NAME}"))
    if found:
        choices = " or ".join(str(file.parent) for file in found[:3])
        raise ValueError(f"{path} is a run folder, not a trained model's adapters: pass --checkpoint {choices}")


def checkpoint_label(checkpoint: str | os.PathLike) -> str:
    """A short name of a trained model for the folders written about it: ``RUN_version_N_best`` for
    ``runs/RUN/version_N/adapters/best`` (and ``..._last`` for ``checkpoints/last.ckpt``), else the folder's or
    file's own name."""
    path = Path(checkpoint).resolve()
    if path.parent.name in ("adapters", "checkpoints") and path.parents[1].name.startswith("version_"):
        return f"{path.parents[2].name}_{path.parents[1].name}_{path.stem}"
    return path.stem


@torch.no_grad()
def evaluate(checkpoint: str | os.PathLike, *, data: str | os.PathLike, split: str = "test",
             out_dir: str | os.PathLike | None = None, batch_size: int = 8, figure_batches: int = 2,
             task: str | None = None, test_file: str | None = None, trust_checkpoint: bool = False,
             accelerator: str | None = "auto", **loading: Any) -> dict[str, Any]:
    """Metrics of a trained model on one split, written as ``metrics.json``, plus the task's pictures of results
    (e.g. AVE timelines, AVS mask overlays) for the first ``figure_batches`` batches.

    ``task``, when given, must be the task the checkpoint was trained for. ``test_file`` picks one of the task's
    test files (``TaskSpec.test_variants``, e.g. ``"original"`` for MUSIC-AVQA) instead of ``split="test"``. The
    result holds the metrics, the figure paths and ``table``, the metrics as the task prints them under a title
    naming the split (and test file). ``accelerator``: where the model runs (``auto``: a GPU when one is visible;
    :func:`~molt.model.resolve_device`). ``loading``: ``revision``, ``visual_weights``, ``audio_weights`` (see
    :func:`load_trained`).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1 (items per forward pass), got {batch_size!r}")
    if out_dir is not None:
        check_output_dir(out_dir)
    device = resolve_device(accelerator)
    model, config, task_options = load_trained(checkpoint, task=task, trust_checkpoint=trust_checkpoint, **loading)
    model.to(device).eval()
    spec = get_task(config.task)
    if test_file is not None:
        if split != "test":
            raise ValueError(f"--test-json picks a test file; it cannot be combined with --split {split}")
        split = spec.test_split(test_file)
    if split not in spec.splits:
        raise ValueError(f"task {spec.name!r} has no split {split!r}; choices: {', '.join(spec.splits)}")
    prepared = spec.open_prepared(data, config.setting)
    if test_file is None:
        dataset = spec.open_split(prepared, split)
    else:
        dataset = spec.dataset(prepared, split)
        if len(dataset) == 0:
            raise ValueError(f"{prepared} holds no {test_file} test file (split {split!r}); put that file in the "
                             f"data root (see the {spec.dataset_name} reader) and prepare it again with `molt "
                             f"prepare {spec.name} --data ROOT`")
    _check_same_data(checkpoint, task_options, dataset.task_options(), prepared)
    out = Path(out_dir) if out_dir else Path("evaluations") / f"{checkpoint_label(checkpoint)}_{split}"
    check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    head = model.task
    head.reset_metrics()
    samples = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, pin_memory=device.type == "cuda"):
        on_device = batch_to(batch, device)
        output = model(on_device)
        head.update_metrics(output.predictions, on_device)
        if len(samples) < figure_batches:
            samples.append(({k: v.detach().cpu() for k, v in output.predictions.items()}, batch))
    metrics = {k: float(v) for k, v in head.compute_metrics().items()}
    result = {"task": config.task, "setting": config.setting, "split": split, "items": len(dataset), **metrics,
              "checkpoint": str(checkpoint)}
    result["figures"] = [str(path) for path in head.save_figures(samples, out, task_options)]
    with open(out / "metrics.json", "w") as handle:
        json.dump(result, handle, indent=2)
    title = f"{spec.dataset_name}, {spec.split_title(split)} split, {len(dataset):,} items"
    result["table"] = f"{title}\n{head.format_metrics(metrics)}"
    return result


def _check_same_data(checkpoint: str | os.PathLike, trained: dict[str, Any], data: dict[str, Any],
                     prepared: Path) -> None:
    """Refuse, listing the differences, data whose classes or vocabularies do not fit the model (another count);
    names that differ at the same count (relabelled classes) are only a warning."""
    differences = []
    for key in sorted(set(trained) & set(data)):
        mine, theirs = trained[key], data[key]
        if mine == theirs:
            continue
        if isinstance(mine, (list, tuple)) and isinstance(theirs, (list, tuple)):
            text = (f"{key}: model has {len(mine)} ({', '.join(map(str, mine[:3]))}, ...), data has {len(theirs)} "
                    f"({', '.join(map(str, theirs[:3]))}, ...)")
            if len(mine) == len(theirs):
                _logger.warning("%s: %s (same count: evaluated anyway)", checkpoint, text)
                continue
            differences.append(text)
        else:
            differences.append(f"{key}: model has {mine!r}, data has {theirs!r}")
    if differences:
        raise ValueError(f"{checkpoint} was trained on other data than {prepared} ({'; '.join(differences)}); "
                         f"evaluate it on data of the same classes and vocabulary")


def predict_with_checkpoint(checkpoint: str | os.PathLike, video: str | os.PathLike | None, *, task: str | None = None,
            out_dir: str | os.PathLike | None = None, trust_checkpoint: bool = False, revision: str | None = None,
            visual_weights: str | None = None, audio_weights: str | None = None, accelerator: str | None = "auto",
            **options: Any) -> dict[str, Any]:
    """The task's predictions of a trained model for one user video (see ``TaskSpec.predictor``).

    ``task``, when given, must be the task the checkpoint was trained for; ``options`` are the task's
    ``predict_options`` (e.g. ``question`` for MUSIC-AVQA, ``frames`` and ``audio`` instead of a video for
    AVSBench). The predictions are written as ``predictions.json`` into ``out_dir`` (default
    ``predictions/<video name>``) beside the task's pictures, whose paths are listed under ``"files"``.
    ``checkpoint`` may be a Hugging Face repository id (``revision``, weights files: see :func:`load_trained`).
    ``accelerator``: where the model runs (``auto``: a GPU when one is visible).
    """
    check_video(video)
    if out_dir is not None:
        check_output_dir(out_dir)
    device = resolve_device(accelerator)
    model, _, task_options = load_trained(checkpoint, task=task, trust_checkpoint=trust_checkpoint,
                                          revision=revision, visual_weights=visual_weights,
                                          audio_weights=audio_weights)
    model.to(device)
    return predict_with_model(model, task_options, video, out_dir=out_dir, **options)


def check_video(video: str | os.PathLike | None) -> None:
    """A ``FileNotFoundError`` for a ``--video`` that is not a file."""
    if video is not None and not Path(video).is_file():
        raise FileNotFoundError(f"{video}: no such video file; pass --video with the path of a video that has "
                                f"an audio track")


def predict_with_model(model: AudioVisualModel, task_options: dict[str, Any], video: str | os.PathLike | None, *,
                       out_dir: str | os.PathLike | None = None, **options: Any) -> dict[str, Any]:
    """What :func:`predict_with_checkpoint` does with a model already loaded (``molt app`` keeps it between
    videos): the task's predictor, ``predictions.json`` and the pictures in ``out_dir``."""
    check_video(video)
    video = Path(video) if video is not None else None
    spec = get_task(model.experiment_config.task)
    if spec.predictor is None:
        raise NotImplementedError(f"task {spec.name!r} has no predictor for single videos yet; use molt eval on "
                                  f"a prepared data set")
    name = video.stem if video is not None else Path(str(options.get("frames") or "clip")).name
    out = Path(out_dir) if out_dir is not None else Path("predictions") / name
    check_output_dir(out)
    model.eval()
    result = spec.predictor(model, task_options, video, out_dir=out, **options)
    out.mkdir(parents=True, exist_ok=True)
    result["files"] = [str(path) for path in result.get("files", [])] + [str(out / "predictions.json")]
    (out / "predictions.json").write_text(json.dumps(result, indent=2))
    return result
