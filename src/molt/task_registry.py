"""What each task brings to the generic trainer, evaluator, CLI and feature cache.

Part of molt-av (Apache-2.0). The trainer knows nothing task-specific: it asks this registry for a task's
prepared-data reader, its generator of synthetic data and the metric that selects the best checkpoint. Entries
name their objects as ``"module:attribute"`` strings so that nothing heavy is imported until a task is used.

Contracts (every task follows them; ``ave`` is the reference):

* ``prepare(data, *, setting=None, image_size=None, workers=2, show_progress=True) -> Path``: ``data`` is either a
  prepared directory (returned as is) or a dataset root in the real on-disk layout, prepared on first use into a
  sub-directory of it and reused afterwards.
* ``dataset(prepared_dir, split)``: a ``torch.utils.data.Dataset`` with attributes ``sample_rate``, ``image_size``,
  ``num_segments`` and a method ``task_options() -> dict`` (JSON-serialisable keyword arguments of the head that
  the data decides: class names, vocabularies, ...). Items are dicts with ``frames`` uint8 ``(T, 3, S, S)``,
  ``audio`` float32 ``(T, R)``, ``video_id`` and the task's targets, collatable by the default collate function.
* ``synthesize(out_dir, num_videos=..., seed=..., *, image_size=64, workers=2, setting=None)``: writes procedural
  clips in the task's real layout.
* ``monitor``: the validation metric (a key of the head's ``compute_metrics``) that picks the best checkpoint.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["TaskSpec", "TASK_SPECS", "get_task_spec", "task_names"]


def _resolve(reference: str) -> Any:
    module_name, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class TaskSpec:
    """One task's data entry points (``"module:attribute"`` references) and its model-selection metric."""

    name: str
    description: str
    dataset_ref: str
    prepare_ref: str
    synthesize_ref: str
    monitor: str
    monitor_mode: str = "max"
    settings: tuple[str, ...] = ()
    default_setting: str | None = None
    splits: tuple[str, ...] = ("train", "val", "test")
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset(self) -> Callable[..., Any]:
        return _resolve(self.dataset_ref)

    @property
    def prepare(self) -> Callable[..., Any]:
        return _resolve(self.prepare_ref)

    @property
    def synthesize(self) -> Callable[..., Any]:
        return _resolve(self.synthesize_ref)

    def check_setting(self, setting: str | None) -> str | None:
        """``setting`` if this task knows it (``None`` -> the default), else a ``ValueError`` naming the choices."""
        if setting is None:
            return self.default_setting
        if setting not in self.settings:
            choices = ", ".join(self.settings) if self.settings else "none (this task has no settings)"
            raise ValueError(f"task {self.name!r} has no setting {setting!r}; choices: {choices}")
        return setting


TASK_SPECS: dict[str, TaskSpec] = {
    "ave": TaskSpec(
        name="ave", description="audio-visual event localization (AVE): a class or background per second",
        dataset_ref="molt.data.prepared:PreparedAVE", prepare_ref="molt.data.prepared:ensure_prepared",
        synthesize_ref="molt.data.synthetic:generate_ave", monitor="accuracy"),
    "avs": TaskSpec(
        name="avs", description="audio-visual segmentation (AVSBench S4 / MS3): masks of the sounding objects",
        dataset_ref="molt.data.prepared_avs:PreparedAVS", prepare_ref="molt.data.prepared_avs:ensure_prepared_avs",
        synthesize_ref="molt.data.synthetic_avs:generate_avs", monitor="mIoU", settings=("s4", "ms3"),
        default_setting="s4"),
    "avqa": TaskSpec(
        name="avqa", description="audio-visual question answering (MUSIC-AVQA): one of the answers per question",
        dataset_ref="molt.data.prepared_avqa:PreparedAVQA", prepare_ref="molt.data.prepared_avqa:ensure_prepared_avqa",
        synthesize_ref="molt.data.synthetic_avqa:generate_avqa", monitor="accuracy"),
    "avvp": TaskSpec(
        name="avvp", description="audio-visual video parsing (LLP): audio and visual events per second from "
                                 "video-level labels",
        dataset_ref="molt.data.prepared_llp:PreparedLLP", prepare_ref="molt.data.prepared_llp:ensure_prepared_llp",
        synthesize_ref="molt.data.synthetic_llp:generate_llp", monitor="segment_type_av_f1"),
}


def task_names() -> list[str]:
    return sorted(TASK_SPECS)


def get_task_spec(name: str) -> TaskSpec:
    """The registry entry of ``name``; a ``ValueError`` listing the known tasks otherwise."""
    if name not in TASK_SPECS:
        raise ValueError(f"unknown task {name!r}: expected one of {', '.join(task_names())}")
    return TASK_SPECS[name]
