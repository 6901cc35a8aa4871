"""Tasks: one package per task, each registering one :class:`~molt.tasks.spec.TaskSpec`.

A task package (``ave``, ``avs``, ``avqa``, ``avvp``) holds its real-layout reader, prepared format, procedural
generator, head + loss, metrics, pictures and spec; the packages share only :mod:`.base` and :mod:`.spec` and the
task-free pieces under :mod:`molt.data`. No task imports another. Adding a task is one folder plus one line below
(``docs/adding_a_task.md``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._lazy import lazy_exports
# each registers its TaskSpec; the specs are plain data (their code loads on first use), so this imports no torch
from . import ave, avqa, avs, avvp  # noqa: F401
from .spec import TaskParts, TaskSpec, get_task, register_task, registered_tasks, task_names

if TYPE_CHECKING:
    from .base import HeadConfig, SegmentHeadConfig, TaskHead, TokenPool

__all__ = ["TaskHead", "HeadConfig", "SegmentHeadConfig", "TokenPool", "TaskSpec", "TaskParts", "register_task",
           "get_task", "task_names", "registered_tasks", "build_head"]

__getattr__ = lazy_exports(__name__, {".base": ("HeadConfig", "SegmentHeadConfig", "TaskHead", "TokenPool")})


def build_head(name: str, **options: Any) -> TaskHead:
    """The head of task ``name`` built from keyword options (e.g. ``dim``, ``num_classes``, ``hidden_dim``; see
    :meth:`~molt.tasks.spec.TaskSpec.build_head`).

    Raises:
        ValueError: unknown task, or an option that is neither a field of the head's config nor an argument of the
            head.
    """
    return get_task(name).build_head(**options)
