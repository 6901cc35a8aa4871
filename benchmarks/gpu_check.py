"""The GPU path in one run (issues L, S): memory and speed of MoLT, Mettle, LAVisH, DG-SCT and AVMoE, and
extraction vs bare inference.

    python benchmarks/gpu_check.py [--backbone paper] [--device cuda] [--out benchmarks/results/gpu_check]
    python benchmarks/gpu_check.py --backbone tiny --device cpu --steps 2 --out /tmp/gpu_check   # dry run on a CPU

For AVE with random weights at the backbone preset's scale, for each method of ``--methods`` (default: the five
of the efficiency benchmark), batch size (1 and 8 clips of 10 segments) and precision (``32-true``,
``bf16-mixed``), and for each method that reads taps also with the frozen backbones stored in bfloat16
(``--backbone-dtype bfloat16`` with ``bf16-mixed``, the setting that can come near the paper's 0.7 GB): one warm-up
training step (forward, backward, Adam), then ``--steps`` timed steps; reports the median step time and the peak
memory of the timed steps (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; on a CPU the
process's peak RSS, which only grows). A method's model is built once per backbone dtype and reused by its rows
(a fresh Adam each row). Before that, on MoLT's frozen backbones, the throughput of bare inference (the taps,
nothing stored) against ``extract_features`` writing the same taps into a float16 cache, over the same batches
after one warm-up batch.

Each row is guarded: one that runs out of memory says ``out of memory`` (another failure: its error) and the run
goes on with the next; with ``--time-budget S`` the rows that would start after ``S`` seconds say ``skipped: time
budget``. ``gpu_check.json`` and ``gpu_check.md`` (device name included) are rewritten after every row, so a run
stopped from outside keeps what it measured. Meant to finish in a few minutes on one GPU.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from molt.app.bench import BENCH_METHODS, bench_config, random_batch
from molt.app.memory import peak_memory_bytes
from molt.features import FeatureManifest, TapGroupSpec, extract_features
from molt.methods import get_method
from molt.model import build_model
from molt.tasks import get_task

TASK = "ave"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _build(method: str, backbone: str, device: str, backbone_dtype: str = "float32"):
    """The method's AVE model on ``device``: on a GPU built there (random initialisation of Swin-V2-L takes seconds
    on a CPU), or on the CPU and moved when that fails."""
    config = bench_config(TASK, backbone, method, backbone_dtype)
    options = dict(get_task(TASK).paper.task_options)
    if device.startswith("cuda"):
        try:
            with torch.device(device):
                return build_model(config, options).to(device)
        except Exception as error:          # e.g. a constant built from NumPy: build on the CPU instead
            print(f"{method}: building on {device} failed ({_failure(error)}); building on the CPU", flush=True)
            _free(device)
    return build_model(config, options).to(device)


def _training_steps(model, method: str, batch_clips: int, precision: str, steps: int, device: str,
                    backbone_dtype: str = "float32") -> dict:
    """One warm-up and ``steps`` timed training steps of ``model`` on ``batch_clips`` random clips; the row."""
    model.train()
    batch = random_batch(model, TASK, batch_clips, device=device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                              enabled=precision == "bf16-mixed")

    def step() -> float:
        _sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            output = model(batch)
            loss = model.task.loss(output.predictions, batch) + sum(output.method.aux_losses.values())
        loss.backward()
        optimizer.step()
        _sync(device)
        return time.perf_counter() - start

    try:
        step()                                               # warm-up: allocator, kernels, Adam state
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)
        times = [step() for _ in range(steps)]
    finally:
        optimizer.zero_grad(set_to_none=True)            # the next row starts without this row's gradients
    return {"method": method, "batch_clips": batch_clips, "precision": precision, "backbone_dtype": backbone_dtype,
            "median_step_s": statistics.median(times), "peak_bytes": peak_memory_bytes(device)}


def _failure(error: BaseException) -> str:
    """``"out of memory"`` for a CUDA (or CPU allocator) out-of-memory error, else the error in one line."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in text.lower():
        return "out of memory"
    return text.splitlines()[0][:300] if text.strip() else type(error).__name__


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


class _RandomClips(Dataset):
    """``count`` random clips at the model's input size (frames and audio only)."""

    def __init__(self, model, count: int) -> None:
        self.batch = random_batch(model, TASK, count)

    def __len__(self) -> int:
        return self.batch["frames"].shape[0]

    def __getitem__(self, index: int) -> dict:
        return {"frames": self.batch["frames"][index], "audio": self.batch["audio"][index]}


