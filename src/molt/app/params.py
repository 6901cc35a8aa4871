"""Parameter counts of the config presets at their real scale, without a forward pass.

Models are built on PyTorch's ``meta`` device: shapes only, no memory, no weights, no computation, so the
Swin-V2-L + HTS-AT presets are counted in seconds on any machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..backbones import build_backbones
from ..config import ExperimentConfig, load_config, preset_names
from ..methods import build_method, count_parameters
from ..model import build_task_head
from ..tasks import get_task, task_names

__all__ = ["ParameterCount", "count_preset", "parameter_table", "presets_of_task", "resolve_preset_names"]


@dataclass
class ParameterCount:
    preset: str
    task: str
    backbone: str
    backbone_params: int
    method_params: int
    head_params: int

    @property
    def trainable(self) -> int:
        return self.method_params + self.head_params

    @property
    def total(self) -> int:
        return self.backbone_params + self.trainable


def count_preset(name: str | ExperimentConfig) -> ParameterCount:
    """Build a preset (or a config) on the meta device and count frozen backbone, method and head parameters; the
    head gets what the task's real dataset decides (``TaskSpec.paper.task_options``: class counts, vocabularies)."""
    config = name if isinstance(name, ExperimentConfig) else load_config(name)
    name = name if isinstance(name, str) else f"{config.task}_{config.method}_{config.backbone_label}"
    spec = get_task(config.task)
    with torch.device("meta"):
        visual, audio = build_backbones(config.backbone, load_weights=False,
                                        audio_clip_seconds=config.audio_clip_seconds,
                                        shared_audio_frontend=config.shared_audio_frontend)
        method, _, _ = build_method(config.method, config.method_config, visual, audio)
        head = build_task_head(config, method, visual, dict(spec.paper.task_options))
    backbones = torch.nn.ModuleList([visual, audio])
    _, backbone_total = count_parameters(backbones)
    method_trainable, _ = count_parameters(method)
    head_trainable, _ = count_parameters(head)
    return ParameterCount(name, config.task, config.backbone_label, backbone_total, method_trainable, head_trainable)


def presets_of_task(task: str) -> list[str]:
    """The shipped presets whose ``task:`` is ``task`` (its MoLT presets first, in the spec's order)."""
    spec = get_task(task)
    own = [name for name in spec.presets.values() if name in preset_names()]
    others = [name for name in preset_names() if name not in own and load_config(name).task == task]
    return own + others


def resolve_preset_names(name: str | None) -> list[str]:
    """``molt params`` arguments: a task name (its presets), a preset name, or ``None`` (every preset)."""
    if name is None:
        return preset_names()
    if name in task_names():
        return presets_of_task(name)
    return [name]


def parameter_table(names: list[str | ExperimentConfig]) -> str:
    """Markdown table of :func:`count_preset` for each preset (or config), next to the paper's figures where it has
    them."""
    lines = ["| preset | task | backbone | frozen backbone (M) | MoLT (M) | head (M) | trainable (M) | total (M) "
             "| trainable % | paper: trainable % / total (M) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        count = count_preset(name)
        paper = get_task(count.task).paper.parameters.get(count.backbone)
        name = count.preset
        head = f"{count.head_params / 1e6:.2f}"
        lines.append(
            f"| {name} | {count.task} | {count.backbone} | {count.backbone_params / 1e6:.1f} | "
            f"{count.method_params / 1e6:.2f} | {head} | {count.trainable / 1e6:.2f} | {count.total / 1e6:.1f} | "
            f"{100 * count.trainable / count.total:.1f} | "
            f"{f'{paper[0]} / {paper[1]}' if paper else '-'} |")
    return "\n".join(lines)
