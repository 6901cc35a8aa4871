"""Efficiency benchmark: training steps of MoLT, Mettle, LAVisH, DG-SCT and AVMoE on the same backbones, batch,
head and machine.

MoLT: Mixture of Layer-Wise Tokens for Efficient Audio-Visual Learning, Rho et al. The paper's efficiency columns
(Tab. 1 AVQA, Tab. 2 AVS, Tab. 3 AVE: trainable %, total params, training memory) are measured here with our own
implementations of the methods, each in its **own process** (so peak memory figures do not leak between methods),
on a batch of ``batch_clips`` clips of the task's segment count (10 one-second segments; 5 frames for AVS) with
random weights, inputs and targets.

Per method, ``warmup`` + ``steps`` training steps (forward, backward, Adam step on the method and the task head)
report:

* **trainable params** (method + head) as a share of **total params** (frozen backbones, each tensor once, + method
  + head), counted two ways: as built (Swin-V2 without a classifier) and with the classifier of the visual
  backbone's pretrained checkpoint added to the frozen part (Swin-V2-L: its 21,841-class ImageNet-22k head,
  33.6 M), which is how the paper's total column counts;
* **activation memory**: bytes of the tensors autograd saves for backward during the step, counted exactly with
  :func:`torch.autograd.graph.saved_tensors_hooks` (:class:`SavedTensorCounter`): each saved tensor's *storage*
  counted once (deduplicated by storage address, so views and tensors saved twice count once), the model's own
  parameters and buffers excluded (they are resident anyway and counted under parameters);
* **peak memory**: ``torch.cuda.max_memory_allocated`` over the step on a GPU; on a CPU the peak resident set size
  of the worker process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), which includes the weights and the
  interpreter; the resident size just before the step is reported next to it;
* **step time**: the median wall time of the ``steps`` timed steps after ``warmup`` untimed ones, with their minimum
  and maximum (activation bytes are counted on the first step, outside the timed ones).

A method that cannot run (e.g. out of memory) gets a row saying so instead of stopping the table.

Every method reads the task's common head by default. ``METHOD:official`` (``--methods dgsct,dgsct:official``)
measures an in-block method with its own head (``method_config.head: official``); such a row also counts as the
method's script counts (:func:`script_frozen_extras` and the head's ``script_only_parameters``:
the parts its head registers but never calls), which is how its published totals come out.
``molt bench efficiency ave --backbone tiny --methods molt,mettle,lavish --out DIR`` runs it from a shell;
:func:`run_efficiency` is the API. Each method's process is ``python -m molt bench worker ...`` (a sub-verb of the
one command line, not in its help), which runs :func:`run_worker`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from ..backbones.registry import backbone_label, backbone_sides
from .memory import current_rss_bytes, peak_memory_bytes

__all__ = ["SavedTensorCounter", "EfficiencyTable", "BENCH_METHODS", "METHOD_NAMES", "bench_config", "method_label",
           "split_method_head", "bench_task_names", "random_batch", "classifier_parameters", "script_frozen_extras",
           "script_only_parameters", "script_trainable_frozen", "measure_training_step", "run_efficiency",
           "write_efficiency", "run_worker"]

_logger = logging.getLogger(__name__)

# the methods compared by default (any registered method can be asked for)
BENCH_METHODS = ("molt", "mettle", "lavish", "dgsct", "avmoe")
GB = 1024 ** 3
METHOD_NAMES = {"molt": "MoLT", "mettle": "Mettle", "lavish": "LAVisH", "dgsct": "DG-SCT", "avmoe": "AVMoE"}
#: why methods' trainable counts differ from the published ones (printed under a table that has one of them)
COUNT_NOTES = {
    ("mettle",): "Mettle: meta-tokens at each layer's own width, then one linear map per layer to D "
                 "(lcd_width: layer, the reading whose size matches the published 23.0 % of 338.0 M for AVE); "
                 "lcd_width: common (straight to D) is a third of that size.",
    ("lavish", "dgsct", "avmoe"): "LAVisH, DG-SCT, AVMoE: their adapters as the repositories build them "
                                  "(LAVisH's 12 paired positions with bridges: 98.4 M + 3.7 M, DG-SCT's 188.5 M), "
                                  "with our task head and a LayerNorm + distillation read-out (rows METHOD) or with "
                                  "their own heads (rows METHOD (own head), --methods dgsct:official; DG-SCT's AVE "
                                  "head is 7.9 M as built, 12.6 M as its script counts).",
}


def split_method_head(entry: str) -> tuple[str, str | None]:
    """``"dgsct:official"`` -> ``("dgsct", "official")``; ``"dgsct"`` -> ``("dgsct", None)`` (the preset's head)."""
    method, _, head = entry.partition(":")
    return method, head or None


def method_label(entry: str) -> str:
    """A table's name for a method entry: ``"DG-SCT"``, ``"DG-SCT (own head)"``."""
    method, head = split_method_head(entry)
    name = METHOD_NAMES.get(method, method)
    return f"{name} (own head)" if head == "official" else name if head in (None, "common") else f"{name} ({head})"


_BACKBONE_NAMES = {"paper": ("Swin-V2-L", "HTS-AT"), "shared": ("Swin-V2-L", "(shared)"),
                   "tiny": ("Swin-V2 tiny", "HTS-AT tiny"), "tiny-shared": ("Swin-V2 tiny", "(shared)")}


def _paper_efficiency(task: str) -> dict[tuple[str, str], tuple[float, float, float | None]]:
    from ..tasks import get_task

    return dict(get_task(task).paper.efficiency)


class SavedTensorCounter:
    """Count the bytes autograd saves for backward inside a ``with`` block.

    Args:
        exclude: tensors whose storage is not counted (the model's parameters and buffers).

    Each saved tensor contributes the size of its whole storage, once per storage (by address), so a tensor saved
    by several operations, or saved together with its views, is counted once. Attributes after the block:
    ``bytes`` (total), ``count`` (distinct storages), ``saved`` (pack-hook calls).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._excluded = {tensor.untyped_storage().data_ptr() for tensor in exclude}
        self._seen: set[tuple[str, int]] = set()
        self.bytes = 0
        self.count = 0
        self.saved = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        self.saved += 1
        storage = tensor.untyped_storage()
        key = (str(tensor.device), storage.data_ptr())
        if storage.data_ptr() not in self._excluded and key not in self._seen:
            self._seen.add(key)
            self.bytes += storage.nbytes()
            self.count += 1
        return tensor

    @staticmethod
    def _unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def __enter__(self) -> "SavedTensorCounter":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)


def bench_task_names() -> list[str]:
    """Tasks whose spec gives random training targets (``TaskSpec.bench``)."""
    from ..tasks import registered_tasks

    return [spec.name for spec in registered_tasks() if spec.bench is not None]


def _bench_spec(task: str):
    from ..tasks import get_task

    spec = get_task(task)
    if spec.bench is None:
        raise ValueError(f"task {task!r} has no efficiency benchmark yet (its TaskSpec has no bench hooks): "
                         f"expected one of {', '.join(bench_task_names())}")
    return spec


def bench_config(task: str = "ave", backbone: str | Mapping[str, Any] = "tiny", method: str = "molt",
                 backbone_dtype: str = "float32", setting: str | None = None, visual_weights: str | None = None,
                 audio_weights: str | None = None):
    """The :class:`~molt.config.ExperimentConfig` benchmarked for one method.

    ``backbone`` is a named pair or a mapping ``{visual: NAME, audio: NAME}`` (any encoders, see
    :mod:`molt.backbones.registry`), with their ``visual_weights`` / ``audio_weights`` (``random`` measures a model
    at its real size without its weights). MoLT uses the task's preset for a named pair (``TaskSpec.presets``, e.g.
    ``ave_molt_paper``), and the paper preset for any other pair; the other methods
    use the same backbone, head, output width ``D``, heads and tokens per modality ``K``, with their published
    settings for the task (and ``setting``, e.g. ``ms3``) and their own defaults otherwise (``switch_method``).
    ``backbone_dtype`` stores and runs the frozen backbones in that dtype (tap-reading methods only).
    ``method`` may end in ``:official`` or ``:common`` (an in-block method's head, :func:`split_method_head`).
    """
    from ..config import load_config, switch_method, with_head
    from ..methods import get_method

    method, head = split_method_head(method)
    get_method(method)
    spec = _bench_spec(task)
    backbone_sides(backbone)
    overrides = {"backbone": backbone, **({"setting": setting} if setting else {})}
    overrides.update({key: value for key, value in (("visual_weights", visual_weights),
                                                    ("audio_weights", audio_weights)) if value is not None})
    preset = spec.default_preset(backbone if isinstance(backbone, str) else "paper")
    config = switch_method(load_config(preset, overrides=overrides), method)
    if head is not None:
        config = with_head(config, head)
    return dataclasses.replace(config, backbone_dtype=backbone_dtype)


def _bench_task_options(task: str, setting: str | None) -> dict[str, Any]:
    options = dict(_bench_spec(task).paper.task_options)
    if setting:
        options["setting"] = setting
    return options


def random_batch(model: Any, task: str, batch_clips: int, *, seed: int = 0, device: str = "cpu",
                 setting: str | None = None) -> dict[str, Any]:
    """A training batch of ``batch_clips`` random clips of the task's segment count (``TaskSpec.bench.segments``)
    at the model's input size, with the task's random targets and extra inputs (``TaskSpec.bench.targets``, at
    the paper's class counts)."""
    spec = _bench_spec(task)
    height, width = model.visual.input_size
    generator = torch.Generator().manual_seed(seed)
    samples = int(getattr(model.audio, "sample_rate", 32000))
    segments = spec.bench.segments
    extra = spec.bench.targets(batch_clips, segments, _bench_task_options(task, setting), generator)
    return {
        "frames": torch.randint(0, 256, (batch_clips, segments, 3, height, width), dtype=torch.uint8,
                                generator=generator).to(device),
        "audio": (0.1 * torch.randn(batch_clips, segments, samples, generator=generator)).to(device),
        **{key: value.to(device) if torch.is_tensor(value) else value for key, value in extra.items()},
    }


def classifier_parameters(visual: Any) -> int:
    """Parameters of the classifier that the visual backbone's pretrained checkpoint carries and the backbone drops
    (``num_classes=0``): ``num_features * C + C`` for a timm model whose pretrained config has ``C`` classes
    (Swin-V2-L ImageNet-22k: 1536 x 21,841 + 21,841 = 33.57 M); 0 when unknown."""
    model = getattr(visual, "model", None)
    if model is None:
        return 0
    classes = int((getattr(model, "pretrained_cfg", None) or {}).get("num_classes") or 0)
    return int(model.num_features) * classes + classes if classes else 0


def script_frozen_extras(visual: Any, audio: Any) -> dict[str, int]:
    """Frozen tensors the peers' scripts count in their totals that our backbones drop or hold as buffers: the
    classifier of the visual checkpoint (Swin-V2-L's ImageNet-22k head, 33.6 M; our backbone is built without it)
    and HTS-AT's log-mel filter bank (``n_fft / 2 + 1`` x mel bins, an ``nn.Parameter`` in torchlibrosa, a buffer
    here)."""
    extras = {}
    classifier = classifier_parameters(visual)
    if classifier:
        extras["classifier of the visual checkpoint"] = classifier
    filter_bank = getattr(getattr(audio, "logmel_extractor", None), "melW", None)
    if isinstance(filter_bank, torch.Tensor):
        extras["HTS-AT log-mel filter bank (a Parameter in torchlibrosa)"] = filter_bank.numel()
    return extras


def script_only_parameters(head: Any, method: Any) -> dict[str, int]:
    """An official head's parts its script counts as trainable but never calls (its class's
    ``script_only_parameters``, at the method's final widths); ``{}`` for a head without them."""
    count = getattr(type(head), "script_only_parameters", None)
    if count is None:
        return {}
    dims = getattr(method, "final_dims", {})
    widths = {f"{name}_dim": dims[name] for name in ("visual", "audio") if name in dims}
    accepted = inspect.signature(count).parameters
    return count(**{key: value for key, value in widths.items() if key in accepted})


def script_trainable_frozen(head: Any, visual: Any, audio: Any = None) -> dict[str, int]:
    """Frozen backbone parameters that an official head's script counts as trainable (the head's
    ``script_trainable_frozen``, given ``visual`` and, where it takes it, ``audio``), or ``{}``."""
    count = getattr(head, "script_trainable_frozen", None)
    if count is None:
        return {}
    return count(visual, audio) if "audio" in inspect.signature(count).parameters else count(visual)


def measure_training_step(task: str = "ave", backbone: str | Mapping[str, Any] = "tiny", method: str = "molt", *,
                          batch_clips: int = 1, device: str | None = None, seed: int = 0,
                          backbone_dtype: str = "float32", setting: str | None = None, steps: int = 5,
                          warmup: int = 2, visual_weights: str | None = None,
                          audio_weights: str | None = None) -> dict[str, Any]:
    """Build the model and run ``warmup`` + ``steps`` training steps in *this* process; return the measurements.

    Prefer :func:`run_efficiency`, which runs each method in a fresh process (:func:`run_worker`).
    """
    from ..methods import count_parameters
    from ..model import build_model

    if batch_clips < 1 or steps < 1 or warmup < 0:
        raise ValueError(f"batch_clips and steps must be at least 1 and warmup at least 0, got {batch_clips}, "
                         f"{steps} and {warmup}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = bench_config(task, backbone, method, backbone_dtype, setting, visual_weights, audio_weights)
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = build_model(config, _bench_task_options(task, setting)).to(device)
    model.train()
    build_s = time.perf_counter() - start
    trainable, total = count_parameters(model)
    classifier = classifier_parameters(model.visual)
    official = getattr(config.method_config, "head", "common") == "official"
    script_only = script_only_parameters(model.task, model.method) if official else {}
    as_trainable = script_trainable_frozen(model.task, model.visual, model.audio) if official else {}
    frozen_extras = script_frozen_extras(model.visual, model.audio) if official else {}
    batch = random_batch(model, task, batch_clips, seed=seed, device=device, setting=setting)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=1e-4)
    resident = list(model.parameters()) + list(model.buffers())
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = current_rss_bytes()

    def step(counter: SavedTensorCounter | None = None) -> tuple[float, float]:
        began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with counter or contextlib.nullcontext():
            output = model(batch)
        loss = model.task.loss(output.predictions, batch) + sum(output.method.aux_losses.values())
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - began, float(loss.detach())

    counter = SavedTensorCounter(exclude=resident)
    first_s, loss = step(counter)           # the counted step: the first warm-up step, or the first timed one
    for _ in range(warmup - 1):
        _, loss = step()
    times = [first_s] if warmup == 0 else []
    while len(times) < steps:
        elapsed, loss = step()
        times.append(elapsed)
    peak = peak_memory_bytes(device)
    visual_name, audio_name = _BACKBONE_NAMES.get(config.backbone_label, tuple(map(str, backbone_sides(backbone))))
    return {
        "method": method, "task": task, "setting": setting, "backbone": config.backbone_label,
        "visual_encoder": visual_name,
        "audio_encoder": audio_name, "device": device, "batch_clips": batch_clips,
        "segments": _bench_spec(task).bench.segments,
        "trainable_params": trainable, "total_params": total, "trainable_percent": 100.0 * trainable / total,
        "classifier_params": classifier, "total_params_with_classifier": total + classifier,
        "trainable_percent_with_classifier": 100.0 * trainable / (total + classifier),
        "head": type(model.task).__name__, "script_only_params": script_only, "script_frozen_params": frozen_extras,
        "script_trainable_frozen_params": as_trainable,
        "activation_bytes": counter.bytes, "saved_tensors": counter.count,
        "peak_bytes": int(peak), "peak_kind": "cuda_max_allocated" if cuda else "cpu_peak_rss",
        "rss_before_step_bytes": None if cuda else rss_before,
        "step_s": statistics.median(times), "step_s_min": min(times), "step_s_max": max(times), "step_times_s": times,
        "warmup_steps": warmup, "first_step_s": first_s, "build_s": build_s, "loss": loss,
        "torch": torch.__version__, "method_config": config.method_config.to_dict(only_set=True),
        "backbone_dtype": backbone_dtype, "threads": torch.get_num_threads(),
    }


@dataclass
class EfficiencyTable:
    """Rows of :func:`measure_training_step`, one per method (a row with an ``error`` for a method that could not
    run), with the paper's figures for reference."""

    task: str
    backbone: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    setting: str | None = None

    def row(self, method: str) -> dict[str, Any] | None:
        return next((row for row in self.rows if row["method"] == method and "error" not in row), None)

    @property
    def measured(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if "error" not in row]

    def ratios(self) -> dict[str, float]:
        """``activation(other) / activation(MoLT)`` for each other method measured (how many times smaller MoLT
        is)."""
        molt = self.row("molt")
        if molt is None or not molt["activation_bytes"]:
            return {}
        return {row["method"]: row["activation_bytes"] / molt["activation_bytes"]
                for row in self.measured if row["method"] != "molt"}

    def paper(self) -> dict[str, tuple[float, float, float | None]]:
        """The paper's (trainable %, total M, memory GB) per method for this task and backbone."""
        return {method: figures for (backbone, method), figures in _paper_efficiency(self.task).items()
                if backbone == self.backbone}

    def paper_for(self, entry: str) -> tuple[float, float, float | None] | None:
        """The paper's figures for a method entry (``dgsct:official`` reads ``dgsct``'s)."""
        return self.paper().get(split_method_head(entry)[0])

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "setting": self.setting, "backbone": self.backbone, "rows": self.rows,
                "activation_ratio_vs_molt": self.ratios(),
                "paper": {method: dict(zip(("trainable_percent", "total_params_m", "memory_gb"), figures))
                          for method, figures in self.paper().items()}}

    def markdown(self) -> str:
        first = self.measured[0] if self.measured else {}
        task = self.task.upper() + (f" ({self.setting.upper()})" if self.setting else "")
        lines = [f"Task {task}, backbone preset `{self.backbone}`, {first.get('batch_clips', 1)} clip(s) x "
                 f"{first.get('segments', '-')} segments per training step, device {first.get('device', '-')}, "
                 f"{first.get('threads', '-')} threads; step time: median (min-max) of "
                 f"{len(first.get('step_times_s', [])) or '-'} steps after {first.get('warmup_steps', '-')} "
                 f"warm-up steps.",
                 "",
                 "| Method | Visual encoder | Audio encoder | Trainable (M) | Trainable % | Total (M) | "
                 "Total with classifier (M) | Trainable % with classifier | Activation memory (GB) | "
                 "Peak memory (GB) | Step time (s) | Paper: trainable % / total M / memory GB |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in self.rows:
            name = method_label(row["method"])
            figures = self.paper_for(row["method"])
            reference = " / ".join("-" if x is None else str(x) for x in figures) if figures else "-"
            if "error" in row:
                lines.append(f"| {name} | did not run: {row['error']} |  |  |  |  |  |  |  |  |  | {reference} |")
                continue
            lines.append(
                f"| {name} | {row['visual_encoder']} | {row['audio_encoder']} | {row['trainable_params'] / 1e6:.2f} | "
                f"{row['trainable_percent']:.1f} | {row['total_params'] / 1e6:.1f} | "
                f"{row['total_params_with_classifier'] / 1e6:.1f} | {row['trainable_percent_with_classifier']:.1f} | "
                f"{row['activation_bytes'] / GB:.3f} | {row['peak_bytes'] / GB:.2f} | "
                f"{row['step_s']:.2f} ({row['step_s_min']:.2f}-{row['step_s_max']:.2f}) | {reference} |")
        peak_kind = {row["peak_kind"] for row in self.measured}
        lines += ["", "GB = 2^30 bytes. Total with classifier: the frozen part plus the classifier of the visual "
                  "backbone's pretrained checkpoint, as the paper counts. Activation memory: bytes saved for "
                  "backward (saved-tensor hooks, storages counted once, parameters excluded). Peak memory: "
                  + ("peak RSS of the method's own process (weights included)." if peak_kind == {"cpu_peak_rss"}
                     else "CUDA max allocated over the steps (weights included).")
                  + " The paper's memory column is GPU training memory; its heads are the methods' own (rows "
                    "'(own head)' here), the other rows use one head per task for every method."]
        lines += [f"\nCounts: {note}" for methods, note in COUNT_NOTES.items()
                  if any(split_method_head(row["method"])[0] in methods for row in self.rows)]
        counted = [row for row in self.measured if row.get("script_only_params") or row.get("script_frozen_params")]
        if counted:
            lines += ["", "As the methods' scripts count (own heads): trainable as built + parts the head registers "
                      "but never calls (+ frozen weights the script counts as trainable: AVQA, AVS S4) = trainable "
                      "as counted; frozen as built + frozen tensors the script counts:", "",
                      "| Method | Trainable as built (M) | Never called (M) | Trainable as counted (M) "
                      "| Frozen extras (M) | Total as counted (M) | Trainable % as counted "
                      "| Paper: trainable % / total M |",
                      "|---|---|---|---|---|---|---|---|"]
            for row in counted:
                never = sum(row["script_only_params"].values())
                extras = sum(row["script_frozen_params"].values())
                as_trainable = sum(row.get("script_trainable_frozen_params", {}).values())
                trainable = row["trainable_params"] + never + as_trainable
                total = row["total_params"] + never + extras
                figures = self.paper_for(row["method"])
                lines.append(f"| {method_label(row['method'])} | {row['trainable_params'] / 1e6:.2f} "
                             f"| {never / 1e6:.2f} | {trainable / 1e6:.2f} | {extras / 1e6:.2f} | {total / 1e6:.1f} "
                             f"| {100 * trainable / total:.1f} | "
                             f"{f'{figures[0]} / {figures[1]}' if figures else '-'} |")
        ratios = self.ratios()
        if ratios:
            lines += ["", "MoLT's activation memory is "
                      + ", ".join(f"1/{value:.1f} of {method_label(name)}'s"
                                  for name, value in ratios.items()) + "."]
        return "\n".join(lines) + "\n"


def write_efficiency(table: EfficiencyTable, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``efficiency.json``, ``efficiency.md`` and ``efficiency.png`` (bar chart) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "efficiency.json", "md": out / "efficiency.md", "png": out / "efficiency.png"}
    paths["json"].write_text(json.dumps(table.to_dict(), indent=2, default=str) + "\n")
    paths["md"].write_text(table.markdown())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.measured
    # one colour per method, its own-head row hatched beside it; labels on two lines where a head is named
    methods = [method_label(row["method"]).replace(" (", "\n(") for row in rows]
    families = list(dict.fromkeys(split_method_head(row["method"])[0] for row in rows))
    palette = ["tab:green", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:gray", "tab:blue", "tab:olive"]
    colours = [palette[families.index(split_method_head(row["method"])[0]) % len(palette)] for row in rows]
    hatches = ["//" if split_method_head(row["method"])[1] not in (None, "common") else "" for row in rows]
    figure, axes = plt.subplots(1, 2, figsize=(max(10.0, 1.6 * len(rows)), 4.0))
    series = [("activation_bytes", "activation memory (GB)"), ("peak_bytes", "peak memory (GB)")]
    for axis, (key, label) in zip(axes, series):
        values = [row[key] / GB for row in rows]
        bars = axis.bar(methods, values, color=colours, hatch=hatches, edgecolor="white")
        axis.bar_label(bars, fmt="%.3g", fontsize="small")
        axis.set_ylabel(label)
        axis.tick_params(axis="x", labelsize="small")
    papers = [table.paper_for(row["method"]) for row in rows]
    marked = [(name, paper[2]) for name, paper in zip(methods, papers) if paper and paper[2] is not None]
    if marked:
        axes[1].scatter([name for name, _ in marked], [memory for _, memory in marked], color="black", marker="x",
                        zorder=3, label="paper (GPU training memory)")
        axes[1].legend(fontsize="small")
    figure.suptitle(f"{table.task.upper()} / {table.backbone}: training step per method")
    figure.tight_layout()
    figure.savefig(paths["png"], dpi=120)
    plt.close(figure)
    return paths


def run_efficiency(task: str = "ave", backbone: str | Mapping[str, Any] = "tiny",
                   methods: Sequence[str] = BENCH_METHODS, batch_clips: int = 1,
                   out_dir: str | os.PathLike | None = None, *, device: str | None = None,
                   timeout: float | None = None, backbone_dtype: str = "float32", setting: str | None = None,
                   steps: int = 5, warmup: int = 2, visual_weights: str | None = None,
                   audio_weights: str | None = None) -> EfficiencyTable:
    """Run the training steps of each method, each in a fresh ``python -m molt bench worker`` process.

    Args:
        task: a task with ``bench`` hooks in its spec (:func:`bench_task_names`).
        backbone: a named pair (``"paper"``, ``"shared"``, ``"tiny"``, ``"tiny-shared"``) or a mapping
            ``{visual: NAME, audio: NAME}``; ``visual_weights`` / ``audio_weights`` as in :func:`bench_config`.
        methods: registered method names (:data:`BENCH_METHODS` by default), in the table's order.
        batch_clips: clips per batch.
        out_dir: if given, :func:`write_efficiency` writes the JSON, Markdown and PNG files there.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        timeout: seconds allowed per method.
        backbone_dtype: dtype of the frozen backbones' weights and compute (``float32``, ``bfloat16``, ``float16``).
        setting: the task's setting (``s4`` / ``ms3`` for AVS), which also picks the methods' settings.
        steps, warmup: timed and untimed training steps per method.

    A worker that fails (out of memory, killed, timed out) gives a row with an ``error`` instead of a measurement.

    Raises:
        ValueError: unknown task, backbone or method.
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    for method in methods:
        bench_config(task, backbone, method, backbone_dtype, setting)  # validates every name before the slow part
    table = EfficiencyTable(task=task, backbone=backbone_label(backbone), setting=setting)
    # the worker gets the backbones as they are given, constructor options included
    naming = ["--backbone", backbone] if isinstance(backbone, str) else ["--backbone-json", json.dumps(backbone)]
    naming += [argument for flag, value in (("--visual-weights", visual_weights), ("--audio-weights", audio_weights))
               if value is not None for argument in (flag, os.fspath(value))]
    for method in methods:
        with tempfile.TemporaryDirectory() as scratch:
            result = Path(scratch) / "result.json"
            # --debug: an error ends the worker with its traceback, whose last line _worker_failure reports
            command = [sys.executable, "-m", "molt", "--quiet", "--debug", "bench", "worker", task, *naming,
                       "--method", method, "--batch-clips", str(batch_clips), "--result", str(result),
                       "--backbone-dtype", backbone_dtype, "--steps", str(steps), "--warmup", str(warmup)]
            if device:
                command += ["--accelerator", {"cpu": "cpu", "mps": "mps"}.get(device, "gpu")]
            if setting:
                command += ["--setting", setting]
            _logger.info("efficiency: %s on %s", method, table.backbone)
            _logger.debug("efficiency worker: %s", " ".join(command))
            try:
                completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                table.rows.append({"method": method, "error": f"timed out after {timeout:.0f} s"})
                continue
            if completed.returncode != 0 or not result.is_file():
                table.rows.append({"method": method, "error": _worker_failure(completed)})
                _logger.warning("efficiency worker for %s failed (exit %s):\n%s", method, completed.returncode,
                                completed.stderr[-4000:])
                continue
            table.rows.append(json.loads(result.read_text()))
    if out_dir is not None:
        write_efficiency(table, out_dir)
    return table


def _worker_failure(completed: subprocess.CompletedProcess) -> str:
    """One line saying why a worker gave no result."""
    if completed.returncode in (-9, 137):
        return "killed (exit -9), most likely out of memory on this machine"
    lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "no error output"
    if "out of memory" in completed.stderr.lower() or "MemoryError" in completed.stderr:
        return f"out of memory ({last[:160]})"
    return f"exit {completed.returncode}: {last[:160]}"


def run_worker(result: str | os.PathLike, task: str, backbone: str | Mapping[str, Any], method: str,
               **options: Any) -> dict[str, Any]:
    """One method's row of :func:`run_efficiency`, measured in *this* process and written to ``result`` as JSON.

    ``options`` are :func:`measure_training_step`'s. This is what ``molt bench worker`` runs in the fresh process
    that :func:`run_efficiency` starts for each method.
    """
    row = measure_training_step(task, backbone, method, **options)
    Path(result).write_text(json.dumps(row, default=str))
    return row
