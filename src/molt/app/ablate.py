"""Ablation runner: the variants of the MoLT paper's Tabs. 4-8, trained and tested on the user's data.

Part of molt-av (Apache-2.0). Each table changes one thing of the task's MoLT preset and keeps everything else
(backbone, head, optimiser, epochs, seed) fixed:

* Tab. 4, adaptation position: taps from the early, mid or late blocks of both backbones and their unions
  (early = first 4 blocks, late = last 2, mid = the rest; see :mod:`molt.backbones.taps`);
* Tab. 5, latent tokens per modality ``K``: 2, 4, 6, 8;
* Tab. 6, uni-modal / cross-modal distillation adapters per FDM: (1, 1), (2, 1), (1, 2), (2, 2);
* Tab. 7, token fusion: average pooling, learnable gates, MLP (TFM);
* Tab. 8, token orthogonality regularisation: without / with.

Every variant is trained with :func:`molt.app.train.train` (model selection on val, figures on test) and its trainable
parameters and activation memory (bytes autograd saves for one training step on a batch of the data, counted with
:class:`molt.app.bench.SavedTensorCounter`) are recorded beside the task's metrics. The result is a markdown table in
the paper's shape plus a JSON file with every run's numbers. Tables 5 and 8 in the paper span several tasks; a run
fills the columns of the task it was given.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import ExperimentConfig, load_config

__all__ = ["ABLATION_TABLES", "AblationTable", "ablation_variants", "run_ablation"]

_logger = logging.getLogger(__name__)

ABLATION_TABLES: dict[int, tuple[str, list[tuple[str, dict[str, Any]]]]] = {
    4: ("Adaptation position", [
        (stages, {"blocks_visual": stages, "blocks_audio": stages})
        for stages in ("early+mid+late", "early+mid", "early+late", "mid+late", "early", "mid", "late")]),
    5: ("Latent tokens per modality (A / V)", [
        (f"{k} / {k}", {"num_tokens": k, "num_tokens_audio": None}) for k in (2, 4, 6, 8)]),
    6: ("Distillation adapters per FDM (#UDA / #CDA)", [
        (f"{uda} / {cda}", {"num_uda": uda, "num_cda": cda}) for uda, cda in ((1, 1), (2, 1), (1, 2), (2, 2))]),
    7: ("Fusion of layer-wise tokens", [
        ("Avg. pool", {"fusion": "avg"}), ("Learnable gates", {"fusion": "gates"}), ("MLP", {"fusion": "mlp"}),
        ("MLP per token", {"fusion": "mlp_token"})]),
    8: ("Token orthogonality regularisation", [("w/o TOR", {"tor_weight": 0.0}), ("w TOR", {})]),
}

@dataclass
class AblationTable:
    """Numbers of one ablation table on one task."""

    table: int
    title: str
    task: str
    setting: str | None
    base_config: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def markdown(self) -> str:
        from ..tasks import get_task

        columns = get_task(self.task).metric_columns
        task_name = self.task.upper() + (f"-{self.setting.upper()}" if self.setting else "")
        header = (f"| {self.title} | Param. (M) | Act. mem. (MB) | "
                  + " | ".join(f"{task_name} {title}" for title, _ in columns) + " |")
        lines = [f"Tab. {self.table} on {task_name} (base config {self.base_config}; test split, best val epoch)",
                 "", header, "|" + "---|" * (3 + len(columns))]
        for row in self.rows:
            metrics = row["test"]
            cells = [_percent(metrics.get(key)) for _, key in columns]
            lines.append(f"| {row['variant']} | {row['trainable_params'] / 1e6:.2f} | "
                         f"{row['activation_bytes'] / 2 ** 20:.1f} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def ablation_variants(table: int, base: ExperimentConfig) -> list[tuple[str, ExperimentConfig]]:
    """``(row name, config)`` of every variant of paper table ``table`` applied to ``base``."""
    if table not in ABLATION_TABLES:
        raise ValueError(f"no ablation table {table}: expected one of {', '.join(map(str, ABLATION_TABLES))}")
    if base.method != "molt":
        raise ValueError(f"ablations vary MoLT's components; the base config uses method {base.method!r}")
    variants = []
    for name, changes in ABLATION_TABLES[table][1]:
        variants.append((name, dataclasses.replace(base, method_config=base.method_config.replace(**changes))))
    return variants


def _activation_bytes(model: torch.nn.Module, batch: dict[str, Any]) -> int:
    """Bytes autograd saves for backward in one training step of ``model`` on ``batch``."""
    from .bench import SavedTensorCounter

    model.train()
    resident = list(model.parameters()) + list(model.buffers())
    with SavedTensorCounter(exclude=resident) as counter:
        output = model(batch)
        loss = model.task.loss(output.predictions, batch) + sum(output.method.aux_losses.values())
    loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.bytes


def run_ablation(task: str, table: int, *, data: str | os.PathLike, out_dir: str | os.PathLike,
                 config: str | None = None, backbone: str = "tiny", setting: str | None = None,
                 overrides: dict[str, Any] | None = None, enable_progress_bar: bool = False,
                 trust_checkpoint: bool = False) -> AblationTable:
    """Train every variant of paper table ``table`` for ``task`` on ``data`` and write ``tab{table}_{task}.md`` and
    ``.json`` into ``out_dir``.

    Args:
        config: base preset or YAML (default: the task's MoLT preset for ``backbone``).
        overrides: nested config overrides applied to the base (epochs, batch size, seed, ...).
        trust_checkpoint: let an audio weights file pickle more than tensors (``--trust-checkpoint``).
    """
    from torch.utils.data import DataLoader

    from ..model import build_model
    from ..tasks import get_task
    from .train import train

    spec = get_task(task)
    preset = config or spec.default_preset(backbone)
    base = load_config(preset, {**(overrides or {}), **({"setting": setting} if setting else {})})
    if base.task != task:
        raise ValueError(f"config {preset!r} is for task {base.task!r}, not {task!r}")
    prepared = spec.open_prepared(data, base.setting)
    train_set = spec.open_split(prepared, "train")
    probe_batch = next(iter(DataLoader(train_set, batch_size=base.trainer.batch_size, shuffle=False)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = AblationTable(table=table, title=ABLATION_TABLES[table][0], task=task, setting=base.setting,
                           base_config=preset)
    for name, variant in ablation_variants(table, base):
        start = time.time()
        _logger.info("Tab. %d, %s: training", table, name)
        run = train(variant, data=prepared, out_dir=out / "runs", run_name=f"tab{table}_{_slug(name)}",
                    enable_progress_bar=enable_progress_bar, trust_checkpoint=trust_checkpoint)
        torch.manual_seed(variant.trainer.seed)
        model = build_model(variant, train_set.task_options(), trust_checkpoint=trust_checkpoint)
        activation = _activation_bytes(model, probe_batch)
        result.rows.append({"variant": name, "method_config": variant.method_config.to_dict(only_set=True),
                            "test": run["test"], "monitor": run["monitor"], "trainable_params": run["trainable_params"],
                            "total_params": run["total_params"], "activation_bytes": activation,
                            "run_dir": run["run_dir"], "seconds": round(time.time() - start, 1)})
        _write(result, out)
    return result


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def _write(result: AblationTable, out: Path) -> None:
    stem = f"tab{result.table}_{result.task}" + (f"_{result.setting}" if result.setting else "")
    (out / f"{stem}.md").write_text(result.markdown() + "\n")
    (out / f"{stem}.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
