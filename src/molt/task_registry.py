"""Deprecated: the task registry moved to :mod:`molt.tasks` (``get_task``, ``task_names``, ``TaskSpec``).

Kept for one release so that ``from molt.task_registry import get_task_spec`` keeps working, with a warning.
"""
from __future__ import annotations

import warnings
from typing import Any

__all__ = ["TaskSpec", "TASK_SPECS", "get_task_spec", "task_names"]  # noqa: F822 - provided by __getattr__


def __getattr__(name: str) -> Any:
    from . import tasks

    replacements = {"TaskSpec": tasks.TaskSpec, "get_task_spec": tasks.get_task, "task_names": tasks.task_names,
                    "TASK_SPECS": {spec.name: spec for spec in tasks.registered_tasks()}}
    if name not in replacements:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    new_name = "get_task" if name == "get_task_spec" else name
    warnings.warn(f"molt.task_registry.{name} is deprecated; use molt.tasks ({new_name} or registered_tasks())",
                  DeprecationWarning, stacklevel=2)
    return replacements[name]
