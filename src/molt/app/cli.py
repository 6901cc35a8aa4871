"""``molt`` command-line entry point: ``molt VERB TASK --data DIR ...`` for every task-specific verb.

Every verb imports its implementation lazily, so ``molt --help`` is instant; only ``molt train``, ``molt ablate`` and
``molt demo`` import Lightning. Task names and everything task-specific (settings, presets) come from the task
registry (:mod:`molt.tasks`). Errors a user can fix (bad file, bad key, unknown name, a full disk, a read-only
directory) are one line on stderr and exit code 2. The verbs that write data (synth, prepare, extract) stopped by
SIGTERM or SIGINT clean up, say in one line what running them again does, and exit with 128 + the signal's number.
A training that stops before its end says in one line what it saved and how to continue, with its own exit code:
3 non-finite loss, 4 no space left on the device, 128 + N stopped by signal N (143 SIGTERM, 130 SIGINT).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

__all__ = ["main", "build_parser"]

_logger = logging.getLogger("molt")

# the library's names, spelled out so that parsing the command line imports no torch (a test keeps them equal)
_BACKBONES = ("tiny", "tiny-shared", "paper", "shared")  # molt.config.BACKBONE_PRESETS
_BACKBONE_DTYPES = ("float32", "bfloat16", "float16")  # molt.config.BACKBONE_DTYPES
_SHARED_AUDIO_FRONTENDS = ("htsat", "kaldi_fbank")    # molt.backbones.shared.SHARED_AUDIO_FRONTENDS
_METHODS = ("molt", "mettle", "lavish", "dgsct", "avmoe")  # molt.methods.method_names()
_HEADS = ("common", "official")  # molt.methods.inblock.HEAD_KINDS
# the values of Lightning's Trainer that the command line offers (a YAML config may name others)
_ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
_STRATEGIES = ("auto", "ddp", "ddp_spawn", "fsdp")
_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")


class _Parser(argparse.ArgumentParser):
    """Errors of the command line itself (a missing or unknown flag, a bad value) in one line, exit code 2, like
    every other bad input; ``--help`` shows the usage."""

    def error(self, message: str):
        import difflib
        import re

        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if wrong:
            close = difflib.get_close_matches(wrong[1], re.findall(r"'([^']*)'", wrong[2]), n=1)
            message += f"; did you mean {close[0]!r}?" if close else ""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and shows every non-empty default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" not in text and "(default:" not in text and action.option_strings
                and action.default is not None and action.default is not False
                and action.default is not argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _deprecated(old: str, new: str) -> None:
    _logger.warning("deprecated: %s; use %s (the old spelling goes away in the next release)", old, new)


# ------------------------------------------------------------------------------------------------------------------
# shared options

def _add_task(parser: argparse.ArgumentParser, tasks: list[str], *, optional: bool = False) -> None:
    """The positional ``TASK`` (``optional``: only where leaving it out has a meaning, e.g. ``analyze tokens``)."""
    parser.add_argument("task", nargs="?" if optional else None, choices=tasks, metavar="TASK",
                        help=f"the task: {', '.join(tasks)}")


def _add_data(parser: argparse.ArgumentParser, *, what: str = "dataset root (prepared on first use) or prepared "
                                                               "directory") -> None:
    parser.add_argument("--data", required=True, help=what)


# old spellings, rewritten before parsing, each with a deprecation warning (they go away in the next release)
_VALUE_SPELLINGS = {("*", "--task"): None, ("prepare", "--root"): "--data", ("extract", "--device"): "--accelerator",
                    ("bench", "--device"): "--accelerator"}
_TASK_AFTER_WHAT = {"bench": "ave"}   # molt bench WHAT TASK; without a task it meant ave


def _modern_spelling(argv: list[str], tasks: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """``argv`` with the old spellings of the previous release replaced, and ``(old, new)`` for each: ``--task NAME``
    (now the positional TASK), ``prepare --root`` (``--data``), ``extract/bench --device cpu|cuda``
    (``--accelerator cpu|gpu``), ``predict --overlay-video yes|no`` (a switch), ``params --all`` (the default),
    ``bench WHAT`` without a task (ave)."""
    verb_at = next((i for i, token in enumerate(argv) if not token.startswith("-")), None)
    if verb_at is None:
        return argv, []
    verb, rest, kept, task, notes = argv[verb_at], argv[verb_at + 1:], [], None, []
    i = 0
    while i < len(rest):
        name, equals, value = rest[i].partition("=")
        key = next((k for k in ((verb, name), ("*", name)) if k in _VALUE_SPELLINGS), None)
        if key is not None and (equals or i + 1 < len(rest)):
            value, i = (value, i + 1) if equals else (rest[i + 1], i + 2)
            new = _VALUE_SPELLINGS[key]
            if new is None:
                task = value
            else:
                modern = ("gpu" if value.startswith("cuda") else value) if new == "--accelerator" else value
                notes.append((f"molt {verb} {name} {value}", f"molt {verb} {new} {modern}"))
                kept += [new, modern]
            continue
        if verb == "predict" and name == "--overlay-video" and (equals or rest[i + 1:i + 2] in (["yes"], ["no"])):
            value, i = (value, i + 1) if equals else (rest[i + 1], i + 2)
            notes.append((f"molt predict --overlay-video {value}", "molt predict --overlay-video (a switch)"))
            kept += ["--overlay-video"] if value == "yes" else []
            continue
        if verb == "params" and rest[i] == "--all":
            notes.append(("molt params --all", "molt params (every preset is the default)"))
            i += 1
            continue
        kept.append(rest[i])
        i += 1
    positionals = [token for token in kept if not token.startswith("-")]
    where = 1 if verb in ("bench", "analyze") else 0      # molt bench WHAT TASK, molt analyze WHAT TASK
    given = next((token for token in positionals[where:] if token in tasks), None)     # options' values too
    if task is not None:
        shown = f"{verb} {positionals[0]}" if where and positionals else verb
        notes.append((f"molt {shown} --task {task}", f"molt {shown} {task}"))
    elif verb in _TASK_AFTER_WHAT and positionals and given is None:
        task = _TASK_AFTER_WHAT[verb]
        notes.append((f"molt {verb} {positionals[0]} without a task", f"molt {verb} {positionals[0]} {task}"))
    if task is not None and given is not None and given != task:
        raise ValueError(f"molt {verb}: TASK {given!r} and --task {task!r} disagree; give the task once")
    if task is not None and given is None:
        kept.insert(kept.index(positionals[0]) + 1 if where and positionals else 0, task)
    return [*argv[:verb_at + 1], *kept], notes


def _analyzed_task(args: argparse.Namespace) -> str:
    """The task of ``molt analyze layers``: TASK, or ave (deprecated) when none is given."""
    if args.task is None:
        _deprecated("molt analyze layers without a task", "molt analyze layers ave")
        return "ave"
    return args.task


def _add_setting(parser: argparse.ArgumentParser) -> None:
    from ..tasks import registered_tasks

    variants = "; ".join(f"{spec.name}: {' | '.join(spec.settings)}" for spec in registered_tasks() if spec.settings)
    parser.add_argument("--setting", help=f"task variant ({variants}; default: the task's or the preset's)")


def _task_option_owners(kind: str) -> dict[str, list]:
    """Keyword of each :class:`~molt.tasks.spec.TaskOption` of ``kind`` (``prepare_options`` or
    ``predict_options``) -> ``(task name, option)`` of the tasks that have it."""
    from ..tasks import registered_tasks

    owners: dict[str, list] = {}
    for spec in registered_tasks():
        for option in getattr(spec, kind):
            owners.setdefault(option.name, []).append((spec.name, option))
    return owners


def _add_task_options(parser: argparse.ArgumentParser, kind: str, help_task: str | None = None) -> None:
    """One flag per task option of any task, its help naming the tasks that have it; with ``help_task`` (``molt
    VERB TASK --help``) the other tasks' flags are left out of the help."""
    for name, owners in _task_option_owners(kind).items():
        option = owners[0][1]
        tasks = ", ".join(task for task, _ in owners)
        default = f" (default: {option.default})" if option.default is not None else ""
        shown = help_task is None or help_task in {task for task, _ in owners}
        text = f"{tasks}{' (required)' if option.required else ''}: {option.help}{default}"
        kind_of_flag = dict(action="store_const", const=True) if option.switch else dict(choices=option.choices)
        parser.add_argument(option.flag, dest=name, default=None, help=text if shown else argparse.SUPPRESS,
                            **kind_of_flag)


