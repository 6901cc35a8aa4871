"""The model card of an adapters folder: ``README.md`` with Hugging Face hub metadata and a short human part.

Part of molt-av (Apache-2.0). :func:`write_model_card` reads what ``adapter_config.json`` records (task, method,
experiment config, the backbones and their weights' SHA-256) and, when given, a run's results (``result.json`` of
``molt train``: test metrics, best validation score, parameter counts, environment), and writes a card whose YAML
front matter the hub indexes (``library_name``, ``tags``, ``datasets``, ``metrics``, ``model-index`` with the
values) and keeps everything that rebuilt the model under ``molt``; the text below it says what the model does,
how to load it, how to run ``molt predict`` and ``molt app``, the results and the environment of the run.
:func:`read_card_metadata` parses the front matter back.
"""
from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import yaml

from .backbones.registry import weights_source
from .checkpoints import ADAPTER_CONFIG_NAME, backbones_by_side, read_adapter_config
from .hub import CARD_NAME

__all__ = ["write_model_card", "model_card", "card_metadata", "read_card_metadata", "metric_id"]

#: the hub's metric ids of the tasks' metric names
_METRIC_IDS = {"accuracy": "accuracy", "miou": "mean_iou", "f_score": "f1"}
_METHOD_NAMES = {"molt": "MoLT", "mettle": "Mettle", "lavish": "LAVisH", "dgsct": "DG-SCT", "avmoe": "AVMoE"}
_PLACEHOLDER = "ORG/NAME"


def metric_id(name: str) -> str:
    """The hub's metric id of one of the tasks' metric names (``AQ/accuracy`` -> ``accuracy``, ``mIoU`` ->
    ``mean_iou``, ``segment_type_av_f1`` -> ``f1``)."""
    leaf = name.rsplit("/", 1)[-1].lower()
    return _METRIC_IDS.get(leaf, "f1" if leaf.endswith("f1") else leaf)


