"""Everything a lent GPU should check, in one command of under 8 minutes (issue S).

    python3 benchmarks/gpu_run.py --out "$OUT"                  # on the GPU machine (defaults: cuda, paper scale)
    python3 benchmarks/gpu_run.py --device cpu --backbone tiny --precisions 32-true --steps 2 --out /tmp/gpu_run
                                                                # dry run on a CPU (2 minutes on 2 cores)

Stages, each with its share of ``--budget`` seconds (what does not fit says ``skipped: time budget``):

1. **setup**: installs the wheels of ``.whl/`` (``tools/gpu_wheels.sh``: PyAV, pytest) that the image lacks into
   ``/tmp/site`` (``pip install --no-index --no-deps --target``), puts ``src`` and ``/tmp/site`` on the
   ``PYTHONPATH`` of every later process, and saves ``nvidia-smi``'s output;
2. **pytest**: ``python -m pytest -m cuda --runslow tests/unit/test_cuda.py`` (the GPU against the CPU; on a CPU
   they are skipped), its summary saved;
3. **cli**: per task of ``--tasks`` (default ave, avs, avqa; tiny backbones, generated data) the verbs as a user
   runs them, in one process per task: ``molt synth``, ``molt train`` for one epoch on ``--device`` with each
   precision of ``--precisions``, ``molt eval`` and ``molt predict`` of the first run's adapters on the device
   (AVE: also ``molt eval --accelerator cpu`` of the last run's ``last.ckpt``, a training checkpoint written on the
   device read on the CPU), ``molt extract`` on the device and one epoch of training from that feature cache;
4. **gpu_check**: ``benchmarks/gpu_check.py`` at ``--backbone`` scale for the five methods (peak memory, median
   step time, extraction against bare inference); each row guarded (out of memory, time budget).

Writes at most 7 files into ``--out`` (default ``$OUT``, else ``benchmarks/results/gpu``): ``gpu_run.json`` (every
stage and step: status, seconds, metrics), ``gpu_run.md`` (the same as tables), ``pytest.txt``, ``cli.log`` (the
verbs' output), ``nvidia-smi.txt``, ``gpu_check.json`` and ``gpu_check.md``. Scratch data goes to a temporary
folder that is removed at the end. Only the standard library is imported here: the stages run in child processes.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(tempfile.gettempdir()) / "site"
# stage -> share of the time left when it starts (the last takes what is left)
SHARES = {"pytest": 0.3, "cli": 0.5, "gpu_check": 1.0}
# clips generated per task for the CLI stage: every split gets at least one
VIDEOS = {"ave": 16, "avs": 16, "avqa": 12, "avvp": 24}
# modules the verbs need beyond the standard library, and the wheels (tools/gpu_wheels.sh) that provide them
NEEDED = ("torch", "torchvision", "timm", "numpy", "yaml", "safetensors", "av", "tqdm", "PIL", "huggingface_hub",
          "lightning", "tensorboard", "matplotlib", "psutil", "pytest")
SKIPPED = "skipped: time budget"
TASK_RESERVE_S = 30.0
# set by a dry run on a CPU: one intra-op thread per process (the tiny models are latency-bound, and OpenMP threads
# that spin waiting for each other make a shared CPU many times slower)
CHILD_ENV: dict[str, str] = {}


def _environment() -> dict[str, str]:
    """The environment of every child: the checkout's ``src`` and the installed wheels first, no network."""
    env = dict(os.environ)
    paths = [str(ROOT / "src")] + ([str(SITE)] if SITE.is_dir() else []) + [p for p in
                                                                            env.get("PYTHONPATH", "").split(":") if p]
    env.update(PYTHONPATH=":".join(paths), MPLBACKEND="Agg", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               **CHILD_ENV)
    return env


def _run(command: list[str], timeout: float, cwd: Path | None = None) -> dict:
    """Run ``command`` in its own process group; its exit status, seconds and combined output (``timed out`` past
    ``timeout``: then the whole group is killed, so no grandchild keeps the output pipe open)."""
    start = time.monotonic()
    try:
        process = subprocess.Popen(command, cwd=cwd or ROOT, env=_environment(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
    except OSError as error:
        return {"command": " ".join(command), "rc": f"could not start: {error}", "seconds": 0.0, "output": ""}
    try:
        output, _ = process.communicate(timeout=max(timeout, 1))
        status = process.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        status = "timed out"
    return {"command": " ".join(command), "rc": status, "seconds": round(time.monotonic() - start, 1),
            "output": output or ""}


def install_wheels() -> dict:
    """Install the wheels in ``.whl/`` whose module is not importable yet into :data:`SITE`."""
    wheels = sorted((ROOT / ".whl").glob("*.whl"))
    if not wheels:
        return {"status": "no .whl folder: nothing installed"}
    missing = [w for w in wheels if importlib.util.find_spec(w.name.split("-")[0].lower()) is None]
    if not missing:
        return {"status": "every wheel's module is already importable", "wheels": [w.name for w in wheels]}
    run = _run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(SITE),
                *map(str, missing)], timeout=120)
    status = "installed"
    if run["rc"] != 0:              # no pip in the image: a wheel is a zip of what pip would put in site-packages
        for wheel in missing:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(SITE)
        status = f"unpacked (pip failed: {run['rc']})"
    return {"status": status, "wheels": [w.name for w in missing], "seconds": run["seconds"],
            "output": run["output"][-2000:]}


