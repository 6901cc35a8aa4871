"""Issue C benchmark: MoLT vs audio-only and visual-only variants on the default synthetic AVE set.

    python benchmarks/ave_modalities.py [--videos 320] [--epochs 15] [--seeds 0] [--out benchmarks/results]

Generates (or reuses) the demo's synthetic set, trains the three variants of the ``ave_molt_tiny`` preset with
the same seed, and writes ``ave_modalities.json`` and ``ave_modalities.md`` (test segment accuracy, best val
accuracy, trainable parameters, wall time, plus the majority-class baseline).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from molt.config import load_config
from molt.app.demo import default_workdir, demo_data
from molt.tasks.ave import PreparedAVE, majority_accuracy
from molt.app.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    workdir = args.workdir or default_workdir()
    prepared = demo_data(workdir, videos=args.videos, seed=args.data_seed)
    baseline = majority_accuracy(PreparedAVE(prepared, "train").segment_labels(),
                                 PreparedAVE(prepared, "test").segment_labels())
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for modalities in ("both", "audio", "visual"):
            config = load_config("ave_molt_tiny", {
                "method_config": {"modalities": modalities},
                "trainer": {"max_epochs": args.epochs, "seed": seed}})
            start = time.time()
            result = train(config, data=prepared, out_dir=workdir / "bench_runs",
                           run_name=f"ave_{modalities}_seed{seed}", enable_progress_bar=False)
            rows.append({"modalities": modalities, "seed": seed, "test_accuracy": result["test"]["accuracy"],
                         "best_val_accuracy": result["best_val_accuracy"],
                         "trainable_params": result["trainable_params"], "wall_time_s": round(time.time() - start, 1)})
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"videos": args.videos, "epochs": args.epochs, "majority_accuracy": baseline, "runs": rows}
    (args.out / "ave_modalities.json").write_text(json.dumps(summary, indent=2))
    lines = ["| variant | seed | test acc. (%) | best val acc. (%) | trainable params | wall time (s) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['modalities']} | {row['seed']} | {100 * row['test_accuracy']:.1f} | "
                     f"{100 * row['best_val_accuracy']:.1f} | {row['trainable_params']:,} | {row['wall_time_s']} |")
    lines.append(f"| majority class | - | {100 * baseline:.1f} | - | - | - |")
    (args.out / "ave_modalities.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
