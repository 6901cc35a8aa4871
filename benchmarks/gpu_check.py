"""The GPU path in one run (issue L): memory and speed of MoLT, Mettle and LAVisH, and extraction vs bare inference.

    python benchmarks/gpu_check.py [--backbone paper] [--device cuda] [--out benchmarks/results/gpu_check]
    python benchmarks/gpu_check.py --backbone tiny --device cpu --steps 2 --out /tmp/gpu_check   # dry run on a CPU

For AVE with random weights at the backbone preset's scale, for each method, batch size (1 and 8 clips of 10
segments) and precision (``32-true``, ``bf16-mixed``), and for each method that reads taps also with the frozen
backbones stored in bfloat16 (``--backbone-dtype bfloat16`` with ``bf16-mixed``, the setting that can come near
the paper's 0.7 GB): one warm-up training step (forward, backward, Adam), then
``--steps`` timed steps; reports the median step time and the peak memory of the timed steps
(``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; on a CPU the process's peak RSS, which only
grows). Then, on MoLT's frozen backbones, the throughput of bare inference (the taps, nothing stored) against
``extract_features`` writing the same taps into a float16 cache, over the same batches after one warm-up batch.
Writes ``gpu_check.json`` and ``gpu_check.md`` (device name included). Meant to finish in a few minutes on one GPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from molt.app.bench import bench_config, random_batch
from molt.app.memory import peak_memory_bytes
from molt.features import FeatureManifest, TapGroupSpec, extract_features
from molt.methods import get_method
from molt.model import build_model
from molt.tasks import get_task

TASK = "ave"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _training_steps(method: str, backbone: str, batch_clips: int, precision: str, steps: int, device: str,
                    backbone_dtype: str = "float32") -> dict:
    config = bench_config(TASK, backbone, method, backbone_dtype)
    model = build_model(config, dict(get_task(TASK).paper.task_options)).to(device)
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

    step()                                               # warm-up: allocator, kernels, Adam state
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    times = [step() for _ in range(steps)]
    return {"method": method, "batch_clips": batch_clips, "precision": precision, "backbone_dtype": backbone_dtype,
            "median_step_s": statistics.median(times), "peak_bytes": peak_memory_bytes(device)}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="paper")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--methods", default="molt,mettle,lavish")
    parser.add_argument("--batches", default="1,8", help="clips per training step")
    parser.add_argument("--precisions", default="32-true,bf16-mixed")
    parser.add_argument("--half-backbones", default="bfloat16",
                        help="backbone dtype of the extra bf16-mixed rows of tap-reading methods ('' for none)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the warm-up")
    parser.add_argument("--extract-clips", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_check"))
    args = parser.parse_args()
    device = args.device
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    rows = []
    for method in args.methods.split(","):
        runs = [(precision, "float32") for precision in args.precisions.split(",")]
        if args.half_backbones and get_method(method).reads_taps:
            runs.append(("bf16-mixed", args.half_backbones))
        for batch_clips in (int(b) for b in args.batches.split(",")):
            for precision, backbone_dtype in runs:
                rows.append(_training_steps(method, args.backbone, batch_clips, precision, args.steps, device,
                                            backbone_dtype))
                print(json.dumps(rows[-1]), flush=True)
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()        # the model of that row is gone: give its memory back
    extraction = _extraction(args.backbone, args.extract_clips, 8, device)
    print(json.dumps(extraction), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"device": name, "backbone": args.backbone, "torch": torch.__version__, "training": rows,
               "extraction": extraction, "peak_kind": "cuda_max_allocated" if device.startswith("cuda") else
               "cpu_peak_rss (only grows: later rows include earlier peaks)"}
    (args.out / "gpu_check.json").write_text(json.dumps(payload, indent=2))
    lines = [f"Device: {name}; AVE, backbone preset `{args.backbone}`, random weights, {args.steps} timed steps.", "",
             "| method | clips | precision | frozen backbones | peak memory (GB) | median step (s) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['batch_clips']} | {r['precision']} | {r['backbone_dtype']} | "
              f"{r['peak_bytes'] / 2**30:.2f} | "
              f"{r['median_step_s']:.3f} |" for r in rows]
    lines += ["", f"Extraction: bare inference {extraction['bare_clips_per_s']:.2f} clips/s, molt extract "
              f"{extraction['extract_clips_per_s']:.2f} clips/s ({100 * extraction['extract_vs_bare']:.0f} %), "
              f"{extraction['clips']} clips in batches of 8 after one warm-up batch."]
    (args.out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