def _task_options(args: argparse.Namespace, spec, kind: str) -> dict[str, str]:
    """The task options given on the command line; one that ``spec``'s task does not have is refused, one it
    requires must be there."""
    given = {}
    for name, owners in _task_option_owners(kind).items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if spec.name not in {task for task, _ in owners}:
            raise ValueError(f"{owners[0][1].flag} applies to {', '.join(task for task, _ in owners)} only, not to "
                             f"{spec.name}; drop it")
        given[name] = value
    for option in getattr(spec, kind):
        if option.required and option.name not in given:
            raise ValueError(f"{spec.name} needs {option.flag}: {option.help}")
    return given


def _add_model_options(parser: argparse.ArgumentParser, *, method: bool = True) -> None:
    """What builds the model: preset, method (unless the verb decides it), backbones, weights, modalities."""
    group = parser.add_argument_group("model")
    group.add_argument("--config", help="preset name (see `molt params --list`) or path to a YAML file "
                                        "(default: the task's MoLT preset for --backbone, e.g. ave_molt_tiny)")
    if method:
        group.add_argument("--method", choices=_METHODS,
                           help="method on the frozen backbones (default: the preset's, molt)")
        group.add_argument("--head", choices=_HEADS,
                           help="lavish, dgsct, avmoe: our common task head behind a read-out (default, the same for "
                                "every method) or the method's own head from its repository (method_config.head)")
    group.add_argument("--backbone", choices=_BACKBONES, help="a named backbone pair (default: the preset's, tiny)")
    _add_backbone_names(group)
    group.add_argument("--backbone-dtype", choices=_BACKBONE_DTYPES,
                       help="store and run the frozen backbones in this dtype (adapters and head stay float32; "
                            "default: the preset's, float32)")
    group.add_argument("--shared-audio-frontend", choices=_SHARED_AUDIO_FRONTENDS,
                       help="audio image of the shared backbone presets: HTS-AT log-mel or LAVisH's Kaldi fbank "
                            "(default: the preset's, htsat)")
    group.add_argument("--modalities", choices=["both", "audio", "visual"],
                       help="train on both senses (default) or one only (ablation)")
    _add_trust(group)


def _add_backbone_names(group) -> None:
    group.add_argument("--visual-backbone", metavar="NAME",
                       help="visual encoder instead of the pair's: swinv2[:NAME] or timm:ANY_TIMM_MODEL (see molt "
                            "backbones); with timm: or hf: names the default preset is the task's paper one")
    group.add_argument("--audio-backbone", metavar="NAME",
                       help="audio encoder instead of the pair's: htsat[:NAME], shared, swinv2[:NAME], hf:HUB_ID or "
                            "hf:/path/to/saved/folder")
    group.add_argument("--visual-weights", help="local weights of the visual encoder: a checkpoint file (timm: also a "
                                                "snapshot folder), or 'random' (default: timm: published weights "
                                                "from the Hugging Face cache, swinv2 random)")
    group.add_argument("--audio-weights", help="local weights of the audio encoder (HTS-AT: e.g. "
                                               "HTSAT_AudioSet_Saved_1.ckpt), or 'random'")


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum`` (argparse names the flag and exits with 2)."""
    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return whole_number


def _add_accelerator(parser, help_text: str, default: str | None = "auto") -> None:
    """``--accelerator``, the same flag for training, extraction and benchmarks."""
    parser.add_argument("--accelerator", choices=_ACCELERATORS, default=default, help=help_text)


def _torch_device(accelerator: str | None) -> str | None:
    """The torch device of an ``--accelerator`` choice (``None``: a GPU when one is visible, else the CPU)."""
    return {"cpu": "cpu", "gpu": "cuda", "cuda": "cuda", "mps": "mps"}.get(accelerator or "auto")


def _add_recorded_weights(parser) -> None:
    """``--visual-weights`` / ``--audio-weights`` of the verbs that rebuild a trained model: they replace the weights
    files its checkpoint records (which are opened only inside the current directory, or when their SHA-256 is the
    recorded one)."""
    for side in ("visual", "audio"):
        parser.add_argument(f"--{side}-weights", metavar="PATH",
                            help=f"the {side} encoder's weights the model was trained with (an hf: encoder: its "
                                 f"folder), instead of what its checkpoint records (needed when that lies elsewhere; "
                                 f"the model card says where to get it; the adapters check the SHA-256)")


def _add_trust(parser) -> None:
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="read a weights file that pickles Python objects beyond tensors and the safe types of "
                             "Lightning checkpoints (runs what it pickles: only for files from a trusted source)")


def _add_checkpoint(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--checkpoint`` (a folder, a Hugging Face repository id or a .ckpt file), ``--revision`` and the backbones'
    weights files of an adapters repository."""
    parser.add_argument("--checkpoint", required=required,
                        help="adapter directory, Hugging Face repository id of one (org/name or org/name@revision; "
                             "downloaded into the Hugging Face cache, HF_HUB_OFFLINE=1 reads the cache only) or "
                             "training checkpoint (.ckpt)")
    parser.add_argument("--revision", help="branch, tag or commit of a repository id (default: main)")
    _add_recorded_weights(parser)


