"""Issue J benchmark: how much the feature cache's storage dtype moves results, against online training.

    python benchmarks/cache_dtype.py [--videos 320] [--epochs 15] [--seeds 0,1,2] [--out benchmarks/results]

On the demo's synthetic AVE set and the ``ave_molt_tiny`` preset, for each training seed: one online run (the
frozen backbones run every batch) and one run from a cache of each storage dtype (``float32``, ``float16``,
``bfloat16``; each cache is extracted once, the backbones' random weights do not depend on the training seed).
Everything else (data, order, optimiser, epochs) is the same. Writes ``cache_dtype.json`` and ``cache_dtype.md``:
test segment accuracy and best val accuracy per run, and mean and spread (sample standard deviation) per mode.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

from molt.config import load_config
from molt.app.demo import default_workdir, demo_data
from molt.app.extract import extract
from molt.app.train import software_environment, train

MODES = ("online", "float32", "float16", "bfloat16")


def _mean_spread(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workdir = args.workdir or default_workdir()
    prepared = demo_data(workdir, videos=args.videos, seed=args.data_seed)
    seeds = [int(s) for s in args.seeds.split(",")]
    caches = {}
    for dtype in MODES[1:]:
        cache = workdir / f"cache_dtype_{dtype}"
        extract(load_config("ave_molt_tiny"), data=prepared, out_dir=cache, dtype=dtype, show_progress=False)
        caches[dtype] = cache
    runs = []
    for seed in seeds:
        for mode in MODES:
            config = load_config("ave_molt_tiny", {"trainer": {"max_epochs": args.epochs, "seed": seed}})
            start = time.time()
            result = train(config, data=prepared, out_dir=workdir / "bench_runs", run_name=f"ave_{mode}_seed{seed}",
                           enable_progress_bar=False, features=caches.get(mode))
            runs.append({"mode": mode, "seed": seed, "test_accuracy": result["test"]["accuracy"],
                         "best_val_accuracy": result["best_val_accuracy"],
                         "wall_time_s": round(time.time() - start, 1)})
            print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for mode in MODES:
        rows = [run for run in runs if run["mode"] == mode]
        test_mean, test_sd = _mean_spread([run["test_accuracy"] for run in rows])
        val_mean, val_sd = _mean_spread([run["best_val_accuracy"] for run in rows])
        summary[mode] = {"test_mean": test_mean, "test_sd": test_sd, "val_mean": val_mean, "val_sd": val_sd,
                         "wall_time_mean_s": round(statistics.mean(run["wall_time_s"] for run in rows), 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache_dtype.json").write_text(json.dumps(
        {"videos": args.videos, "epochs": args.epochs, "seeds": seeds, "runs": runs, "summary": summary,
         "environment": software_environment()}, indent=2))
    lines = ["| training | test acc. (%) per seed | test acc. mean ± sd | best val acc. mean ± sd | wall time (s) |",
             "|---|---|---|---|---|"]
    for mode in MODES:
        per_seed = ", ".join(f"{100 * run['test_accuracy']:.1f}" for run in runs if run["mode"] == mode)
        row = summary[mode]
        title = "online (backbones every batch)" if mode == "online" else f"{mode} cache"
        lines.append(f"| {title} | {per_seed} | {100 * row['test_mean']:.1f} ± {100 * row['test_sd']:.1f} | "
                     f"{100 * row['val_mean']:.1f} ± {100 * row['val_sd']:.1f} | {row['wall_time_mean_s']} |")
    (args.out / "cache_dtype.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