def setup(out: Path) -> dict:
    start = time.monotonic()
    installed = install_wheels()
    smi = _run(["nvidia-smi"], timeout=30) if shutil.which("nvidia-smi") else {"rc": "no nvidia-smi",
                                                                               "output": ""}
    (out / "nvidia-smi.txt").write_text(smi["output"] or f"nvidia-smi: {smi['rc']}\n")
    probe = _run([sys.executable, "-c", "import json, torch; print(json.dumps({'torch': torch.__version__, "
                  "'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available(), 'gpu': "
                  "torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))"], timeout=120)
    modules = _run([sys.executable, "-c", "import importlib.util, json; print(json.dumps([m for m in "
                    f"{list(NEEDED)!r} if importlib.util.find_spec(m) is None]))"], timeout=60)
    result = {"status": "ok", "wheels": installed, "python": platform.python_version(),
              "nvidia_smi": smi["rc"]}
    with contextlib.suppress(ValueError, IndexError):
        result.update(json.loads(probe["output"].strip().splitlines()[-1]))
    with contextlib.suppress(ValueError, IndexError):
        result["missing_modules"] = json.loads(modules["output"].strip().splitlines()[-1])
    if result.get("missing_modules"):
        result["status"] = "missing modules: " + ", ".join(result["missing_modules"])
    result["seconds"] = round(time.monotonic() - start, 1)
    return result


def pytest_stage(out: Path, timeout: float) -> dict:
    run = _run([sys.executable, "-m", "pytest", "-m", "cuda", "--runslow", "-p", "no:cacheprovider", "-rA",
                "-o", "console_output_style=classic", "tests/unit/test_cuda.py"], timeout=timeout)
    (out / "pytest.txt").write_text(f"$ {run['command']}\n(rc {run['rc']}, {run['seconds']} s)\n\n{run['output']}")
    lines = run["output"].strip().splitlines()
    summary = next((line.strip("= ") for line in reversed(lines) if " in " in line and ("passed" in line or "skipped"
                    in line or "failed" in line or "error" in line)), "")
    report = [line.strip() for line in lines if line.startswith("paper-scale MoLT AVE step")]
    return {"status": "ok" if run["rc"] == 0 else f"rc {run['rc']}", "seconds": run["seconds"],
            "summary": summary, "report": report}


def _prediction_inputs(task: str, data: Path) -> list[str]:
    """``molt predict TASK`` inputs for one generated clip of ``data``."""
    if task == "avs":
        prepared = next(data.glob("prepared_*"))
        name = json.loads((prepared / "index.json").read_text())["rows"][0]["video_id"]
        frames = next(data.rglob(f"visual_frames/*/*/{name}"))
        return ["--frames", str(frames), "--audio", str(next(data.rglob(f"{name}.wav")))]
    if task == "avqa":
        row = json.loads((data / "prepared" / "index.json").read_text())["rows"][0]
        return ["--video", str(next(data.rglob(f"{row['video_id']}.mp4"))), "--question", row["question"]]
    return ["--video", str(sorted(p for p in data.rglob("*.mp4") if "prepared" not in p.parts)[0])]


