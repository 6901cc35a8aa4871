"""``molt`` command-line entry point.

Every verb imports its implementation lazily, so ``molt --help`` is instant and needs no Lightning.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Callable

__all__ = ["main", "build_parser"]

_logger = logging.getLogger("molt")


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _add_experiment_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="preset name (see `molt params --list`) or path to a YAML file "
                                         "(default: TASK_molt_BACKBONE, e.g. ave_molt_tiny)")
    parser.add_argument("--method", help="molt (default), mettle or lavish")
    parser.add_argument("--backbone", help="tiny | tiny-shared | paper | shared")
    parser.add_argument("--visual-weights", help="local Swin-V2 checkpoint file (timm or original format)")
    parser.add_argument("--audio-weights", help="local HTS-AT checkpoint, e.g. HTSAT_AudioSet_Saved_1.ckpt")
    parser.add_argument("--modalities", choices=["both", "audio", "visual"],
                        help="train on both senses (default) or one only (ablation)")
    parser.add_argument("--epochs", type=int, help="maximum number of epochs")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="learning rate of the adapters")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int, help="DataLoader worker processes")
    parser.add_argument("--accelerator", help="cpu | gpu | auto")
    parser.add_argument("--devices", help="number of devices")
    parser.add_argument("--strategy", help="auto | ddp (several devices; on CPU with --accelerator cpu it uses gloo)")
    parser.add_argument("--precision", help="32-true | bf16-mixed | 16-mixed")


def _experiment_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for key in ("backbone", "visual_weights", "audio_weights", "setting"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    if getattr(args, "modalities", None):
        overrides.setdefault("method_config", {})["modalities"] = args.modalities
    trainer = {name: getattr(args, attr) for attr, name in
               (("epochs", "max_epochs"), ("batch_size", "batch_size"), ("seed", "seed"), ("workers", "num_workers"),
                ("accelerator", "accelerator"), ("devices", "devices"), ("strategy", "strategy"),
                ("precision", "precision"))
               if getattr(args, attr, None) is not None}
    if trainer:
        if "devices" in trainer and str(trainer["devices"]).isdigit():
            trainer["devices"] = int(trainer["devices"])
        overrides["trainer"] = trainer
    if getattr(args, "lr", None) is not None:
        overrides["optim"] = {"lr": args.lr}
    return overrides


def _cmd_params(args: argparse.Namespace) -> int:
    from .config import preset_names
    from .params import parameter_table

    if args.list:
        print("\n".join(preset_names()))
        return 0
    names = preset_names() if args.all or not args.preset else [args.preset]
    print(parameter_table(names))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from .task_registry import get_task_spec

    spec = get_task_spec(args.task)
    options = {"image_size": args.image_size, "workers": args.workers}
    if args.setting is not None:
        options["setting"] = spec.check_setting(args.setting)
    summary = spec.synthesize(args.out, num_videos=args.videos, seed=args.seed, **options)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    if args.task == "ave":
        from .data.prepared import prepare_ave

        report = prepare_ave(args.root, args.out or f"{args.root.rstrip('/')}/prepared",
                             image_size=args.image_size or 192, workers=args.workers, limit=args.limit)
        print(report.summary())
        return 0
    from .task_registry import get_task_spec

    if args.out or args.limit:
        raise ValueError(f"--out and --limit are AVE-only; {args.task} data is prepared inside ROOT")
    spec = get_task_spec(args.task)
    prepared = spec.prepare(args.root, setting=spec.check_setting(args.setting), image_size=args.image_size,
                            workers=args.workers)
    print(f"prepared {args.task} data in {prepared}")
    return 0


def _default_preset(task: str, backbone: str | None) -> str:
    """Without ``--config``: the task's MoLT preset for the chosen backbone (``ave_molt_tiny`` by default)."""
    backbone = backbone or "tiny"
    return f"{task}_molt_{'tiny' if backbone.startswith('tiny') else backbone}"


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config, switch_method
    from .train import train

    config = load_config(args.config or _default_preset(args.task, args.backbone), _experiment_overrides(args))
    if args.method:
        config = switch_method(config, args.method)
    if config.task != args.task:
        raise ValueError(f"the config {args.config!r} is for task {config.task!r}, not {args.task!r}")
    result = train(config, data=args.data, out_dir=args.out, resume=args.resume, features=args.features)
    if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
        print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from .config import load_config, switch_method
    from .extract import extract

    overrides = _experiment_overrides(args)
    if args.blocks:
        overrides.setdefault("method_config", {}).update(blocks_visual=args.blocks, blocks_audio=args.blocks)
    config = load_config(args.config or _default_preset(args.task, args.backbone), overrides)
    if args.method:
        config = switch_method(config, args.method)
    splits = tuple(split for split in args.splits.split(",") if split)
    reports = extract(config, data=args.data, out_dir=args.out, splits=splits, dtype=args.dtype,
                      batch_size=args.batch_size or 8, chunk_size=args.chunk_size, device=args.device,
                      verify_existing=args.verify)
    for split, report in reports.items():
        print(f"{split}: {report.summary()}")
    print(f"train from it with: molt train {args.task} --data {args.data} --features {args.out}"
          + (f" --config {args.config}" if args.config else ""))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .train import evaluate

    result = evaluate(args.checkpoint, data=args.data, split=args.split, out_dir=args.out, task=args.task)
    table = result.pop("table")
    print(json.dumps(result, indent=2, default=str))
    print(table)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .train import predict_video

    result = predict_video(args.checkpoint, args.video)
    print(f"{result['video']}: {result['clip_category']} (p={result['clip_category_probability']:.2f})")
    for segment in result["segments"]:
        print(f"  {segment['second']:2d}-{segment['second'] + 1:2d} s  {segment['label']:<32s} "
              f"event p={segment['event_probability']:.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_efficiency

    methods = [m for m in args.methods.split(",") if m]
    table = run_efficiency(args.task, args.backbone, methods, args.batch_clips, args.out, device=args.device)
    print(table.markdown())
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import analysis
    from .data.prepared import ensure_prepared

    data = ensure_prepared(args.data)
    if args.what == "layers":
        result = analysis.analyze_layers(
            data, out_dir=args.out or Path(data) / "analysis", backbone_preset=args.backbone, visual=args.visual,
            audio=args.audio, visual_weights=args.visual_weights, audio_weights=args.audio_weights,
            clips=args.clips, split=args.split, early=args.early, late=args.late)
        print(result.summary())
        print(f"wrote {result.csv_path} and {result.png_path}")
        return 0
    if not args.checkpoint:
        raise ValueError("molt analyze tokens needs --checkpoint (an adapter directory or Lightning checkpoint)")
    payload = analysis.analyze_tokens(args.checkpoint, data, out_dir=args.out or Path(args.checkpoint) / "tokens",
                                      split=args.split or "test", clips=args.clips)
    print("\n".join(str(path) for path in payload["files"]))
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from .ablate import run_ablation

    out = args.out or f"ablations/{args.task}"
    result = run_ablation(args.task, args.table, data=args.data, out_dir=out, config=args.config,
                          backbone=args.backbone or "tiny", setting=args.setting,
                          overrides=_experiment_overrides(args))
    print(result.markdown())
    print(f"\nwrote {out}/tab{args.table}_{args.task}*.md and .json")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    table = run_demo(workdir=args.workdir, videos=args.videos, epochs=args.epochs, seed=args.seed)
    print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .task_registry import task_names

    tasks = task_names()
    parser = argparse.ArgumentParser(
        prog="molt", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="MoLT: memory-efficient audio-visual learning on frozen transformers.",
        epilog=_examples("molt demo", "molt synth ave --out data/synth --videos 200",
                         "molt train ave --data data/synth --backbone tiny", "molt params --all"))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    def verb(name: str, help_text: str, handler: Callable[[argparse.Namespace], int], *examples: str):
        sub = verbs.add_parser(name, help=help_text, description=help_text, epilog=_examples(*examples),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(handler=handler)
        return sub

    demo = verb("demo", "generate a small synthetic AVE set, train MoLT on tiny backbones, evaluate (CPU, minutes)",
                _cmd_demo, "molt demo", "molt demo --workdir /tmp/molt-demo --epochs 5")
    demo.add_argument("--workdir", help="where data and runs go (default: ~/.cache/molt/demo)")
    demo.add_argument("--videos", type=int, default=320)
    demo.add_argument("--epochs", type=int, default=15)
    demo.add_argument("--seed", type=int, default=0)

    synth = verb("synth", "write procedural audio-visual clips in a real dataset's on-disk layout", _cmd_synth,
                 "molt synth ave --out data/synth --videos 200 --seed 0")
    synth.add_argument("task", choices=tasks)
    synth.add_argument("--setting", help="task variant, e.g. s4 | ms3 for avs")
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--videos", type=int, default=200)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=64)
    synth.add_argument("--workers", type=int, default=2)

    prepare = verb("prepare", "decode a dataset's videos into the memory-mapped training format", _cmd_prepare,
                   "molt prepare ave --root /data/AVE --out /data/AVE/prepared --workers 8")
    prepare.add_argument("task", choices=tasks)
    prepare.add_argument("--setting", help="task variant, e.g. s4 | ms3 for avs")
    prepare.add_argument("--root", required=True, help="dataset root (annotation files, mp4 files)")
    prepare.add_argument("--out", help="output directory (default: ROOT/prepared)")
    prepare.add_argument("--image-size", type=int,
                         help="frame size (default: the generator's size for synthetic data, else 192)")
    prepare.add_argument("--workers", type=int, default=2)
    prepare.add_argument("--limit", type=int, help="only the first N clips (for a quick look)")

    train = verb("train", "train adapters and a task head on frozen backbones", _cmd_train,
                 "molt train ave --data data/synth --backbone tiny --epochs 10",
                 "molt train ave --data /data/AVE --config ave_molt_paper --audio-weights HTSAT_AudioSet_Saved_1.ckpt")
    train.add_argument("task", choices=tasks)
    train.add_argument("--setting", help="task variant, e.g. s4 | ms3 for avs (default: the preset's)")
    train.add_argument("--data", required=True, help="dataset root (prepared automatically) or prepared directory")
    train.add_argument("--out", default="runs", help="run directory root (default: runs/)")
    train.add_argument("--resume", help="checkpoint to resume from, or 'last' for the run's last checkpoint")
    train.add_argument("--features", help="feature cache written by `molt extract` for this setup: train without "
                                           "running (or loading) the frozen backbones")
    _add_experiment_options(train)

    extract = verb("extract", "run the frozen backbones once and cache the taps MoLT / Mettle read (resumable)",
                   _cmd_extract, "molt extract --task ave --data data/synth --out cache/ave_tiny",
                   "molt extract --task ave --data /data/AVE --config ave_molt_paper --blocks late --dtype float16 "
                   "--visual-weights swin.safetensors --audio-weights HTSAT_AudioSet_Saved_1.ckpt --out cache/ave")
    extract.add_argument("--task", required=True, choices=tasks)
    extract.add_argument("--data", required=True, help="dataset root (prepared automatically) or prepared directory")
    extract.add_argument("--out", required=True, help="cache directory (resumes what is already there)")
    extract.add_argument("--blocks", help="block selection of both backbones (default: the config's), e.g. late")
    extract.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    extract.add_argument("--splits", default="train,val,test", help="comma-separated splits to extract")
    extract.add_argument("--chunk-size", type=int, default=256, help="clips per chunk file (unit of resume)")
    extract.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    extract.add_argument("--verify", action="store_true", help="re-check the checksums of chunks already written")
    extract.add_argument("--setting", help="task variant, e.g. s4 | ms3 for avs")
    _add_experiment_options(extract)

    evaluate = verb("eval", "evaluate a trained checkpoint: metrics as JSON and pictures", _cmd_eval,
                    "molt eval ave --data data/synth --checkpoint runs/ave_molt_tiny/version_0/adapters/best")
    evaluate.add_argument("task", choices=tasks)
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--checkpoint", required=True, help="adapter directory or Lightning checkpoint")
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"])
    evaluate.add_argument("--out", help="where metrics.json and PNGs go (default: next to the checkpoint)")

    predict = verb("predict", "per-second event predictions for one video file with a trained checkpoint",
                   _cmd_predict, "molt predict ave --checkpoint runs/ave_molt_tiny/version_0/adapters/best "
                   "--video clip.mp4")
    predict.add_argument("task", choices=["ave"])
    predict.add_argument("--checkpoint", required=True, help="adapter directory or Lightning checkpoint")
    predict.add_argument("--video", required=True, help="a video file with an audio track (mp4, mkv, ...)")
    predict.add_argument("--json", help="also write the predictions to this JSON file")

    bench = verb("bench", "efficiency table: one training step of each method, each in its own process", _cmd_bench,
                 "molt bench efficiency --task ave --backbone tiny --methods molt,mettle,lavish",
                 "molt bench efficiency --backbone paper --out benchmarks/results/efficiency_paper")
    bench.add_argument("what", choices=["efficiency"])
    bench.add_argument("--task", default="ave", choices=["ave"])
    bench.add_argument("--backbone", default="tiny", choices=["tiny", "tiny-shared", "paper", "shared"])
    bench.add_argument("--methods", default="molt,mettle,lavish", help="comma-separated: molt, mettle, lavish")
    bench.add_argument("--batch-clips", type=int, default=1, help="clips per training step (10 segments each)")
    bench.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    bench.add_argument("--out", help="directory for efficiency.json, efficiency.md and efficiency.png")

    analyze = verb("analyze", "where to adapt: per-block input/output similarity (Fig. 4); token maps and fusion "
                   "weights of a trained model (Fig. 5)", _cmd_analyze,
                   "molt analyze layers --data data/synth --backbone paper --visual-weights swin.safetensors "
                   "--audio-weights HTSAT_AudioSet_Saved_1.ckpt",
                   "molt analyze tokens --data data/synth --checkpoint runs/ave_molt_tiny/version_0/adapters/best")
    analyze.add_argument("what", choices=["layers", "tokens"])
    analyze.add_argument("--data", required=True, help="AVE root or prepared directory")
    analyze.add_argument("--out", help="output directory")
    analyze.add_argument("--checkpoint", help="trained model (tokens)")
    analyze.add_argument("--backbone", default="tiny", help="backbone preset (layers): tiny | paper | shared | ...")
    analyze.add_argument("--visual", help="any timm model name instead of the preset's visual backbone, or 'none'")
    analyze.add_argument("--audio", help="an HTS-AT preset instead of the preset's audio backbone, or 'none'")
    analyze.add_argument("--visual-weights")
    analyze.add_argument("--audio-weights")
    analyze.add_argument("--clips", type=int, default=16, help="clips to sample")
    analyze.add_argument("--split", help="split to sample (default: all for layers, test for tokens)")
    analyze.add_argument("--early", type=int, help="fix the number of early blocks instead of reading the curve")
    analyze.add_argument("--late", type=int, default=2, help="number of late blocks (paper: 2)")

    ablate = verb("ablate", "train the variants of one of the paper's ablation tables (4: adaptation position, "
                  "5: tokens, 6: adapters, 7: fusion, 8: TOR) and write it as markdown", _cmd_ablate,
                  "molt ablate --task ave --table 7 --data data/synth --epochs 10",
                  "molt ablate --task avs --setting s4 --table 5 --data data/avs_synth --out ablations/avs")
    ablate.add_argument("--task", required=True, choices=tasks)
    ablate.add_argument("--table", required=True, type=int, choices=[4, 5, 6, 7, 8])
    ablate.add_argument("--data", required=True, help="dataset root (prepared automatically) or prepared directory")
    ablate.add_argument("--setting", help="task variant, e.g. s4 | ms3 for avs")
    ablate.add_argument("--out", help="output directory (default: ablations/TASK)")
    _add_experiment_options(ablate)

    params = verb("params", "trainable / total parameters of config presets at their real scale (no forward pass)",
                  _cmd_params, "molt params ave_molt_paper", "molt params --all", "molt params --list")
    params.add_argument("preset", nargs="?")
    params.add_argument("--all", action="store_true", help="one table for every preset")
    params.add_argument("--list", action="store_true", help="list preset names")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, NotImplementedError) as error:
        _logger.error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
