"""Parameter counts of the config presets at their real scale, without a forward pass.

Models are built on PyTorch's ``meta`` device: shapes only, no memory, no weights, no computation, so the
Swin-V2-L + HTS-AT presets are counted in seconds on any machine.

:func:`head_count_table` (``molt params TASK --heads``) counts the in-block methods (LAVisH, DG-SCT, AVMoE) with our
common head and with their own (``method_config.head: official``), and adds, row by row, what their scripts count
beside what is built here, so that the published totals can be reproduced: parameters their heads register but never
call (the official head's ``script_only_parameters``), and frozen tensors our backbones hold as buffers or drop
(:func:`molt.app.bench.script_frozen_extras`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from ..backbones import build_backbones
from ..config import ExperimentConfig, load_config, preset_names
from ..methods import build_method, count_parameters
from ..model import build_task_head
from ..tasks import get_task, task_names
from .bench import script_frozen_extras, script_only_parameters, script_trainable_frozen

__all__ = ["ParameterCount", "count_preset", "parameter_table", "presets_of_task", "resolve_preset_names",
           "HeadCount", "count_heads", "SCRIPT_NOTES", "head_count_table", "IN_BLOCK_METHODS"]

#: the methods that have their own heads (``method_config.head: official``)
IN_BLOCK_METHODS = ("lavish", "dgsct", "avmoe")
#: where each peer's script prints its counts (the loop over ``named_parameters`` and the prints), per task
_COUNT_SOURCES = {
    ("ave", "lavish"): "GenjiB/LAVISH AVE/main_trans.py (shared setting); DG-SCT's LAVisH for two backbones",
    ("ave", "dgsct"): "haoyi-duan/DG-SCT DG-SCT/AVE/main_trans.py l.211-273",
    ("ave", "avmoe"): "yingchengy/AVMOE AVMOE/AVE/main_trans_v3.py l.268-319",
    ("avs", "lavish"): "GenjiB/LAVISH AVS/avs_scripts/avs_s4/train.py l.142-166 (shared setting, S4 only)",
    ("avs", "dgsct"): "haoyi-duan/DG-SCT DG-SCT/AVS/avs_scripts/avs_s4/train.py l.142-169 (avs_ms3/train.py "
                      "l.115-143)",
    ("avs", "avmoe"): "yingchengy/AVMOE AVMOE/AVS/avs_scripts/avs_s4/train_v2.py l.143-170 (avs_ms3/train_v2.py "
                      "l.115-143)",
    ("avqa", "dgsct"): "haoyi-duan/DG-SCT DG-SCT/AVQA/net_grd_avst/main_avst.py l.273-312",
    ("avqa", "avmoe"): "yingchengy/AVMOE AVMOE/AVQA/net_grd_avst/main_avst_v2.py l.368-407",
    ("avqa", "lavish"): "GenjiB/LAVISH AVQA/net_grd_avst/main_avst.py l.246-286, one Swin: it prints 6.8530 % of "
                        "245.5 M, the shared preset here holding 1,050,624 more (HTS-AT's STFT); the same head on "
                        "HTS-AT for two backbones"}


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


@dataclass
class HeadCount:
    """One in-block method with one head, counted as built and as its script counts.

    Attributes:
        method, head: the method and ``"common"`` or ``"official"``.
        head_class: the head's class name.
        frozen: the frozen backbones as built (each tensor once).
        method_params: the method's trainable parameters (adapters; with the common head, its read-out too).
        head_params: the head's.
        script_only: trainable parameters the script counts but never calls, by part (official heads).
        frozen_as_trainable: frozen backbone parameters the script counts as trainable (the AVQA scripts' Swin norm
            weights), by part; they are in ``frozen`` already.
        frozen_extras: frozen tensors the script counts that are not parameters here
            (:func:`molt.app.bench.script_frozen_extras`).
        paper: the MoLT paper's (trainable %, total M) for this method, task and backbone, if it has them.
    """

    method: str
    head: str
    head_class: str
    frozen: int
    method_params: int
    head_params: int
    script_only: dict[str, int] = field(default_factory=dict)
    frozen_as_trainable: dict[str, int] = field(default_factory=dict)
    frozen_extras: dict[str, int] = field(default_factory=dict)
    paper: tuple[float, float] | None = None

    @property
    def trainable(self) -> int:
        """As built: method + head."""
        return self.method_params + self.head_params

    @property
    def counted_trainable(self) -> int:
        """As the script counts it (with what it registers but never calls, and frozen weights it counts as
        trainable)."""
        return self.trainable + sum(self.script_only.values()) + sum(self.frozen_as_trainable.values())

    @property
    def counted_total(self) -> int:
        return self.frozen + sum(self.frozen_extras.values()) + self.trainable + sum(self.script_only.values())


def count_heads(task: str, backbone: str = "paper", methods: tuple[str, ...] = IN_BLOCK_METHODS, *,
                setting: str | None = None, **method_config: Any) -> list[HeadCount]:
    """Each in-block method on the task's ``backbone`` preset (its published settings for the task, as
    ``molt bench efficiency`` builds it), with the common head and, where the task has one, its own, on the meta
    device. ``setting`` counts another of the task's settings (``"ms3"`` for AVS; default: the paper's);
    ``method_config`` overrides the methods' settings (e.g. ``num_latents=32``)."""
    from ..config import switch_method

    spec = get_task(task)
    base = load_config(spec.default_preset(backbone))
    task_options = dict(spec.paper.task_options)
    if setting is not None:
        if setting not in spec.settings:
            raise ValueError(f"task {task} has the settings {', '.join(spec.settings) or 'none'}, got {setting!r}")
        base = dataclasses.replace(base, setting=setting)
        task_options["setting"] = setting
    rows = []
    with torch.device("meta"):
        visual, audio = build_backbones(base.backbone, load_weights=False,
                                        audio_clip_seconds=base.audio_clip_seconds,
                                        shared_audio_frontend=base.shared_audio_frontend)
    _, frozen = count_parameters(torch.nn.ModuleList([visual, audio]))
    extras = script_frozen_extras(visual, audio)
    for method in methods:
        config = switch_method(base, method)
        for head in ("common", "official"):
            method_settings = config.method_config.replace(head=head, **method_config)
            with torch.device("meta"):
                built, _, _ = build_method(method, method_settings, visual, audio)
                try:
                    task_head = build_task_head(dataclasses.replace(config, method_config=method_settings), built,
                                                visual, dict(task_options))
                except ValueError:      # no official head for this task
                    continue
            official = head == "official"
            script_only = script_only_parameters(task_head, built) if official else {}
            as_trainable = script_trainable_frozen(task_head, visual, audio) if official else {}
            rows.append(HeadCount(method, head, type(task_head).__name__, frozen, count_parameters(built)[0],
                                  count_parameters(task_head)[0], script_only, as_trainable,
                                  extras if official else {}, _paper_parameters(task, backbone, method)))
    return rows


