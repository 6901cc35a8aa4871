"""Tasks: one package per task, each registering one :class:`~molt.tasks.spec.TaskSpec`.

A task package (``ave``, ``avs``, ``avqa``, ``avvp``) holds its real-layout reader, prepared format, procedural
generator, head + loss, metrics, pictures and spec; the packages share only :mod:`.base` and :mod:`.spec` and the
task-free pieces under :mod:`molt.data`. No task imports another. Adding a task is one folder plus one line below
(``docs/adding_a_task.md``).
"""
from __future__ import annotations

from typing import Any

from . import ave, avqa, avs, avvp  # noqa: F401 - each registers its TaskSpec
from .base import HeadConfig, SegmentHeadConfig, TaskHead, TokenPool
from .spec import TaskSpec, get_task, register_task, registered_tasks, task_names

__all__ = ["TaskHead", "HeadConfig", "SegmentHeadConfig", "TokenPool", "TaskSpec", "register_task", "get_task",
           "task_names", "registered_tasks", "build_head"]


def build_head(name: str, **options: Any) -> TaskHead:
    """The head of task ``name`` built from keyword options (e.g. ``dim``, ``num_classes``, ``hidden_dim``; see
    :meth:`~molt.tasks.spec.TaskSpec.build_head`).

    Raises:
        ValueError: unknown task, or an option that is neither a field of the head's config nor an argument of the
            head.
    """
    return get_task(name).build_head(**options)