def cli_task(task: str, work: Path, record: Path, accelerator: str, precisions: list[str], deadline: float) -> None:
    """The verbs of one task, in this process (``molt.app.cli.main``); a step record appended to ``record`` (JSON
    list, rewritten after each step)."""
    from molt.app.cli import main

    steps: list[dict] = []
    data, runs = work / "data", work / "runs"

    def step(name: str, argv: list[str], read=None) -> dict:
        entry = {"task": task, "step": name, "argv": " ".join(argv)}
        if time.monotonic() > deadline:
            entry["status"] = SKIPPED
        else:
            start = time.monotonic()
            buffer = io.StringIO()
            try:
                with contextlib.redirect_stdout(buffer):
                    rc = main(["--quiet", *argv])
            except BaseException as error:      # a crash of one verb is that step's result, the next one runs
                rc = f"{type(error).__name__}: {error}"[:300]
            entry.update(status="ok" if rc == 0 else f"rc {rc}", seconds=round(time.monotonic() - start, 1))
            print(buffer.getvalue()[-4000:], flush=True)
            if rc == 0 and read is not None:
                with contextlib.suppress(Exception):
                    entry.update(read())
        steps.append(entry)
        record.write_text(json.dumps(steps, indent=1))
        print(f"[{task}] {name}: {entry['status']} ({entry.get('seconds', 0)} s)", flush=True)
        return entry

    def trained(out: Path) -> dict:
        result = json.loads(next(out.glob("*/version_0/result.json")).read_text())
        return {"global_step": result["global_step"], "test": result["test"], "wall_time_s": result["wall_time_s"],
                "adapters": result["adapters"], "run_dir": result["run_dir"]}

    step("synth", ["synth", task, "--out", str(data), "--videos", str(VIDEOS[task]), "--seed", "0", "--workers", "2"])
    first = None
    for precision in precisions:
        entry = step(f"train {precision}", ["train", task, "--data", str(data), "--epochs", "1", "--accelerator",
                                            accelerator, "--precision", precision, "--out", str(runs / precision)],
                     lambda p=precision: trained(runs / p))
        first = first or (entry if "adapters" in entry else None)
        last = entry
    if first is None:
        steps.append({"task": task, "step": "eval, predict", "status": "skipped: no trained run"})
    else:
        metrics = work / "eval" / "metrics.json"
        step("eval", ["eval", task, "--data", str(data), "--checkpoint", first["adapters"], "--out",
                      str(work / "eval"), "--accelerator", accelerator],
             lambda: {"metrics": {k: v for k, v in json.loads(metrics.read_text()).items()
                                  if isinstance(v, (int, float))}})
        if task == "ave" and "run_dir" in last:
            step("eval last.ckpt (cpu)", ["eval", task, "--data", str(data), "--checkpoint",
                                          str(Path(last["run_dir"]) / "checkpoints" / "last.ckpt"), "--out",
                                          str(work / "eval_ckpt"), "--accelerator", "cpu"])
        try:
            inputs = _prediction_inputs(task, data)
        except (OSError, ValueError, KeyError, IndexError, StopIteration) as error:
            steps.append({"task": task, "step": "predict", "status": f"no input clip: {error!r}"[:300]})
        else:
            step("predict", ["predict", task, "--checkpoint", first["adapters"], "--out", str(work / "predict"),
                             "--accelerator", accelerator, *inputs],
                 lambda: {"files": len(json.loads((work / "predict" / "predictions.json").read_text())["files"])})
    step("extract", ["extract", task, "--data", str(data), "--out", str(work / "cache"), "--accelerator",
                     accelerator, "--batch-size", "4"])
    step("train from features", ["train", task, "--data", str(data), "--features", str(work / "cache"), "--epochs",
                                 "1", "--accelerator", accelerator, "--precision", precisions[0], "--out",
                                 str(runs / "features")], lambda: trained(runs / "features"))


def cli_stage(out: Path, work: Path, args: argparse.Namespace, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    steps, logs, started = [], [], time.monotonic()
    tasks = args.tasks.split(",")
    for index, task in enumerate(tasks):
        left = deadline - time.monotonic()
        if left < 10:
            steps.append({"task": task, "step": "all", "status": SKIPPED})
            continue
        record = work / f"{task}.json"
        # no step starts after this task's soft deadline, which keeps 30 s for each later task; the process is
        # stopped at the stage's end
        soft = max(left - TASK_RESERVE_S * (len(tasks) - index - 1), min(left, TASK_RESERVE_S)) - 5
        run = _run([sys.executable, str(Path(__file__).resolve()), "--cli-task", task, "--work", str(work / task),
                    "--record", str(record), "--accelerator", accelerator, "--precisions", args.precisions,
                    "--seconds", str(soft)], timeout=left, cwd=work)
        logs.append(f"===== {task}: rc {run['rc']}, {run['seconds']} s\n{run['output'][-20000:]}")
        done = json.loads(record.read_text()) if record.is_file() else []
        steps += done
        if run["rc"] != 0:
            steps.append({"task": task, "step": "process", "status": f"rc {run['rc']}", "seconds": run["seconds"]})
    (out / "cli.log").write_text("\n".join(logs) + "\n")
    failed = [s for s in steps if s["status"] != "ok"]
    return {"status": "ok" if not failed else f"{len(failed)} step(s) not ok",
            "seconds": round(time.monotonic() - started, 1), "steps": steps}


def gpu_check_stage(out: Path, args: argparse.Namespace, timeout: float) -> dict:
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--backbone", args.backbone, "--device",
               args.device, "--steps", str(args.steps), "--methods", args.methods, "--out", str(out),
               "--time-budget", str(max(timeout - 60, timeout / 2))]
    if args.device == "cpu":        # the dry run: what a CPU does in seconds (bfloat16 on a CPU is slow)
        command += ["--batches", "1", "--precisions", "32-true", "--half-backbones", "", "--extract-clips", "8"]
    run = _run(command, timeout=timeout)
    payload = {}
    with contextlib.suppress(OSError, ValueError):
        payload = json.loads((out / "gpu_check.json").read_text())
    rows = payload.get("training", [])
    # a row out of memory is a measurement; any other failure is not
    failed = sum("error" in r and r["error"] != "out of memory" for r in rows)
    status = f"rc {run['rc']}" if run["rc"] != 0 else f"{failed} row(s) failed" if failed else "ok"
    return {"status": status, "seconds": run["seconds"],
            "rows": len(rows), "rows_measured": sum("peak_bytes" in r for r in rows),
            "rows_out_of_memory": sum(r.get("error") == "out of memory" for r in rows),
            "rows_skipped": sum("skipped" in r for r in rows), "output": run["output"][-3000:]}