def _loading(args: argparse.Namespace) -> dict[str, Any]:
    return {"revision": args.revision, "visual_weights": args.visual_weights, "audio_weights": args.audio_weights}


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    """How to train: epochs, batch, optimiser, devices, precision."""
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, help="maximum number of epochs (default: the preset's)")
    group.add_argument("--batch-size", type=int, help="clips per batch (default: the preset's)")
    group.add_argument("--lr", type=float, help="learning rate of the adapters (default: the preset's)")
    group.add_argument("--seed", type=int, help="seed of initialisation, shuffling and dropout (default: 0)")
    group.add_argument("--workers", type=int, help="DataLoader worker processes (default: 0)")
    _add_accelerator(group, "where training runs (default: the preset's, auto: a GPU when one is visible)",
                     default=None)
    group.add_argument("--devices", help="devices per machine: a count, auto, or GPU ids such as 0,2 (default: 1)")
    group.add_argument("--strategy", choices=_STRATEGIES,
                       help="several devices: ddp (on CPU with --accelerator cpu it uses gloo) (default: auto)")
    group.add_argument("--precision", choices=_PRECISIONS, help="numeric precision of training (default: 32-true)")
    group.add_argument("--checkpoint-every-n-steps", type=int, metavar="N",
                       help="also rewrite last.ckpt every N training steps, so --resume last continues mid-epoch "
                            "(default: at the end of every epoch only)")
    group.add_argument("--progress-every-n-steps", type=int, metavar="N",
                       help="when the output is not a terminal (a batch log, a pipe), also log a progress line every "
                            "N training steps (default: one line per epoch)")


