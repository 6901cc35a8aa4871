"""Issue G benchmark: training from a feature cache vs online, and extraction vs bare backbone inference.

    python benchmarks/cache_speed.py [--presets tiny,paper] [--timed-batches 8] [--batch-size N]
                                     [--share-projections adapter|modality] [--device cpu] [--out benchmarks/results]

For each backbone preset (``tiny``: the test backbones; ``paper``: Swin-V2-L + HTS-AT at full size with random
weights) on the same synthetic AVE clips (prepared at the preset's input size; one warm-up batch plus
``--timed-batches`` batches of the preset's own batch size unless ``--batch-size`` says otherwise, all of them
training clips), one run measures:

* **bare inference**: clips/s of the frozen backbones computing the taps MoLT reads (``compute_inputs``), nothing
  stored;
* **extraction**: clips/s of the extraction (the same computation by the same model, warm from the bare pass, plus
  float16 conversion and writing chunks);
* **online epoch**: one training epoch of MoLT + the AVE head over the train clips, backbones run every batch;
* **cached epoch**: the same epoch with the taps read from the cache (backbones on the ``meta`` device).

Both epochs use the same plain PyTorch loop (forward, loss, backward, Adam step), batch size and order; the first
batch of each is a warm-up and not timed. Bare inference leaves its first batch out too; extraction, by the model
warm from that pass, counts every batch and its own set-up. The **FLOP limit** of the cached speed-up is counted with
``torch.utils.flop_counter`` on one clip: (frozen forward + side forward and backward) / side forward and backward,
the most a cached epoch can gain when the frozen forward is all it saves. Writes ``cache_speed.json`` and
``cache_speed.md``.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from molt.config import load_config
from molt.features import cached_splits, extract_splits
from molt.tasks.ave import PreparedAVE, ensure_prepared, generate_ave
from molt.model import build_model


def _epoch_seconds(model, loader, device: str) -> tuple[float, int]:
    """Seconds of one training epoch after a warm-up batch, and the number of timed batches."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=1e-4)
    model.train()
    timed, start = 0, None
    for position, batch in enumerate(loader):
        batch = {k: ([t.to(device) for t in v] if isinstance(v, list) and v and torch.is_tensor(v[0])
                     else v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        if position == 1:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
        output = model(batch)
        loss = model.task.loss(output.predictions, batch) + sum(output.method.aux_losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        timed += position >= 1
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    if start is None:
        raise ValueError("need at least two batches to time an epoch")
    return time.perf_counter() - start, timed


@torch.no_grad()
def _bare_clips_per_second(model, dataset, batch_size: int, device: str) -> float:
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    clips, start = 0, None
    for position, batch in enumerate(loader):
        if position == 1:
            start = time.perf_counter()
        model.compute_inputs({"frames": batch["frames"].to(device), "audio": batch["audio"].to(device)})
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        clips += len(batch["video_id"]) if position >= 1 else 0
    return clips / (time.perf_counter() - start)


def _flop_limit(model, cached_model, train_set, cached_set, device: str) -> dict:
    """FLOPs of one clip (``torch.utils.flop_counter``): frozen forward, and the side modules' forward + backward
    from the taps; the cached speed-up can be at most ``(frozen + side) / side``."""
    from torch.utils.flop_counter import FlopCounterMode

    clip = {k: v[None].to(device) if torch.is_tensor(v) else [v] for k, v in train_set[0].items()}
    with FlopCounterMode(display=False) as frozen, torch.no_grad():
        model.compute_inputs({"frames": clip["frames"], "audio": clip["audio"]})
    item = cached_set[0]
    batch = {k: ([t[None].to(device) for t in v] if isinstance(v, list) else v[None].to(device)
                 if torch.is_tensor(v) else [v]) for k, v in item.items()}
    cached_model.train()
    with FlopCounterMode(display=False) as side:
        output = cached_model(batch)
        loss = cached_model.task.loss(output.predictions, batch) + sum(output.method.aux_losses.values())
        loss.backward()
    frozen_flops, side_flops = frozen.get_total_flops(), side.get_total_flops()
    return {"frozen_gflops_per_clip": frozen_flops / 1e9, "side_gflops_per_clip": side_flops / 1e9,
            "speedup_limit": (frozen_flops + side_flops) / side_flops}


def _hardware(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()}, {torch.backends.cpu.get_cpu_capability()}"


def _preset_config(preset: str, batch_size: int | None = None, share_projections: str | None = None):
    """The ``ave_molt_{preset}`` config, with ``batch_size`` and ``share_projections`` when given."""
    overrides: dict = {"trainer": {"batch_size": batch_size}} if batch_size else {}
    if share_projections:
        overrides["method_config"] = {"share_projections": share_projections}
    return load_config(f"ave_molt_{preset}", overrides)


def measure(preset: str, workdir: Path, timed_batches: int, device: str, batch_size: int | None = None,
            share_projections: str | None = None) -> dict:
    config = _preset_config(preset, batch_size, share_projections)
    batch_size = config.trainer.batch_size
    data_dir = workdir / f"data_{batch_size}x{timed_batches + 1}"
    if not data_dir.exists():  # every video a training clip: one warm-up batch and the timed ones
        generate_ave(data_dir, num_videos=batch_size * (timed_batches + 1), seed=0, fps=4, show_progress=False,
                     split_fractions=(1.0, 0.0, 0.0))
    input_size = build_model(config, {"num_classes": 8}, backbones_on_meta=True).visual.input_size  # no weights
    prepared = ensure_prepared(data_dir, image_size=input_size[0], show_progress=False)
    train_set = PreparedAVE(prepared, "train")
    model = build_model(config, train_set.task_options()).to(device)
    bare = _bare_clips_per_second(model, train_set, batch_size, device)
    cache = workdir / f"cache_{preset}_{config.method_config.share_projections}"
    # the same model, warm from the bare pass, writes the cache: extraction and bare inference compared alike
    report = extract_splits(model, {"train": train_set}, cache, task=config.task, setting=config.setting,
                            prepared=prepared, batch_size=batch_size, device=device, show_progress=False)["train"]
    torch.manual_seed(0)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=False)
    online_s, batches = _epoch_seconds(model, loader, device)
    del model
    cached_model = build_model(config, train_set.task_options(), backbones_on_meta=True).to(device)
    cached_set = cached_splits(cached_model, {"train": train_set}, cache, task=config.task,
                               setting=config.setting, prepared=prepared)["train"]
    cached_s, _ = _epoch_seconds(cached_model, DataLoader(cached_set, batch_size=batch_size, shuffle=False), device)
    flops = _flop_limit(build_model(config, train_set.task_options()).to(device), cached_model, train_set,
                        cached_set, device)
    return {"preset": preset, "share_projections": config.method_config.share_projections,
            "device": device, "clips": len(train_set), "batch_size": batch_size, **flops,
            "timed_batches": batches, "bare_clips_per_s": bare, "extract_clips_per_s": report.clips_per_second,
            "extract_vs_bare": report.clips_per_second / bare, "online_epoch_s": online_s,
            "cached_epoch_s": cached_s, "speedup": online_s / cached_s,
            "cache_mb": report.bytes_written / 2 ** 20, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "hardware": _hardware(device),
            "speedup_of_limit": online_s / cached_s / flops["speedup_limit"]}


def markdown(rows: list[dict]) -> str:
    lines = ["| preset | W^Q/W^K/W^V | device (torch threads, torch) | train clips (timed batches x clips) | "
             "bare inference (clips/s) | "
             "extraction (clips/s) | extraction / bare | online epoch (s) | cached epoch (s) | cached speed-up | "
             "FLOP limit (frozen + side) / side | speed-up / limit | cache (MB, float16) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        machine = f"{row['device']} {row['hardware']} ({row['threads']}, {row['torch']})"
        lines.append(f"| {row['preset']} | {row['share_projections']} | {machine} | {row['clips']} "
                     f"({row['timed_batches']} x {row['batch_size']}) | {row['bare_clips_per_s']:.2f} | "
                     f"{row['extract_clips_per_s']:.2f} | {100 * row['extract_vs_bare']:.0f} % | "
                     f"{row['online_epoch_s']:.2f} | {row['cached_epoch_s']:.3f} | {row['speedup']:.0f}x | "
                     f"{row['speedup_limit']:.0f}x ({row['frozen_gflops_per_clip']:.0f} / "
                     f"{row['side_gflops_per_clip']:.1f} GFLOPs per clip) | {100 * row['speedup_of_limit']:.0f} % | "
                     f"{row['cache_mb']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,paper")
    parser.add_argument("--share-projections", default="", help="adapter or modality (default: each preset's own)")
    parser.add_argument("--timed-batches", type=int, default=8,
                        help="timed training batches per epoch (after one warm-up batch); at least 8 as in docs/")
    parser.add_argument("--batch-size", type=int, default=0, help="clips per batch (default: each preset's own)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="molt_cache_speed_") as tmp:
        for preset in [p for p in args.presets.split(",") if p]:
            rows.append(measure(preset, Path(tmp), args.timed_batches, args.device, args.batch_size or None,
                                args.share_projections or None))
            print(markdown(rows[-1:]), flush=True)
    table = markdown(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache_speed.json").write_text(json.dumps(rows, indent=2))
    (args.out / "cache_speed.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