def _paper_parameters(task: str, backbone: str, method: str) -> tuple[float, float] | None:
    figures = get_task(task).paper.efficiency.get((backbone, method))
    return None if figures is None else (figures[0], figures[1])


#: what a task's published in-block counts include that no head here builds (printed under ``molt params TASK
#: --heads``), from the repositories' scripts
SCRIPT_NOTES = {
    "avs": "The official AVS heads (molt.tasks.avs.official) are the peers' own decoders, not our AVSHead: "
           "DG-SCT and AVMoE project each adapted Swin stage with a per-token Linear(C_s, 256) (no dilated "
           "convolutions), resize it bicubically to AVSBench's PVT grids (56, 28, 14, 7) and gate it with a temporal "
           "attention (LSTM + transformer encoders per scale) before TPAVI and the FPN; LAVisH keeps AVSBench's "
           "dilated projections after linears to the PVT widths. All three build AVSBench's PVT-v2-b5 encoder, "
           "81,443,008 parameters, and never call it (DG-SCT avs_s4/model/PVT_AVSModel.py l.628, its call l.885 "
           "commented out; AVMoE PVT_AVSModel_v2.py l.629; LAVisH AVS/avs_scripts/avs_s4/model/PVT_AVSModel.py "
           "l.324), yet their train scripts count it as trainable: every parameter not named swin is (DG-SCT "
           "avs_s4/train.py l.145-169, AVMoE avs_s4/train_v2.py l.146-170, LAVisH avs_s4/train.py l.144-166), "
           "HTS-AT included in S4 (its MS3 scripts freeze it: avs_ms3/train.py l.130-131). The MoLT paper prints "
           "one set of AVS efficiency columns; DG-SCT's row is S4's count.",
}


def head_count_table(task: str, backbone: str = "paper", *, setting: str | None = None, **method_config: Any) -> str:
    """Markdown: :func:`count_heads` (for ``setting``, default the paper's), one row per method and head, and the
    parts added to reach each script's count."""
    lines = ["| method | head | frozen (M) | adapters (M) | head (M) | trainable as built (M) | counted, never called "
             "(M) | frozen counted as trainable (M) | frozen extras (M) | trainable as counted (M) | total as counted "
             "(M) | trainable % | paper: trainable % / total (M) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for row in count_heads(task, backbone, setting=setting, **method_config):
        paper = f"{row.paper[0]} / {row.paper[1]}" if row.paper else "-"
        lines.append(
            f"| {row.method} | {row.head} ({row.head_class}) | {row.frozen / 1e6:.1f} | {row.method_params / 1e6:.2f} "
            f"| {row.head_params / 1e6:.2f} | {row.trainable / 1e6:.2f} | {sum(row.script_only.values()) / 1e6:.2f} "
            f"| {sum(row.frozen_as_trainable.values()) / 1e6:.2f} | {sum(row.frozen_extras.values()) / 1e6:.2f} "
            f"| {row.counted_trainable / 1e6:.2f} | {row.counted_total / 1e6:.1f} "
            f"| {100 * row.counted_trainable / row.counted_total:.1f} | {paper} |")
        if row.head == "official":
            parts = "; ".join(f"{name} {count:,}" for name, count in
                              {**row.script_only, **row.frozen_as_trainable, **row.frozen_extras}.items())
            source = _COUNT_SOURCES.get((task, row.method), "-")
            notes.append(f"- {row.method}, own head ({source}): {parts or 'nothing'}")
    lines += ["", "With the common head the rows count what is built (our read-out + head, the backbones without "
              "the checkpoint's classifier)."]
    if notes:
        lines += ["With the official head they count as the script does:"] + notes
    if task in SCRIPT_NOTES:
        lines += ["", SCRIPT_NOTES[task]]
    return "\n".join(lines)