def _environment(results: Mapping[str, Any] | None) -> dict[str, Any]:
    if results and isinstance(results.get("environment"), Mapping):
        return dict(results["environment"])
    versions: dict[str, Any] = {}
    for package in ("molt-av", "torch", "timm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {**versions, "python": platform.python_version()}


def _test_metrics(results: Mapping[str, Any] | None) -> dict[str, float]:
    test = (results or {}).get("test") or {}
    return {str(k): float(v) for k, v in test.items() if isinstance(v, (int, float)) and k != "loss"}


def card_metadata(config: Mapping[str, Any], results: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The YAML front matter of the card of an adapter config (``adapter_config.json`` as read) and a run's
    ``results``."""
    from .tasks import get_task

    extra = config.get("extra_config") or {}
    experiment = dict(extra.get("experiment") or {})
    task = experiment.get("task")
    spec = get_task(task) if task else None
    method = experiment.get("method") or (config.get("method") or {}).get("class")
    columns = list(spec.metric_columns) if spec else []
    test = _test_metrics(results)
    backbones = {}
    for side, entry in backbones_by_side(config.get("backbones")).items():
        weights = experiment.get(f"{side}_weights")
        backbones[side] = {"name": entry.get("name"), "class": entry.get("class"), "tag": entry.get("tag"),
                           "weights_file": Path(weights).name if weights not in (None, "random") else weights,
                           "weights_sha256": entry.get("weights_sha256"), "blocks": entry.get("blocks"),
                           "weights_source": weights_source(weights, entry.get("tag"))}
    tags = ["molt-av", "audio-visual", "adapters", "parameter-efficient-fine-tuning"]
    tags += [name for name in (task, method) if name]
    meta: dict[str, Any] = {
        "library_name": "molt-av",
        "license": "apache-2.0",
        "tags": tags,
        "datasets": [spec.dataset_name] if spec else [],
        "metrics": sorted({metric_id(key) for _, key in columns}),
    }
    if spec and test:
        metrics = [{"type": metric_id(key), "name": f"{title} ({key})", "value": round(test[key], 6)}
                   for title, key in columns if key in test]
        if metrics:
            meta["model-index"] = [{
                "name": f"molt-av {task} {method}",
                "results": [{"task": {"type": f"audio-visual-{task}", "name": spec.description},
                             "dataset": {"name": spec.dataset_name, "type": task, "split": "test",
                                         **({"config": experiment["setting"]} if experiment.get("setting") else {})},
                             "metrics": metrics}]}]
    options = extra.get("task_options") or {}
    meta["molt"] = {
        "task": task, "setting": experiment.get("setting"), "method": method,
        "format_version": config.get("format_version"),
        "backbones": backbones,
        "trainable_tensors": len(config.get("tensors") or {}),
        "trainable_parameters": sum(_numel(shape) for shape in (config.get("tensors") or {}).values()),
        "task_options": {key: (len(value) if isinstance(value, (list, tuple)) else value)
                         for key, value in options.items()},
        "config": {**experiment, "method_config": (config.get("method") or {}).get("config")},
        "results": {key: results[key] for key in ("test", "monitor", "global_step", "trainable_params", "total_params",
                                                  "wall_time_s") if key in results} if results else None,
        "best_validation": {key: value for key, value in (results or {}).items() if key.startswith("best_val_")}
        or None,
        "environment": _environment(results),
    }
    return json.loads(json.dumps(meta, default=str))


def _numel(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join("-" if cell is None else str(cell) for cell in row) + " |" for row in rows]


def model_card(config: Mapping[str, Any], results: Mapping[str, Any] | None = None,
               repo_id: str | None = None) -> str:
    """The text of ``README.md`` for an adapter config and a run's ``results`` (``repo_id``: the repository it is
    meant for, ``ORG/NAME`` in the commands when unknown)."""
    from .tasks import get_task

    meta = card_metadata(config, results)
    molt = meta["molt"]
    task, method = molt["task"], molt["method"]
    spec = get_task(task) if task else None
    name = repo_id or _PLACEHOLDER
    method_name = _METHOD_NAMES.get(str(method), str(method))
    title = f"molt-av adapters: {spec.dataset_name if spec else task}, {method_name}"
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "", f"# {title}", ""]
    lines += [f"Task: **{task}**, {spec.description if spec else ''}"
              + (f" (setting {molt['setting']})" if molt.get("setting") else "") + ".",
              f"Method: **{method_name}**, {molt['trainable_parameters']:,} trainable parameters in "
              f"{molt['trainable_tensors']} tensors on frozen backbones. These files hold only the trained adapters "
              f"and head (`adapter_model.safetensors`) and what rebuilds the model (`adapter_config.json`); the "
              f"backbones' weights are not in this repository:", ""]
    rows = [[side, entry["name"], entry["tag"], entry["weights_file"], entry["weights_sha256"],
             entry["weights_source"]] for side, entry in molt["backbones"].items()]
    lines += _table(["side", "backbone", "timm tag", "weights file", "SHA-256", "where to get it"], rows)
    lines += ["", "Loading checks the SHA-256 of each weights file against the one recorded here.", "",
              "## Load", "", "```python", "from molt.model import AudioVisualModel", "",
              f'model = AudioVisualModel.from_pretrained("{name}")  # a repository id, org/name@revision or a folder',
              "```", "", "With backbone weights stored elsewhere: `from_pretrained(..., audio_weights=PATH)` (and "
              "`visual_weights=`).", "", "## Try it", "", "```bash", "pip install molt-av"]
    example = {"avqa": ' --question "Is the violin playing longer than the piano?"'}.get(str(task), "")
    lines += [f"molt predict {task} --checkpoint {name} --video clip.mp4{example}",
              f"molt app --checkpoint {name}   # pip install 'molt-av[app]': a page on http://127.0.0.1:7860",
              "```", "", "## Results", ""]
    test = _test_metrics(results)
    columns = [(title, key) for title, key in (spec.metric_columns if spec else ()) if key in test]
    if columns:
        lines += _table(["split"] + [title for title, _ in columns],
                        [["test"] + [f"{test[key]:.4f}" for _, key in columns]])
        best = molt.get("best_validation") or {}
        lines += [""] + [f"Best validation {key.removeprefix('best_val_')}: {value:.4f}"
                         for key, value in best.items() if isinstance(value, (int, float))]
    else:
        lines.append("No results recorded with these adapters (evaluate them with `molt eval`).")
    lines += ["", "## Environment of the run", ""]
    lines += _table(["package", "version"], [[key, value] for key, value in molt["environment"].items()])
    lines += ["", "## Share", "", "```bash", f"hf upload {name} PATH/TO/THIS/FOLDER .", "```", "",
              "The training config is under `molt.config` in the metadata above.", ""]
    return "\n".join(lines)


def write_model_card(directory: str | os.PathLike, *, results: Mapping[str, Any] | None = None,
                     repo_id: str | None = None) -> Path:
    """Write ``README.md`` into an adapters folder written by :func:`molt.checkpoints.save_pretrained`."""
    folder = Path(directory)
    path = folder / CARD_NAME
    path.write_text(model_card(read_adapter_config(folder / ADAPTER_CONFIG_NAME), results, repo_id))
    return path


def read_card_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The YAML front matter of a card (a ``README.md`` or the folder holding it).

    Raises:
        ValueError: no front matter between two ``---`` lines, or not a YAML mapping.
    """
    file = Path(path)
    if file.is_dir():
        file = file / CARD_NAME
    text = file.read_text()
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---" or "---" not in (line.strip() for line in lines[1:]):
        raise ValueError(f"{file}: no YAML front matter (a block between two '---' lines at the top)")
    end = next(i for i, line in enumerate(lines[1:], start=1) if line.strip() == "---")
    data = yaml.safe_load("\n".join(lines[1:end]))
    if not isinstance(data, dict):
        raise ValueError(f"{file}: the front matter is not a YAML mapping")
    return data