def _experiment_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for key in ("backbone", "visual_weights", "audio_weights", "setting", "backbone_dtype", "shared_audio_frontend"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    if getattr(args, "modalities", None):
        overrides.setdefault("method_config", {})["modalities"] = args.modalities
    trainer = {name: getattr(args, attr) for attr, name in
               (("epochs", "max_epochs"), ("batch_size", "batch_size"), ("seed", "seed"), ("workers", "num_workers"),
                ("accelerator", "accelerator"), ("devices", "devices"), ("strategy", "strategy"),
                ("precision", "precision"), ("checkpoint_every_n_steps", "checkpoint_every_n_steps"),
                ("progress_every_n_steps", "progress_every_n_steps"))
               if getattr(args, attr, None) is not None}
    if trainer:
        if "devices" in trainer and str(trainer["devices"]).isdigit():
            trainer["devices"] = int(trainer["devices"])
        overrides["trainer"] = trainer
    if getattr(args, "lr", None) is not None:
        overrides["optim"] = {"lr": args.lr}
    _check_flag_values(overrides)
    return overrides


#: the flags of ``_add_training_options`` that set a number of the experiment config: (section, key) -> flag
_NUMBER_FLAGS = {("trainer", "max_epochs"): "--epochs", ("trainer", "batch_size"): "--batch-size",
                 ("trainer", "seed"): "--seed", ("trainer", "num_workers"): "--workers",
                 ("trainer", "devices"): "--devices", ("optim", "lr"): "--lr",
                 ("trainer", "checkpoint_every_n_steps"): "--checkpoint-every-n-steps",
                 ("trainer", "progress_every_n_steps"): "--progress-every-n-steps"}


def _check_flag_values(overrides: dict[str, Any]) -> None:
    """Refuse a number given on the command line outside the range its config field declares, naming the flag
    (the same check as for a YAML file: :func:`~molt.typed_config.check_field_values`)."""
    from ..config import OptimConfig, TrainerConfig, check_devices
    from ..typed_config import check_field_values

    kinds = {"trainer": TrainerConfig, "optim": OptimConfig}
    for (section, key), flag in _NUMBER_FLAGS.items():
        value = overrides.get(section, {}).get(key)
        if value is None:
            continue
        fix = f"pass {flag} with a value in that range"
        check_field_values(kinds[section], {key: value}, flag, fix=fix)
        if key == "devices":
            try:
                check_devices(value)
            except ValueError as error:
                raise ValueError(f"{flag}: {error}; {fix}") from None


def _experiment(args: argparse.Namespace, task: str, overrides: dict[str, Any] | None = None):
    """The experiment config of a verb: ``--config`` (or the task's preset for ``--backbone``), the overrides of
    the command line, and ``--method``."""
    from ..backbones.registry import parse_backbone_name, with_backbone_sides
    from ..config import load_config, switch_method, with_head
    from ..tasks import get_task

    sides = {side: getattr(args, f"{side}_backbone", None) for side in ("visual", "audio")}
    real = any(name and parse_backbone_name(name, side).kind in ("timm", "hf") for side, name in sides.items())
    preset = args.config or get_task(task).default_preset(args.backbone or ("paper" if real else None))
    config = load_config(preset, {**_experiment_overrides(args), **(overrides or {})})
    if any(sides.values()):
        config = dataclasses.replace(config, backbone=with_backbone_sides(config.backbone, **sides))
    if args.method:
        config = switch_method(config, args.method)
    if getattr(args, "head", None):
        config = with_head(config, args.head)
    if config.task != task:
        raise ValueError(f"the config {preset!r} is for task {config.task!r}, not {task!r}")
    return config


def _is_main_process() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


# ------------------------------------------------------------------------------------------------------------------
# verbs

def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    print(run_demo(workdir=args.workdir, videos=args.videos, epochs=args.epochs, seed=args.seed,
                   enable_progress_bar=not args.quiet))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from ..tasks import get_task

    spec = get_task(args.task)
    options = {"image_size": args.image_size, "workers": args.workers, "overwrite": args.overwrite}
    if args.setting is not None:
        options["setting"] = spec.check_setting(args.setting)
    try:
        summary = spec.synthesize(args.out, num_videos=args.videos, seed=args.seed, show_progress=not args.quiet,
                                  **options)
    except OSError as error:  # a full disk or a read-only place: one line (a rerun completes the set)
        from ..data.files import storage_error

        converted = storage_error(error, args.out, what=f"molt synth could not write into {args.out}",
                                  fix="choose another --out (or free space), then run the command again")
        if converted is None:
            raise
        raise converted from None
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from ..tasks import get_task

    spec = get_task(args.task)
    prepared = spec.open_prepared(args.data, args.setting, image_size=args.image_size,
                                  workers=args.workers, out_dir=args.out, limit=args.limit, force=True,
                                  overwrite=args.overwrite, show_progress=not args.quiet,
                                  **_task_options(args, spec, "prepare_options"))
    print(f"prepared {args.task} data in {prepared}")
    return 0


def _resume_command(argv: list[str]) -> str:
    """The command line that continues a stopped ``molt train``: the same arguments with ``--resume last``."""
    import shlex

    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            kept.append(arg)
    return shlex.join(["molt", *kept, "--resume", "last"])


def _cmd_train(args: argparse.Namespace) -> int:
    """Exit status: 0 finished, 2 bad input, 3 non-finite loss, 4 no space left on the device, 128 + N stopped by
    signal N (130 SIGINT, 143 SIGTERM); every status but 0 comes with one line saying what was saved and what next."""
    import errno

    from .train import EXIT_NO_SPACE, TrainingStopped, train

    try:
        result = train(_experiment(args, args.task), data=args.data, out_dir=args.out, resume=args.resume,
                       features=args.features, trust_checkpoint=args.trust_checkpoint,
                       enable_progress_bar=not args.quiet)
    except TrainingStopped as error:
        if _is_main_process():
            resume = f"; resume with: {_resume_command(args.argv)}" if error.resumable else ""
            _logger.error("%s%s", str(error).replace("\n", " "), resume)
        return error.exit_code
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        if _is_main_process():
            _logger.error("no space left on the device writing %s: free space there (or use another --out) and "
                          "resume with: %s", error.filename or args.out, _resume_command(args.argv))
        return EXIT_NO_SPACE
    if _is_main_process():
        print(json.dumps(result, indent=2, default=str) if args.json else _train_summary(args.task, result))
    return 0


def _train_summary(task: str, result: dict[str, Any]) -> str:
    """The few lines ``molt train`` prints: where the run is, its figures, and where the rest is."""
    from ..tasks import get_task

    spec = get_task(task)
    metric = result["monitor"].removeprefix("val/")
    best = result.get(f"best_val_{metric}")
    figures = ", ".join(f"{title} {result['test'][key]:.4f}" for title, key in spec.metric_columns
                        if key in result["test"])
    run = Path(result["run_dir"])
    rows = [("run", f"{run} (tensorboard --logdir {run.parent.parent})"),
            ("adapters", result["adapters"]),
            (f"best val {metric}", "-" if best is None else f"{best:.4f}"),
            ("test", figures),
            ("params", f"{result['trainable_params']:,} trainable of {result['total_params']:,} "
                       f"({100 * result['trainable_params'] / result['total_params']:.1f} %)"),
            ("time, memory", f"{result['wall_time_s']:.0f} s, peak {result['peak_rss_mb']:.0f} MB"),
            ("everything", f"{run / 'result.json'} (or molt train --json)")]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _cmd_extract(args: argparse.Namespace) -> int:
    from .extract import extract

    task = args.task
    overrides = {"method_config": {"blocks_visual": args.blocks, "blocks_audio": args.blocks}} if args.blocks else {}
    config = _experiment(args, task, overrides)
    splits = tuple(split for split in args.splits.split(",") if split)
    reports = extract(config, data=args.data, out_dir=args.out, splits=splits, dtype=args.dtype,
                      batch_size=args.batch_size, chunk_size=args.chunk_size, device=_torch_device(args.accelerator),
                      verify_existing=args.verify, trust_checkpoint=args.trust_checkpoint, show_progress=not args.quiet,
                      devices=args.devices, num_nodes=args.num_nodes, node_rank=args.node_rank)
    for split, report in reports.items():
        print(f"{split}: {report.summary() if hasattr(report, 'summary') else json.dumps(report)}")
    print(f"train from it with: molt train {task} --data {args.data} --features {args.out}"
          + (f" --config {args.config}" if args.config else ""))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    result = evaluate(args.checkpoint, data=args.data, split=args.split, out_dir=args.out, task=args.task,
                      batch_size=args.batch_size, test_file=args.test_json, trust_checkpoint=args.trust_checkpoint,
                      accelerator=args.accelerator, **_loading(args))
    table = result.pop("table")
    print(json.dumps(result, indent=2, default=str))
    print(table)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .evaluate import predict_with_checkpoint

    from ..tasks import get_task

    options = _task_options(args, get_task(args.task), "predict_options")
    if args.json is not None and os.path.isdir(args.json):
        raise ValueError(f"--json {args.json}: a directory of that name exists; name a file (written as JSON)")
    result = predict_with_checkpoint(args.checkpoint, args.video, task=args.task, out_dir=args.out,
                                     trust_checkpoint=args.trust_checkpoint, accelerator=args.accelerator,
                                     **_loading(args), **options)
    print("\n".join(result.get("summary", [])) or json.dumps(result, indent=2, default=str))
    print("wrote " + ", ".join(result["files"]))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_efficiency, run_worker

    task = args.task
    from ..backbones.registry import with_backbone_sides

    options = dict(batch_clips=args.batch_clips, device=_torch_device(args.accelerator),
                   backbone_dtype=args.backbone_dtype, setting=args.setting, steps=args.steps, warmup=args.warmup,
                   visual_weights=args.visual_weights, audio_weights=args.audio_weights)
    backbone = json.loads(args.backbone_json) if args.backbone_json else args.backbone
    backbone = with_backbone_sides(backbone, visual=args.visual_backbone, audio=args.audio_backbone)
    if args.what == "worker":  # not in the help: the process run_efficiency starts for each method
        if not (args.method and args.result):
            raise ValueError("molt bench worker needs --method and --result (it is started by molt bench efficiency)")
        run_worker(args.result, task, backbone, args.method, **options)
        return 0
    table = run_efficiency(task, backbone, [m for m in args.methods.split(",") if m], out_dir=args.out,
                           **options)
    print(table.markdown())
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis import analyze_layers, analyze_tokens
    from .evaluate import checkpoint_label

    if args.what == "layers":
        task = _analyzed_task(args)
        out = args.out or Path("analysis") / f"layers_{task}"
        result = analyze_layers(
            args.data, out_dir=out, backbone=args.backbone, visual=args.visual_backbone, audio=args.audio_backbone,
            visual_weights=args.visual_weights, audio_weights=args.audio_weights, clips=args.clips,
            split=args.split, early=args.early, late=args.late, task=task, setting=args.setting,
            trust_checkpoint=args.trust_checkpoint)
        print(result.summary())
        print(f"wrote {result.csv_path} and {result.png_path}")
        return 0
    if not args.checkpoint:
        raise ValueError("molt analyze tokens needs --checkpoint (an adapter directory or training checkpoint)")
    task = args.task    # None: the checkpoint's own task
    out = args.out or Path("analysis") / f"tokens_{checkpoint_label(args.checkpoint)}"
    payload = analyze_tokens(args.checkpoint, args.data, out_dir=out,
                             split=args.split or "test", clips=args.clips, task=task,
                             trust_checkpoint=args.trust_checkpoint, visual_weights=args.visual_weights,
                             audio_weights=args.audio_weights)
    print("\n".join(str(path) for path in payload["files"]))
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from .ablate import run_ablation

    task = args.task
    out = args.out or f"ablations/{task}"
    result = run_ablation(task, args.table, data=args.data, out_dir=out, config=args.config,
                          backbone=args.backbone or "tiny", setting=args.setting,
                          overrides=_experiment_overrides(args), trust_checkpoint=args.trust_checkpoint)
    print(result.markdown())
    print(f"\nwrote {out}/tab{args.table}_{task}*.md and .json")
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    from ..config import preset_names
    from .params import parameter_table, resolve_preset_names

    if args.list:
        print("\n".join(preset_names()))
        return 0
    if args.heads:
        from .params import head_count_table
        from ..tasks import task_names

        if args.name not in task_names():
            raise ValueError(f"molt params --heads needs a task ({', '.join(task_names())}), got {args.name!r}")
        for backbone in ("paper", "shared"):
            table = head_count_table(args.name, backbone, setting=args.setting)
            setting = f", setting {args.setting}" if args.setting else ""
            print(f"{args.name}, backbone preset {backbone}{setting}:\n{table}\n")
        return 0
    names: list[Any] = resolve_preset_names(args.name)
    sides = {"visual": args.visual_backbone, "audio": args.audio_backbone}
    if any(sides.values()):
        from ..backbones.registry import with_backbone_sides
        from ..config import load_config
        from ..tasks import get_task, task_names

        if args.name in task_names():   # the task's paper preset, on these encoders
            names = [get_task(args.name).default_preset("paper")]
        configs = [load_config(name) for name in names]
        names = [dataclasses.replace(c, backbone=with_backbone_sides(c.backbone, **sides)) for c in configs]
    print(parameter_table(names))
    return 0


def _cmd_app(args: argparse.Namespace) -> int:
    from .web import require_gradio, serve

    require_gradio()
    _logger.info("molt app on http://%s:%d (Ctrl+C stops it)", args.host, args.port)
    serve(args.checkpoint, task=args.task, host=args.host, port=args.port, clips=args.clips,
          trust_checkpoint=args.trust_checkpoint, visual_weights=args.visual_weights,
          audio_weights=args.audio_weights)
    return 0


def _cmd_backbones(args: argparse.Namespace) -> int:
    from ..backbones.registry import describe_backbone_names

    print(describe_backbone_names())
    return 0


# ------------------------------------------------------------------------------------------------------------------
# parser

def build_parser(help_task: str | None = None) -> argparse.ArgumentParser:
    """The ``molt`` parser; ``help_task`` leaves other tasks' flags out of the help (``molt predict avs --help``)."""
    from ..tasks import registered_tasks, task_names

    tasks = task_names()
    parser = _Parser(
        prog="molt", formatter_class=_HelpFormatter,
        description="MoLT: memory-efficient audio-visual learning on frozen transformers. Task-specific verbs take "
                    f"the task first: molt VERB TASK --data DIR ... (tasks: {', '.join(tasks)}).",
        epilog=_examples("molt demo", "molt synth ave --out data/synth --videos 200",
                         "molt train ave --data data/synth --backbone tiny", "molt eval ave --data data/synth "
                         "--checkpoint runs/ave_molt_tiny/version_0/adapters/best", "molt params --all"))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="for scripts: warnings and errors only, no progress bars (results are still printed)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    def verb(name: str, help_text: str, handler: Callable[[argparse.Namespace], int], *examples: str):
        if help_task is not None:     # molt VERB TASK --help: that task's examples, where the verb has some
            examples = tuple(e for e in examples if f" {help_task} " in f"{e} ") or examples
        sub = verbs.add_parser(name, help=help_text, description=help_text, epilog=_examples(*examples),
                               formatter_class=_HelpFormatter)
        sub.set_defaults(handler=handler)
        return sub

    demo = verb("demo", "generate a small synthetic AVE set, train MoLT on tiny backbones, evaluate (CPU, minutes)",
                _cmd_demo, "molt demo", "molt demo --workdir /tmp/molt-demo --epochs 5")
    demo.add_argument("--workdir", help="where the data, the run and demo.json go (default: molt-demo in the "
                                        "current directory)")
    demo.add_argument("--videos", type=_at_least(1), default=320, help="synthetic clips to generate")
    demo.add_argument("--epochs", type=_at_least(1), default=15, help="training epochs")
    demo.add_argument("--seed", type=_at_least(0), default=0, help="seed of the data and of training")

    synth = verb("synth", "write procedural audio-visual clips in a real dataset's on-disk layout", _cmd_synth,
                 "molt synth ave --out data/synth --videos 200 --seed 0",
                 "molt synth avs --setting ms3 --out data/avs_ms3 --videos 120")
    _add_task(synth, tasks)
    _add_setting(synth)
    synth.add_argument("--out", required=True, help="output directory (the dataset root to train on)")
    synth.add_argument("--videos", type=_at_least(1), default=200, help="number of clips")
    synth.add_argument("--seed", type=_at_least(0), default=0, help="seed of everything generated")
    synth.add_argument("--image-size", type=_at_least(1), default=64, help="frame size in pixels")
    synth.add_argument("--workers", type=_at_least(1), default=2, help="encoding processes")
    synth.add_argument("--overwrite", action="store_true",
                       help="write into --out even when it holds a data set not generated with these options "
                            "(the same command run again needs no flag: it writes the same files)")
    synth.set_defaults(stop_hint="run the same command again to write the whole set")

    prepare = verb("prepare", "decode a dataset's videos into the memory-mapped training format (again, if it "
                   "was already prepared)", _cmd_prepare,
                   "molt prepare ave --data /data/AVE --workers 8",
                   "molt prepare avs --setting ms3 --data /data/AVSBench --out /scratch/avs_ms3")
    _add_task(prepare, tasks)
    _add_data(prepare, what="dataset root in the task's real layout (annotation files, videos)")
    _add_setting(prepare)
    prepare.add_argument("--out", help="output directory (default: the task's place inside the root, e.g. "
                                       "ROOT/prepared)")
    prepare.add_argument("--image-size", type=_at_least(1),
                         help="frame size (default: the generator's size for synthetic data, else 192)")
    prepare.add_argument("--workers", type=_at_least(1), default=2, help="decoding processes")
    prepare.add_argument("--limit", type=_at_least(1), help="only the first N videos (for a quick look)")
    prepare.add_argument("--overwrite", action="store_true",
                         help="prepare into --out even when it holds something else than a prepared set of this root "
                              "and setting")
    prepare.set_defaults(stop_hint="its partial files are removed; run the same command again to prepare the set "
                                   "from the start")
    _add_task_options(prepare, "prepare_options", help_task)

    train = verb("train", "train adapters and a task head on frozen backbones", _cmd_train,
                 "molt train ave --data data/synth --backbone tiny --epochs 10",
                 "molt train ave --data /data/AVE --config ave_molt_paper --audio-weights HTSAT_AudioSet_Saved_1.ckpt",
                 "molt train ave --data data/synth --features cache/ave_tiny")
    _add_task(train, tasks)
    _add_data(train)
    _add_setting(train)
    train.add_argument("--out", default="runs", help="run directory root")
    train.add_argument("--resume", help="checkpoint to resume from, or 'last' for the run's last checkpoint")
    train.add_argument("--features", help="feature cache written by `molt extract` for this setup: train without "
                                          "running (or loading) the frozen backbones")
    train.add_argument("--json", action="store_true", help="print the run's whole result as JSON (what result.json "
                                                          "holds) instead of a summary: for scripts")
    _add_model_options(train)
    _add_training_options(train)

    extract = verb("extract", "run the frozen backbones once and cache the taps MoLT / Mettle read (resumable)",
                   _cmd_extract, "molt extract ave --data data/synth --out cache/ave_tiny",
                   "molt extract ave --data /data/AVE --config ave_molt_paper --blocks late --dtype float16 "
                   "--visual-weights swin.safetensors --audio-weights HTSAT_AudioSet_Saved_1.ckpt --out cache/ave")
    _add_task(extract, tasks)
    _add_data(extract)
    _add_setting(extract)
    extract.add_argument("--out", required=True, help="cache directory (resumes what is already there)")
    extract.add_argument("--blocks", help="block selection of both backbones (default: the config's), e.g. late")
    extract.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                         help="storage dtype of the taps")
    extract.add_argument("--splits", default="train,val,test", help="comma-separated splits to extract")
    extract.add_argument("--batch-size", type=_at_least(1), default=8, help="clips per forward pass")
    extract.add_argument("--chunk-size", type=_at_least(1), default=256, help="clips per chunk file (unit of resume)")
    _add_accelerator(extract, "where the backbones run (auto: a GPU when one is visible)")
    extract.add_argument("--verify", action="store_true", help="re-check the checksums of chunks already written")
    extract.add_argument("--devices", type=_at_least(1), default=1,
                         help="processes on this machine, one per GPU (cuda:0, cuda:1, ...) or CPU processes; they "
                              "share the chunks of every split")
    extract.add_argument("--num-nodes", type=_at_least(1), default=1,
                         help="machines extracting into the same (shared) --out directory, each with --devices")
    extract.add_argument("--node-rank", type=_at_least(0), default=0, help="this machine's index among --num-nodes")
    _add_model_options(extract)
    extract.set_defaults(stop_hint="the complete chunks are kept; run the same command again to resume")

    evaluate = verb("eval", "evaluate a trained checkpoint: metrics as JSON and pictures", _cmd_eval,
                    "molt eval ave --data data/synth --checkpoint runs/ave_molt_tiny/version_0/adapters/best")
    _add_task(evaluate, tasks)
    _add_data(evaluate)
    _add_checkpoint(evaluate)
    evaluate.add_argument("--split", default="test", help="split to evaluate (train, val, test, or another split "
                                                          "of the task)")
    variants = {spec.name: list(spec.test_variants) for spec in registered_tasks() if spec.test_variants}
    evaluate.add_argument("--test-json", choices=sorted({v for names in variants.values() for v in names}),
                          help="which test file, for a task whose release has several ("
                               + "; ".join(f"{name}: {' | '.join(names)}" for name, names in variants.items())
                               + "; default: the first)")
    evaluate.add_argument("--batch-size", type=_at_least(1), default=8, help="items per forward pass")
    _add_accelerator(evaluate, "where the model runs (auto: a GPU when one is visible)")
    evaluate.add_argument("--out", help="where metrics.json and the pictures go (default: "
                                        "evaluations/RUN_version_N_best_SPLIT in the current directory)")
    _add_trust(evaluate)

    predict = verb("predict", "predictions of a trained checkpoint for one video file", _cmd_predict,
                   "molt predict ave --checkpoint runs/ave_molt_tiny/version_0/adapters/best --video clip.mp4",
                   "molt predict avs --checkpoint ADAPTERS --frames v1s/UID/frames --audio v1s/UID/audio.wav",
                   "molt predict avqa --checkpoint ADAPTERS --video 00000086.mp4 --question \"Is the violin playing "
                   "longer than the piano?\"",
                   "molt predict avvp --checkpoint ADAPTERS --video party.mp4 --out predictions/party",
                   "molt predict ave --checkpoint org/molt-ave-swinv2-htsat@v1 --video clip.mp4 --audio-weights "
                   "HTSAT_AudioSet_Saved_1.ckpt")
    _add_task(predict, tasks)
    _add_checkpoint(predict)
    predict.add_argument("--video", help="a video file with an audio track (mp4, mkv, ...)")
    predict.add_argument("--out", help="directory for predictions.json and the pictures (default: "
                                       "predictions/<video name>)")
    predict.add_argument("--json", help="also write the predictions to this JSON file")
    _add_accelerator(predict, "where the model runs (auto: a GPU when one is visible)")
    _add_task_options(predict, "predict_options", help_task)
    _add_trust(predict)

    bench = verb("bench", "efficiency table: one training step of each method, each in its own process", _cmd_bench,
                 "molt bench efficiency ave --backbone tiny --methods molt,mettle,lavish",
                 "molt bench efficiency avs --setting ms3 --backbone paper --methods molt,dgsct,avmoe",
                 "molt bench efficiency ave --backbone paper --methods dgsct,dgsct:official,avmoe,avmoe:official",
                 "molt bench efficiency ave --backbone paper --out benchmarks/results/efficiency_ave_paper",
                 "molt bench efficiency ave --visual-backbone timm:vit_large_patch14_dinov2.lvd142m --visual-weights "
                 "random --audio-backbone htsat")
    bench.add_argument("what", choices=["efficiency", "worker"], metavar="{efficiency}", help="what to benchmark")
    _add_task(bench, tasks)
    bench.add_argument("--backbone", default="tiny", choices=list(_BACKBONES), help="a named backbone pair")
    _add_backbone_names(bench)
    bench.add_argument("--methods", default="molt,mettle,lavish,dgsct,avmoe",
                       help=f"comma-separated methods ({', '.join(_METHODS)}); METHOD:official measures lavish, "
                            f"dgsct or avmoe with its own head instead of the common one")
    bench.add_argument("--batch-clips", type=_at_least(1), default=1,
                       help="clips per training step (10 segments each; 5 frames for avs)")
    _add_setting(bench)
    bench.add_argument("--steps", type=_at_least(1), default=5,
                       help="timed training steps per method (median reported)")
    bench.add_argument("--warmup", type=_at_least(0), default=2, help="untimed training steps before them")
    _add_accelerator(bench, "where the steps run (auto: a GPU when one is visible)")
    bench.add_argument("--backbone-dtype", default="float32", choices=_BACKBONE_DTYPES,
                       help="dtype the frozen backbones are stored and run in (tap-reading methods)")
    bench.add_argument("--out", help="directory for efficiency.json, efficiency.md and efficiency.png")
    bench.add_argument("--method", help=argparse.SUPPRESS)  # molt bench worker: the one method it measures
    bench.add_argument("--result", help=argparse.SUPPRESS)  # molt bench worker: the JSON file it writes
    bench.add_argument("--backbone-json", help=argparse.SUPPRESS)  # molt bench worker: a {visual:, audio:} mapping

    analyze = verb("analyze", "where to adapt: per-block input/output similarity (Fig. 4); token maps and fusion "
                   "weights of a trained model (Fig. 5)", _cmd_analyze,
                   "molt analyze layers ave --data data/synth --backbone paper --visual-weights swin.safetensors "
                   "--audio-weights HTSAT_AudioSet_Saved_1.ckpt",
                   "molt analyze tokens ave --data data/synth --checkpoint runs/ave_molt_tiny/version_0/adapters/best")
    analyze.add_argument("what", choices=["layers", "tokens"], help="layers (Fig. 4) or tokens (Fig. 5)")
    _add_task(analyze, tasks, optional=True)
    _add_data(analyze)
    _add_setting(analyze)
    analyze.add_argument("--out", help="output directory (default: analysis/layers_TASK, or "
                                       "analysis/tokens_RUN_version_N_best, in the current directory)")
    analyze.add_argument("--checkpoint", help="trained model (tokens)")
    analyze.add_argument("--backbone", default="tiny", choices=list(_BACKBONES),
                         help="a named backbone pair (layers; --visual-backbone / --audio-backbone NAME or none "
                              "replace or skip one side)")
    _add_backbone_names(analyze)
    analyze.add_argument("--clips", type=_at_least(1), default=16, help="clips to sample")
    analyze.add_argument("--split", help="split to sample (default: all for layers, test for tokens)")
    analyze.add_argument("--early", type=_at_least(0),
                         help="fix the number of early blocks instead of reading the curve")
    analyze.add_argument("--late", type=_at_least(1), default=2, help="number of late blocks (paper: 2)")
    _add_trust(analyze)

    ablate = verb("ablate", "train the variants of one of the paper's ablation tables (4: adaptation position, "
                  "5: tokens, 6: adapters, 7: fusion, 8: TOR) and write it as markdown", _cmd_ablate,
                  "molt ablate ave --table 7 --data data/synth --epochs 10",
                  "molt ablate avs --setting s4 --table 5 --data data/avs_synth --out ablations/avs")
    _add_task(ablate, tasks)
    ablate.add_argument("--table", required=True, type=int, choices=[4, 5, 6, 7, 8], help="the paper's table")
    _add_data(ablate)
    _add_setting(ablate)
    ablate.add_argument("--out", help="output directory (default: ablations/TASK)")
    _add_model_options(ablate, method=False)     # the tables are MoLT's own ablations
    _add_training_options(ablate)

    params = verb("params", "trainable / total parameters of config presets at their real scale (no forward pass)",
                  _cmd_params, "molt params ave", "molt params ave_molt_paper", "molt params",
                  "molt params --list", "molt params ave --heads",
                  "molt params ave --visual-backbone timm:vit_large_patch14_dinov2.lvd142m --audio-backbone htsat")
    params.add_argument("name", nargs="?", metavar="TASK|PRESET",
                        help="a task (all its presets) or one preset (default: every preset)")
    params.add_argument("--list", action="store_true", help="list preset names")
    params.add_argument("--heads", action="store_true",
                        help="the in-block methods (lavish, dgsct, avmoe) with our common head and with their own "
                             "(method_config.head: official), counted as their scripts count")
    params.add_argument("--setting", metavar="NAME",
                        help="with --heads: count the task's setting NAME (avs: s4, ms3; default: the paper's)")
    params.add_argument("--visual-backbone", metavar="NAME", help="count with this visual encoder (see molt backbones)")
    params.add_argument("--audio-backbone", metavar="NAME", help="count with this audio encoder (see molt backbones)")

    app = verb("app", "a page on localhost to try a trained model on your own video (pip install 'molt-av[app]')",
               _cmd_app, "molt app --checkpoint runs/ave_molt_tiny/version_0/adapters/best",
               "molt app ave --checkpoint org/molt-ave-swinv2-htsat@main --audio-weights HTSAT_AudioSet_Saved_1.ckpt "
               "--port 7861")
    _add_task(app, tasks, optional=True)
    app.add_argument("--checkpoint", help="adapters shown when the page opens: a folder or a Hugging Face repository "
                                          "id (org/name@revision); the page can change it")
    app.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 shares it on the network)")
    app.add_argument("--port", type=int, default=7860, help="port of the page")
    app.add_argument("--clips", help="folder of videos to offer beside the upload (default: 4 generated AVE clips)")
    _add_recorded_weights(app)
    _add_trust(app)

    verb("backbones", "the named backbone pairs and how to name any timm or Hugging Face encoder", _cmd_backbones,
         "molt backbones")
    return parser


