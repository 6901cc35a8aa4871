"""Issue L benchmark: per-adapter W^Q/W^K/W^V (today's default) vs one set per modality and layer (eq. 2 read
literally, ``share_projections: modality``).

    python benchmarks/share_projections.py [--task ave|avqa] [--videos N] [--epochs 15] [--seeds 0,1,2]

On a synthetic set (AVE: the demo's 320 clips; AVQA: 200 videos, as ``avqa_synthetic.py``) with the task's tiny
preset, trains both readings for each seed from one float32 feature cache (a float32 cache gives exactly the
online run, see ``cache_dtype.py``), and counts the trainable parameters of both at paper scale (the task's paper
preset, no forward pass). Writes ``share_projections_<task>.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

from molt.config import load_config
from molt.app.demo import default_workdir
from molt.app.extract import extract
from molt.app.params import count_preset
from molt.tasks import get_task
from molt.tasks.ave import generate_ave
from molt.tasks.avqa import generate_avqa
from molt.app.train import software_environment, train

READINGS = ("adapter", "modality")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="ave", choices=["ave", "avqa"])
    parser.add_argument("--videos", type=int, default=None, help="default: 320 (AVE), 200 (AVQA)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workdir = args.workdir or default_workdir()
    task = args.task
    videos = args.videos or (320 if task == "ave" else 200)
    data_dir = workdir / f"synth_{task}_{videos}_seed0"
    spec = get_task(task)
    if not data_dir.exists():
        (generate_ave if task == "ave" else generate_avqa)(data_dir, num_videos=videos, seed=0)
    prepared = spec.open_prepared(data_dir)
    tiny, paper_preset = spec.default_preset("tiny"), spec.default_preset("paper")
    cache = workdir / ("cache_dtype_float32" if task == "ave" else f"cache_{task}_float32")
    extract(load_config(tiny), data=prepared, out_dir=cache, dtype="float32", show_progress=False)
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for reading in READINGS:
            config = load_config(tiny, {"method_config": {"share_projections": reading},
                                                   "trainer": {"max_epochs": args.epochs, "seed": seed}})
            result = train(config, data=prepared, out_dir=workdir / "bench_runs", features=cache,
                           run_name=f"{task}_share_{reading}_seed{seed}", enable_progress_bar=False)
            runs.append({"reading": reading, "seed": seed, "test_accuracy": result["test"][spec.monitor],
                         "best_val_accuracy": result[f"best_val_{spec.monitor}"],
                         "trainable_params": result["trainable_params"]})
            print(json.dumps(runs[-1]), flush=True)
    paper = {}
    for reading in READINGS:
        count = count_preset(load_config(paper_preset, {"method_config": {"share_projections": reading}}))
        paper[reading] = {"trainable": count.trainable, "total": count.total,
                          "percent": 100.0 * count.trainable / count.total}
    lines = ["| W^Q, W^K, W^V | test acc. (%) per seed | test mean ± sd | best val mean ± sd | trainable (tiny) | "
             "trainable at paper scale (M, % of total) |", "|---|---|---|---|---|---|"]
    summary = {}
    for reading in READINGS:
        rows = [run for run in runs if run["reading"] == reading]
        tests = [run["test_accuracy"] for run in rows]
        vals = [run["best_val_accuracy"] for run in rows]
        spread = (lambda values: statistics.stdev(values) if len(values) > 1 else 0.0)
        summary[reading] = {"test_mean": statistics.mean(tests), "test_sd": spread(tests),
                            "val_mean": statistics.mean(vals), "val_sd": spread(vals)}
        title = "per adapter" if reading == "adapter" else "per modality and layer (eq. 2)"
        lines.append(f"| {title} | {', '.join(f'{100 * t:.1f}' for t in tests)} | "
                     f"{100 * summary[reading]['test_mean']:.1f} ± {100 * summary[reading]['test_sd']:.1f} | "
                     f"{100 * summary[reading]['val_mean']:.1f} ± {100 * summary[reading]['val_sd']:.1f} | "
                     f"{rows[0]['trainable_params']:,} | {paper[reading]['trainable'] / 1e6:.2f} "
                     f"({paper[reading]['percent']:.1f} %) |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"share_projections_{task}.json").write_text(json.dumps(
        {"task": task, "videos": videos, "epochs": args.epochs, "runs": runs, "summary": summary,
         "paper_scale": paper, "environment": software_environment()}, indent=2))
    (args.out / f"share_projections_{task}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
