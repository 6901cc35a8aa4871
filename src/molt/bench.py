"""Efficiency benchmark: one training step of MoLT, Mettle and LAVisH on the same backbones, batch and machine.

MoLT: Mixture of Layer-Wise Tokens for Efficient Audio-Visual Learning, Rho et al. The paper's efficiency claim
(Tabs. 1-3: AVE training memory MoLT 0.7 GB, Mettle 1.5 GB, LAVisH 11.9 GB) is measured here with our own
implementations of the three methods, each in its **own process** (so peak memory figures do not leak between
methods), on a batch of ``batch_clips`` AVE clips of 10 one-second segments with random weights and inputs.

Per method, one training step (forward, backward, Adam step on the method and the AVE head) reports:

* **trainable params** (method + head) as a share of **total params** (frozen backbones, each tensor once, + method
  + head);
* **activation memory**: bytes of the tensors autograd saves for backward during the step, counted exactly with
  :func:`torch.autograd.graph.saved_tensors_hooks` (:class:`SavedTensorCounter`): each saved tensor's *storage*
  counted once (deduplicated by storage address, so views and tensors saved twice count once), the model's own
  parameters and buffers excluded (they are resident anyway and counted under parameters);
* **peak memory**: ``torch.cuda.max_memory_allocated`` over the step on a GPU; on a CPU the peak resident set size
  of the worker process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), which includes the weights and the
  interpreter; the resident size just before the step is reported next to it;
* **step time**: wall time of the step (first step: includes one-off allocation costs).

``python -m molt.bench efficiency --task ave --backbone tiny --methods molt,mettle,lavish --out DIR`` runs it from a
shell; :func:`run_efficiency` is the API (``molt bench efficiency`` on the command line).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

__all__ = ["SavedTensorCounter", "EfficiencyTable", "BENCH_METHODS", "bench_config", "bench_task_names",
           "random_batch", "measure_training_step", "run_efficiency", "write_efficiency", "main"]

_logger = logging.getLogger(__name__)

# the methods compared by default (any registered method can be asked for)
BENCH_METHODS = ("molt", "mettle", "lavish")
GB = 1024 ** 3
_NUM_SEGMENTS = 10
_BACKBONE_NAMES = {"paper": ("Swin-V2-L", "HTS-AT"), "shared": ("Swin-V2-L", "(shared)"),
                   "tiny": ("Swin-V2 tiny", "HTS-AT tiny"), "tiny-shared": ("Swin-V2 tiny", "(shared)")}


def _paper_efficiency(task: str) -> dict[tuple[str, str], tuple[float, float, float]]:
    from .tasks import get_task

    return dict(get_task(task).paper_efficiency)


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
    """Tasks whose spec gives random training targets (``TaskSpec.bench_targets``)."""
    from .tasks import registered_tasks

    return [spec.name for spec in registered_tasks() if spec.bench_targets is not None]


def _bench_spec(task: str):
    from .tasks import get_task

    spec = get_task(task)
    if spec.bench_targets is None:
        raise ValueError(f"task {task!r} has no efficiency benchmark yet (its TaskSpec has no bench_targets): "
                         f"expected one of {', '.join(bench_task_names())}")
    return spec


def bench_config(task: str = "ave", backbone: str = "tiny", method: str = "molt", backbone_dtype: str = "float32"):
    """The :class:`~molt.config.ExperimentConfig` benchmarked for one method.

    MoLT uses the task's preset for the backbone (``TaskSpec.presets``, e.g. ``ave_molt_paper``); the other methods
    use the same backbone, head, output width ``D``, heads and tokens per modality ``K``, with their own defaults
    otherwise (Mettle: every block; LAVisH: adapters in every block). ``backbone_dtype`` stores and runs the
    frozen backbones in that dtype (tap-reading methods only).
    """
    from .config import load_config, switch_method
    from .methods import get_method

    get_method(method)
    spec = _bench_spec(task)
    if backbone not in _BACKBONE_NAMES:
        raise ValueError(f"unknown backbone preset {backbone!r}: expected one of {', '.join(_BACKBONE_NAMES)}")
    config = switch_method(load_config(spec.default_preset(backbone), overrides={"backbone": backbone}), method)
    return dataclasses.replace(config, backbone_dtype=backbone_dtype)


def random_batch(model: Any, task: str, batch_clips: int, *, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """A training batch of ``batch_clips`` random clips of 10 segments at the model's input size, with the task's
    random targets (``TaskSpec.bench_targets``, at the paper's class counts)."""
    spec = _bench_spec(task)
    height, width = model.visual.input_size
    generator = torch.Generator().manual_seed(seed)
    samples = int(getattr(model.audio, "sample_rate", 32000))
    return {
        "frames": torch.randint(0, 256, (batch_clips, _NUM_SEGMENTS, 3, height, width), dtype=torch.uint8,
                                generator=generator).to(device),
        "audio": (0.1 * torch.randn(batch_clips, _NUM_SEGMENTS, samples, generator=generator)).to(device),
        **spec.bench_targets(batch_clips, _NUM_SEGMENTS, dict(spec.paper_task_options), generator),
    }


def _current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def measure_training_step(task: str = "ave", backbone: str = "tiny", method: str = "molt", *, batch_clips: int = 1,
                          device: str | None = None, seed: int = 0,
                          backbone_dtype: str = "float32") -> dict[str, Any]:
    """Build the model and run one training step in *this* process; return the measurements as a dict.

    Prefer :func:`run_efficiency`, which runs each method in a fresh process.
    """
    from .methods import count_parameters
    from .model import build_model

    if batch_clips < 1:
        raise ValueError(f"batch_clips must be at least 1, got {batch_clips}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = bench_config(task, backbone, method, backbone_dtype)
    spec = _bench_spec(task)
    task_options = dict(spec.paper_task_options)
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = build_model(config, task_options).to(device)
    model.train()
    build_s = time.perf_counter() - start
    trainable, total = count_parameters(model)
    batch = random_batch(model, task, batch_clips, seed=seed, device=device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=1e-4)
    resident = list(model.parameters()) + list(model.buffers())
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _current_rss_bytes()

    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with SavedTensorCounter(exclude=resident) as counter:
        output = model(batch)
        loss = model.task.loss(output.predictions, batch) + sum(output.method.aux_losses.values())
    forward_s = time.perf_counter() - start
    loss.backward()
    optimizer.step()
    if cuda:
        torch.cuda.synchronize(device)
    step_s = time.perf_counter() - start

    peak = torch.cuda.max_memory_allocated(device) if cuda else _peak_rss_bytes()
    visual_name, audio_name = _BACKBONE_NAMES[backbone]
    return {
        "method": method, "task": task, "backbone": backbone, "visual_encoder": visual_name,
        "audio_encoder": audio_name, "device": device, "batch_clips": batch_clips, "segments": _NUM_SEGMENTS,
        "trainable_params": trainable, "total_params": total, "trainable_percent": 100.0 * trainable / total,
        "activation_bytes": counter.bytes, "saved_tensors": counter.count,
        "peak_bytes": int(peak), "peak_kind": "cuda_max_allocated" if cuda else "cpu_peak_rss",
        "rss_before_step_bytes": None if cuda else rss_before,
        "forward_s": forward_s, "step_s": step_s, "build_s": build_s, "loss": float(loss.detach()),
        "torch": torch.__version__, "method_config": config.method_config, "backbone_dtype": backbone_dtype,
    }


@dataclass
class EfficiencyTable:
    """Rows of :func:`measure_training_step`, one per method, with the paper's figures for reference."""

    task: str
    backbone: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def row(self, method: str) -> dict[str, Any] | None:
        return next((row for row in self.rows if row["method"] == method), None)

    def ratios(self) -> dict[str, float]:
        """``activation(other) / activation(MoLT)`` for each other method measured (how many times smaller MoLT
        is)."""
        molt = self.row("molt")
        if molt is None or not molt["activation_bytes"]:
            return {}
        return {row["method"]: row["activation_bytes"] / molt["activation_bytes"]
                for row in self.rows if row["method"] != "molt"}

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "backbone": self.backbone, "rows": self.rows,
                "activation_ratio_vs_molt": self.ratios(),
                "paper": {method: dict(zip(("trainable_percent", "total_params_m", "memory_gb"), figures))
                          for (backbone, method), figures in _paper_efficiency(self.task).items()
                          if backbone == self.backbone}}

    def markdown(self) -> str:
        names = {"molt": "MoLT", "mettle": "Mettle", "lavish": "LAVisH"}
        lines = [f"Task {self.task.upper()}, backbone preset `{self.backbone}`, one training step, "
                 f"{self.rows[0]['batch_clips'] if self.rows else 1} clip(s) x {_NUM_SEGMENTS} segments, "
                 f"device {self.rows[0]['device'] if self.rows else '-'}.",
                 "",
                 "| Method | Visual encoder | Audio encoder | Trainable params (%) | Total params (M) | "
                 "Activation memory (GB) | Peak memory (GB) | Step time (s) | "
                 "Paper: trainable % / total M / memory GB |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for row in self.rows:
            paper = _paper_efficiency(self.task).get((self.backbone, row["method"]))
            lines.append(
                f"| {names.get(row['method'], row['method'])} | {row['visual_encoder']} | {row['audio_encoder']} | "
                f"{row['trainable_percent']:.1f} | {row['total_params'] / 1e6:.1f} | "
                f"{row['activation_bytes'] / GB:.3f} | {row['peak_bytes'] / GB:.2f} | {row['step_s']:.2f} | "
                f"{' / '.join(str(x) for x in paper) if paper else '-'} |")
        peak_kind = {row["peak_kind"] for row in self.rows}
        lines += ["", "GB = 2^30 bytes. Activation memory: bytes saved for backward (saved-tensor hooks, storages "
                  "counted once, parameters excluded). Peak memory: "
                  + ("peak RSS of the method's own process (weights included)." if peak_kind == {"cpu_peak_rss"}
                     else "CUDA max allocated over the step (weights included).")
                  + " The paper's memory column is GPU training memory."]
        ratios = self.ratios()
        if ratios:
            lines += ["", "MoLT's activation memory is "
                      + ", ".join(f"1/{value:.1f} of {names.get(name, name)}'s" for name, value in ratios.items())
                      + "."]
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

    methods = [row["method"] for row in table.rows]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    series = [("activation_bytes", "activation memory (GB)"), ("peak_bytes", "peak memory (GB)")]
    for axis, (key, label) in zip(axes, series):
        values = [row[key] / GB for row in table.rows]
        bars = axis.bar(methods, values, color=["tab:green", "tab:orange", "tab:red", "tab:gray"][:len(values)])
        axis.bar_label(bars, fmt="%.3g")
        axis.set_ylabel(label)
    paper = [_paper_efficiency(table.task).get((table.backbone, method)) for method in methods]
    if paper and all(paper):
        axes[1].scatter(methods, [figures[2] for figures in paper], color="black", marker="x", zorder=3,
                        label="paper (GPU training memory)")
        axes[1].legend(fontsize="small")
    figure.suptitle(f"{table.task.upper()} / {table.backbone}: one training step per method")
    figure.tight_layout()
    figure.savefig(paths["png"], dpi=120)
    plt.close(figure)
    return paths


def run_efficiency(task: str = "ave", backbone: str = "tiny", methods: Sequence[str] = BENCH_METHODS,
                   batch_clips: int = 1, out_dir: str | os.PathLike | None = None, *, device: str | None = None,
                   timeout: float | None = None, backbone_dtype: str = "float32") -> EfficiencyTable:
    """Run one training step of each method, each in a fresh ``python -m molt.bench worker`` process.

    Args:
        task: a task with ``bench_targets`` in its spec (:func:`bench_task_names`; ``"ave"`` today).
        backbone: backbone preset (``"paper"``, ``"shared"``, ``"tiny"``, ``"tiny-shared"``).
        methods: registered method names (``"molt"``, ``"mettle"``, ``"lavish"``), in the table's order.
        batch_clips: clips per batch (10 one-second segments each).
        out_dir: if given, :func:`write_efficiency` writes the JSON, Markdown and PNG files there.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        timeout: seconds allowed per method.
        backbone_dtype: dtype of the frozen backbones' weights and compute (``float32``, ``bfloat16``, ``float16``).

    Raises:
        ValueError: unknown task, backbone or method.
        RuntimeError: a worker failed (its error output is included).
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    for method in methods:
        bench_config(task, backbone, method, backbone_dtype)  # validates every name before the slow part
    table = EfficiencyTable(task=task, backbone=backbone)
    for method in methods:
        with tempfile.TemporaryDirectory() as scratch:
            result = Path(scratch) / "result.json"
            command = [sys.executable, "-m", "molt.bench", "worker", "--task", task, "--backbone", backbone,
                       "--method", method, "--batch-clips", str(batch_clips), "--result", str(result),
                       "--backbone-dtype", backbone_dtype]
            if device:
                command += ["--device", device]
            _logger.info("efficiency: %s on %s (%s)", method, backbone, " ".join(command))
            completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
            if completed.returncode != 0 or not result.is_file():
                raise RuntimeError(f"efficiency worker for {method!r} failed (exit {completed.returncode}):\n"
                                   f"{completed.stderr[-4000:]}")
            table.rows.append(json.loads(result.read_text()))
    if out_dir is not None:
        write_efficiency(table, out_dir)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m molt.bench efficiency ...`` (table on stdout) or ``... worker ...`` (one method, JSON file)."""
    from .config import BACKBONE_DTYPES

    parser = argparse.ArgumentParser(prog="python -m molt.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    efficiency = commands.add_parser("efficiency", help="one training step per method, one process each",
                                     description="example: python -m molt.bench efficiency --backbone tiny --out out")
    worker = commands.add_parser("worker", help="measure one method in this process (used by 'efficiency')")
    for sub in (efficiency, worker):
        sub.add_argument("--task", default="ave")
        sub.add_argument("--backbone", default="tiny", choices=sorted(_BACKBONE_NAMES))
        sub.add_argument("--batch-clips", type=int, default=1)
        sub.add_argument("--device")
        sub.add_argument("--backbone-dtype", default="float32", choices=BACKBONE_DTYPES)
    efficiency.add_argument("--methods", default=",".join(BENCH_METHODS), help="comma-separated, e.g. molt,lavish")
    efficiency.add_argument("--out", help="directory for efficiency.json, efficiency.md, efficiency.png")
    worker.add_argument("--method", required=True, help="a registered method name")
    worker.add_argument("--result", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.command == "worker":
        row = measure_training_step(args.task, args.backbone, args.method, batch_clips=args.batch_clips,
                                    device=args.device, backbone_dtype=args.backbone_dtype)
        Path(args.result).write_text(json.dumps(row, default=str))
        return 0
    table = run_efficiency(args.task, args.backbone, [m for m in args.methods.split(",") if m],
                           args.batch_clips, args.out, device=args.device, backbone_dtype=args.backbone_dtype)
    sys.stdout.write(table.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