def _help_task(argv: list[str], tasks: list[str]) -> str | None:
    """The TASK of ``molt VERB TASK --help`` (its help then lists only that task's flags)."""
    if "-h" not in argv and "--help" not in argv:
        return None
    return next((token for token in argv if token in tasks), None)


class _BesideProgressBars(logging.StreamHandler):
    """Writes each record on a line of its own while a progress bar is drawn (through ``tqdm.write``, which clears
    the bar, prints the line and redraws the bar), so that no log line is glued to the end of a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise; report it the standard way
            self.handleError(record)


def _configure_logging(verbose: bool, quiet: bool) -> None:
    handler = _BesideProgressBars(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO,
                        handlers=[handler])


class _Stopped(BaseException):
    """SIGTERM or SIGINT received by a verb that cleans up when stopped (synth, prepare, extract): raised where the
    verb is, so that its clean-up runs, then turned into exit code 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals(active: bool):
    """While the verb runs, SIGTERM and SIGINT raise :class:`_Stopped` (when ``active``, in the main thread)."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise _Stopped(signum)

    previous = {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def main(argv: list[str] | None = None) -> int:
    from ..tasks import task_names

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv, old_spellings = _modern_spelling(argv, task_names())
    except ValueError as error:
        _configure_logging(verbose=False, quiet=False)
        _logger.error("%s", error)
        return 2
    parser = build_parser(help_task=_help_task(argv, task_names()))
    args = parser.parse_args(argv)
    args.argv = argv
    if not sys.stderr.isatty():     # no download / weight-loading bars from Hugging Face libraries in a batch log
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not args.verbose:            # transformers' load reports list the classifier an encoder is loaded without
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    _configure_logging(args.verbose, args.quiet)
    for old, new in old_spellings:
        _deprecated(old, new)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        with _stop_on_signals(getattr(args, "stop_hint", None) is not None):
            return args.handler(args)
    except _Stopped as stop:
        _logger.error("molt %s stopped by %s: %s", args.verb, signal.Signals(stop.signum).name, args.stop_hint)
        return 128 + stop.signum
    except (ValueError, FileNotFoundError, NotImplementedError, ImportError) as error:
        # an ImportError is bad input only when it says what to install (an optional extra); others are bugs
        if args.debug or (isinstance(error, ImportError) and "pip install" not in str(error)):
            raise
        _logger.error("%s", str(error).replace("\n", " "))
        return 2
    except KeyboardInterrupt:
        _logger.error("interrupted (SIGINT) before anything was saved")
        return 128 + signal.SIGINT
    except RuntimeError as error:
        # a training stopped on purpose (signal, non-finite loss, full disk: molt.app.train.TrainingStopped) in a
        # verb that trains several runs (molt ablate) carries its exit status; anything else is a bug
        code = getattr(error, "exit_code", None)
        if args.debug or not isinstance(code, int):
            raise
        _logger.error("%s", str(error).replace("\n", " "))
        return code


if __name__ == "__main__":
    sys.exit(main())