def _extraction(backbone: str, clips: int, batch_clips: int, device: str) -> dict:
    model = build_model(bench_config(TASK, backbone, "molt"), dict(get_task(TASK).paper.task_options)).to(device)
    model.eval()
    dataset = _RandomClips(model, clips + batch_clips)           # the first batch is the warm-up of both

    def compute(batch: dict) -> dict:
        inputs = model.compute_inputs({"frames": batch["frames"].to(device), "audio": batch["audio"].to(device)})
        return {"visual_taps": inputs["visual_taps"], "audio_taps": inputs["audio_taps"]}

    with torch.no_grad():
        batches = [dataset.batch["frames"][i:i + batch_clips] for i in range(0, len(dataset), batch_clips)]
        audios = [dataset.batch["audio"][i:i + batch_clips] for i in range(0, len(dataset), batch_clips)]
        compute({"frames": batches[0], "audio": audios[0]})
        _sync(device)
        start = time.perf_counter()
        for frames, audio in zip(batches[1:], audios[1:]):
            compute({"frames": frames, "audio": audio})
        _sync(device)
        bare = clips / (time.perf_counter() - start)
    groups = {"visual_taps": TapGroupSpec.from_backbone(model.visual, model.features.visual_blocks),
              "audio_taps": TapGroupSpec.from_backbone(model.audio, model.features.audio_blocks)}
    manifest = FeatureManifest(task=TASK, groups=groups, num_segments=10, chunk_size=len(dataset))
    with tempfile.TemporaryDirectory() as scratch:
        extract_features(torch.utils.data.Subset(dataset, range(batch_clips)), compute, Path(scratch) / "warm",
                         manifest, split="warm", batch_size=batch_clips, show_progress=False)
        report = extract_features(torch.utils.data.Subset(dataset, range(batch_clips, len(dataset))), compute,
                                  Path(scratch) / "cache", manifest, split="train", batch_size=batch_clips,
                                  show_progress=False)
    return {"clips": clips, "batch_clips": batch_clips, "bare_clips_per_s": bare,
            "extract_clips_per_s": report.clips_per_second, "extract_vs_bare": report.clips_per_second / bare}


def _row_cell(row: dict, key: str, scale: float, digits: int) -> str:
    if "error" in row or "skipped" in row:
        return row.get("error") or row["skipped"]
    return f"{row[key] / scale:.{digits}f}"


def write_results(out: Path, payload: dict) -> None:
    """``gpu_check.json`` (``payload``) and ``gpu_check.md`` (its tables) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(payload, indent=2))
    lines = [f"Device: {payload['device']}; AVE, backbone preset `{payload['backbone']}`, random weights, "
             f"{payload['steps']} timed steps.", "",
             "| method | clips | precision | frozen backbones | peak memory (GB) | median step (s) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['batch_clips']} | {r['precision']} | {r['backbone_dtype']} | "
              f"{_row_cell(r, 'peak_bytes', 2**30, 2)} | {_row_cell(r, 'median_step_s', 1, 3)} |"
              for r in payload["training"]]
    extraction = payload.get("extraction")
    if extraction is not None and ("error" in extraction or "skipped" in extraction):
        lines += ["", f"Extraction: {extraction.get('error') or extraction['skipped']}."]
    elif extraction is not None:
        lines += ["", f"Extraction: bare inference {extraction['bare_clips_per_s']:.2f} clips/s, molt extract "
                  f"{extraction['extract_clips_per_s']:.2f} clips/s ({100 * extraction['extract_vs_bare']:.0f} %), "
                  f"{extraction['clips']} clips in batches of 8 after one warm-up batch."]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="paper")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--methods", default=",".join(BENCH_METHODS),
                        help="comma-separated methods (default: %(default)s)")
    parser.add_argument("--batches", default="1,8", help="clips per training step")
    parser.add_argument("--precisions", default="32-true,bf16-mixed")
    parser.add_argument("--half-backbones", default="bfloat16",
                        help="backbone dtype of the extra bf16-mixed rows of tap-reading methods ('' for none)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the warm-up")
    parser.add_argument("--extract-clips", type=int, default=32, help="clips of the extraction timing (0: none)")
    parser.add_argument("--time-budget", type=float, default=0.0,
                        help="seconds after which no further row starts (its row says 'skipped: time budget'; "
                             "0: no limit)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_check"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    device = args.device
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    payload = {"device": name, "backbone": args.backbone, "torch": torch.__version__, "steps": args.steps,
               "methods": args.methods.split(","), "training": [], "extraction": None,
               "peak_kind": "cuda_max_allocated" if device.startswith("cuda") else
               "cpu_peak_rss (only grows: later rows include earlier peaks)"}

    def out_of_time() -> bool:
        return bool(args.time_budget) and time.monotonic() - started > args.time_budget

    if args.extract_clips > 0:
        try:
            payload["extraction"] = _extraction(args.backbone, args.extract_clips, 8, device)
        except Exception as error:          # one failed measurement must not stop the others
            payload["extraction"] = {"clips": args.extract_clips, "batch_clips": 8, "error": _failure(error)}
        _free(device)
        print(json.dumps(payload["extraction"]), flush=True)
        write_results(args.out, payload)
    rows = payload["training"]
    for method in payload["methods"]:
        runs = [(precision, "float32") for precision in args.precisions.split(",")]
        if args.half_backbones and get_method(method).reads_taps:
            runs.append(("bf16-mixed", args.half_backbones))
        models: dict = {}
        for batch_clips in (int(b) for b in args.batches.split(",")):
            for precision, backbone_dtype in runs:
                row = {"method": method, "batch_clips": batch_clips, "precision": precision,
                       "backbone_dtype": backbone_dtype}
                if out_of_time():
                    row["skipped"] = "skipped: time budget"
                else:
                    try:
                        if backbone_dtype not in models:
                            models[backbone_dtype] = _build(method, args.backbone, device, backbone_dtype)
                        row = _training_steps(models[backbone_dtype], method, batch_clips, precision, args.steps,
                                              device, backbone_dtype)
                    except Exception as error:  # e.g. out of memory: this row says so, the next one runs
                        row["error"] = _failure(error)
                        models.pop(backbone_dtype, None)     # rebuilt for the next row, in a clean state
                        _free(device)
                rows.append(row)
                print(json.dumps(row), flush=True)
                write_results(args.out, payload)
        del models
        _free(device)                               # this method's models are gone: give their memory back
    print((args.out / "gpu_check.md").read_text())


if __name__ == "__main__":
    main()
