"""Task heads: what turns a method's fused tokens into predictions, a loss and metrics.

One module per task (``ave``, ``avs``, ``avqa``, ``avvp``), all following the :class:`Task` interface and sharing
only :mod:`.base`. No task imports another, and the trainer only talks to :class:`Task`.
"""
from __future__ import annotations

import inspect
from typing import Any

from .ave import AVETask, majority_accuracy, majority_class, plot_timelines
from .avqa import AVQATask, format_avqa_table
from .avs import AVSTask
from .avvp import AVVPTask
from .base import Task

__all__ = ["Task", "AVETask", "AVQATask", "AVSTask", "AVVPTask", "TASKS", "build_task", "format_avqa_table",
           "majority_accuracy", "majority_class", "plot_timelines"]

TASKS: dict[str, type[Task]] = {"ave": AVETask, "avqa": AVQATask, "avs": AVSTask, "avvp": AVVPTask}


def build_task(name: str, **options: Any) -> Task:
    """The head of task ``name`` built from keyword options (e.g. ``dim``, ``num_classes``, ``hidden_dim``).

    Raises:
        ValueError: unknown task, or an option the task's constructor does not take.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: expected one of {', '.join(sorted(TASKS))}")
    cls = TASKS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for task {name!r}; accepted: {', '.join(accepted)}")
    return cls(**options)
