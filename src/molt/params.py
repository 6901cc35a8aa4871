"""Parameter counts of the config presets at their real scale, without a forward pass.

Models are built on PyTorch's ``meta`` device: shapes only, no memory, no weights, no computation, so the
Swin-V2-L + HTS-AT presets are counted in seconds on any machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .backbones import build_backbones
from .config import load_config
from .methods import build_method, count_parameters
from .model import head_options
from .tasks import TASKS, build_task

__all__ = ["ParameterCount", "count_preset", "parameter_table", "PAPER_FIGURES"]

# what the real datasets decide for each head (the paper's datasets)
DATASET_TASK_OPTIONS: dict[str, dict] = {"ave": {"num_classes": 28}, "avs": {"mask_size": 224, "setting": "s4"},
                                         "avvp": {"num_classes": 25},
                                         # MUSIC-AVQA: about 93 question words (peers), 42 answers
                                         "avqa": {"question_vocab": ["<pad>", "<unk>"] + [f"w{i}" for i in range(91)],
                                                  "answers": [f"a{i}" for i in range(42)]}}

# (task, backbone preset) -> (trainable %, total M) reported for MoLT in the paper (Tabs. 1-3).
PAPER_FIGURES: dict[tuple[str, str], tuple[float, float]] = {
    ("avqa", "shared"): (19.5, 366.2), ("avqa", "paper"): (25.9, 441.4),
    ("avs", "shared"): (8.3, 313.1), ("avs", "paper"): (6.3, 339.5),
    ("ave", "shared"): (3.0, 248.5), ("ave", "paper"): (6.2, 290.3),
}


@dataclass
class ParameterCount:
    preset: str
    task: str
    backbone: str
    backbone_params: int
    method_params: int
    head_params: int | None

    @property
    def trainable(self) -> int:
        return self.method_params + (self.head_params or 0)

    @property
    def total(self) -> int:
        return self.backbone_params + self.trainable


def count_preset(name: str) -> ParameterCount:
    """Build a preset on the meta device and count frozen backbone, method and head parameters."""
    config = load_config(name)
    with torch.device("meta"):
        visual, audio = build_backbones(config.backbone, audio_clip_seconds=config.audio_clip_seconds)
        method, _, _ = build_method(config.method, config.method_config, visual, audio)
        head = None
        if config.task in TASKS:
            options = head_options(config, method, visual, DATASET_TASK_OPTIONS.get(config.task, {}))
            head = build_task(config.task, dim=method.output_dim, **options)
    backbones = torch.nn.ModuleList([visual, audio])
    _, backbone_total = count_parameters(backbones)
    method_trainable, _ = count_parameters(method)
    head_trainable = count_parameters(head)[0] if head is not None else None
    return ParameterCount(name, config.task, config.backbone, backbone_total, method_trainable, head_trainable)


def parameter_table(names: list[str]) -> str:
    """Markdown table of :func:`count_preset` for each preset, next to the paper's figures where it has them."""
    lines = ["| preset | task | backbone | frozen backbone (M) | MoLT (M) | head (M) | trainable (M) | total (M) "
             "| trainable % | paper: trainable % / total (M) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        count = count_preset(name)
        paper = PAPER_FIGURES.get((count.task, count.backbone))
        head = f"{count.head_params / 1e6:.2f}" if count.head_params is not None else "n/a"
        lines.append(
            f"| {name} | {count.task} | {count.backbone} | {count.backbone_params / 1e6:.1f} | "
            f"{count.method_params / 1e6:.2f} | {head} | {count.trainable / 1e6:.2f} | {count.total / 1e6:.1f} | "
            f"{100 * count.trainable / count.total:.1f} | "
            f"{f'{paper[0]} / {paper[1]}' if paper else '-'} |")
    return "\n".join(lines)
