"""``molt demo``: the whole pipeline on a fresh CPU machine in minutes, with no downloads.

1. generate a small synthetic AVE set (real mp4 files + AVE annotation files) into ``molt-demo/`` in the current
   directory (``--workdir`` elsewhere), where the run, its pictures and ``demo.json`` go too;
2. decode and prepare it exactly as a real AVE download would be (``molt prepare``);
3. train MoLT on the tiny random-weight backbones (``molt train``), selecting on val;
4. evaluate on test and print accuracy next to the majority-class baseline, parameters, peak memory, wall time.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

__all__ = ["run_demo", "default_workdir", "demo_data"]

_logger = logging.getLogger(__name__)


def default_workdir() -> Path:
    """``molt-demo`` in the current directory: where a user looks for what a command wrote."""
    return Path("molt-demo")


def demo_data(workdir: str | os.PathLike | None = None, *, videos: int = 320, seed: int = 0,
              show_progress: bool = True) -> Path:
    """The demo's synthetic AVE set in ``workdir`` (generated on first use), prepared: the prepared directory
    (inside the data root, its parent). The benchmarks that compare variants on the demo set use it too."""
    from ..tasks.ave import ensure_prepared, generate_ave

    workdir = Path(workdir) if workdir else default_workdir()
    data_dir = workdir / f"synth_ave_{videos}_seed{seed}"
    if not (data_dir / "Annotations.txt").is_file():
        _logger.info("generating %d synthetic AVE clips into %s", videos, data_dir)
        generate_ave(data_dir, num_videos=videos, seed=seed, show_progress=show_progress)
    return ensure_prepared(data_dir, show_progress=show_progress)


def run_demo(workdir: str | os.PathLike | None = None, *, videos: int = 320, epochs: int = 15, seed: int = 0,
             config: str = "ave_molt_tiny", enable_progress_bar: bool = True) -> str:
    """Run the demo and return the printed summary table (also written to ``workdir/demo.json``)."""
    from ..config import load_config
    from .evaluate import evaluate
    from ..tasks.ave import PreparedAVE, majority_accuracy
    from .train import train

    start = time.time()
    workdir = Path(workdir) if workdir else default_workdir()
    prepared = demo_data(workdir, videos=videos, seed=seed, show_progress=enable_progress_bar)
    data_dir = prepared.parent
    experiment = load_config(config, {"trainer": {"max_epochs": epochs, "seed": seed}})
    result = train(experiment, data=prepared, out_dir=workdir / "runs", enable_progress_bar=enable_progress_bar)
    train_labels = PreparedAVE(prepared, "train").segment_labels()
    test_labels = PreparedAVE(prepared, "test").segment_labels()
    baseline = majority_accuracy(train_labels, test_labels)
    figures = evaluate(result["adapters"], data=prepared, split="test", out_dir=workdir / "evaluations" / "test")
    wall = time.time() - start
    rows = [
        ("test segment accuracy (MoLT)", f"{100 * result['test']['accuracy']:.1f} %"),
        ("majority-class accuracy", f"{100 * baseline:.1f} %"),
        ("best val accuracy", f"{100 * (result['best_val_accuracy'] or 0):.1f} %"),
        ("trainable / total params", f"{result['trainable_params']:,} / {result['total_params']:,} "
                                     f"({100 * result['trainable_params'] / result['total_params']:.1f} %)"),
        ("peak memory (RSS)", f"{result['peak_rss_mb']:.0f} MB"),
        ("wall time (all steps)", f"{wall:.0f} s"),
        ("data", str(data_dir)),
        ("adapters", result["adapters"]),
        ("timelines (test)", figures["figures"][0]),
        ("TensorBoard", f"tensorboard --logdir {workdir / 'runs'}"),
    ]
    width = max(len(name) for name, _ in rows)
    table = "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
    summary = {**result, "majority_accuracy": baseline, "demo_wall_time_s": round(wall, 1), "data": str(data_dir)}
    with open(workdir / "demo.json", "w") as handle:
        json.dump(summary, handle, indent=2)
    return "MoLT demo on synthetic AVE (tiny random-weight backbones, CPU)\n" + table