def write_report(out: Path, report: dict) -> None:
    (out / "gpu_run.json").write_text(json.dumps(report, indent=2))
    stages = report["stages"]
    lines = [f"# GPU run: {report['device']}", "",
             f"{report['started']}, {report['seconds']} s of a {report['budget_s']} s budget; torch "
             f"{stages['setup'].get('torch')}, CUDA {stages['setup'].get('cuda')}, GPU {stages['setup'].get('gpu')}.",
             "", "| stage | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {stage.get('status')} | {stage.get('seconds', '')} |" for name, stage in stages.items()]
    if "pytest" in stages:
        lines += ["", f"pytest: {stages['pytest'].get('summary', '')}", *stages["pytest"].get("report", [])]
    if "cli" in stages:
        lines += ["", "| task | step | status | seconds | result |", "|---|---|---|---|---|"]
        for s in stages["cli"].get("steps", []):
            result = s.get("test") or s.get("metrics") or ""
            if isinstance(result, dict):
                result = ", ".join(f"{k} {v:.3f}" for k, v in list(result.items())[:3] if isinstance(v, float))
            lines.append(f"| {s['task']} | {s['step']} | {s['status']} | {s.get('seconds', '')} | {result} |")
    if (out / "gpu_check.md").is_file():
        lines += ["", "## gpu_check", "", (out / "gpu_check.md").read_text().strip()]
    (out / "gpu_run.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "benchmarks/results/gpu"))
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run (default: %(default)s)")
    parser.add_argument("--backbone", default="paper", help="gpu_check's backbone preset (default: %(default)s)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all stages (default: %(default)s)")
    parser.add_argument("--stages", default="pytest,cli,gpu_check", help="default: %(default)s")
    parser.add_argument("--tasks", default="ave,avs,avqa", help="tasks of the cli stage (default: %(default)s)")
    parser.add_argument("--precisions", default="32-true,bf16-mixed",
                        help="training precisions of the cli stage; the first is also the cached run's")
    parser.add_argument("--methods", default="molt,mettle,lavish,dgsct,avmoe", help="gpu_check's methods")
    parser.add_argument("--steps", type=int, default=5, help="gpu_check's timed steps (default: %(default)s)")
    parser.add_argument("--cli-task", help=argparse.SUPPRESS)         # the child process of one task's verbs
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--accelerator", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cli_task:
        cli_task(args.cli_task, args.work, args.record, args.accelerator, args.precisions.split(","),
                 time.monotonic() + args.seconds)
        return 0
    unknown = set(args.stages.split(",")) - set(SHARES)
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(sorted(unknown))}; choices: {', '.join(SHARES)}")
    if args.device == "cpu":
        CHILD_ENV["OMP_NUM_THREADS"] = "1"
    started = time.monotonic()
    deadline = started + args.budget
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": args.device, "backbone": args.backbone, "budget_s": args.budget,
              "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "stages": {}}
    stages = report["stages"]
    stages["setup"] = setup(out)
    print(f"setup: {stages['setup']['status']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_run_") as scratch:
        for name in (s for s in SHARES if s in args.stages.split(",")):
            left = deadline - time.monotonic()
            if left < 15:
                stages[name] = {"status": SKIPPED}
            else:
                is_last = [s for s in SHARES if s in args.stages.split(",")][-1] == name
                timeout = left if is_last else left * SHARES[name]
                if name == "pytest":
                    stages[name] = pytest_stage(out, timeout)
                elif name == "cli":
                    stages[name] = cli_stage(out, Path(scratch), args, timeout)
                else:
                    stages[name] = gpu_check_stage(out, args, timeout)
            print(f"{name}: {stages[name]['status']} ({stages[name].get('seconds', 0)} s)", flush=True)
            report["seconds"] = round(time.monotonic() - started, 1)
            write_report(out, report)
    report["seconds"] = round(time.monotonic() - started, 1)
    write_report(out, report)
    print((out / "gpu_run.md").read_text())
    return 0 if all(stage["status"] == "ok" for stage in stages.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
