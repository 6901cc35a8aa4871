"""``molt extract``: run a config's frozen backbones once over a task's splits and cache the taps.

Part of molt-av (Apache-2.0). Plain PyTorch: this builds the model of an experiment config, opens the task's
prepared splits through its :class:`~molt.tasks.TaskSpec` and hands both to
:func:`molt.features.writer.extract_splits`.
``molt train --features CACHE`` then trains without running the backbones.

Several processes (``devices``: one per GPU, or CPU processes) and machines (``num_nodes``, ``node_rank``, one
shared directory) split every split's chunks between them: global rank ``r`` of ``w`` computes chunks ``r, r + w,
...``; nothing is exchanged between processes, so a killed process loses only its unfinished chunks, and the same
command run again completes the cache. The processes are started with ``torch.multiprocessing`` (no Lightning:
the verb stays plain PyTorch).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from ..config import ExperimentConfig
from ..features import SPLIT_FILE, ExtractReport, extract_splits
from ..methods import get_method
from ..model import build_model
from ..tasks import get_task

__all__ = ["extract"]


_logger = logging.getLogger(__name__)


def extract(config: ExperimentConfig, *, data: str | os.PathLike, out_dir: str | os.PathLike,
            splits: tuple[str, ...] = ("train", "val", "test"), dtype: str = "float16", batch_size: int = 8,
            chunk_size: int = 256, device: str | None = None, verify_existing: bool = False,
            show_progress: bool = True, trust_checkpoint: bool = False, devices: int = 1, num_nodes: int = 1,
            node_rank: int = 0) -> dict[str, ExtractReport] | dict[str, dict]:
    """Run the frozen backbones of ``config`` once over each split of ``data`` and store the taps in ``out_dir``.

    Resumable: complete chunks of an earlier (killed) run are kept; a cache built for another setup is refused.
    With ``devices * num_nodes > 1`` this machine starts ``devices`` processes (``cuda:i`` each on a GPU machine)
    that extract global ranks ``node_rank * devices + i``; the result is then, per split, the number of entries
    done and the throughput of the job on this machine.
    """
    if not get_method(config.method).reads_taps:
        raise ValueError(f"{config.method} adapters change what the backbone computes, so there is nothing to cache "
                         f"for it; use a tap-reading method (e.g. molt or mettle)")
    if devices < 1 or num_nodes < 1 or not 0 <= node_rank < num_nodes:
        raise ValueError(f"expected devices >= 1, num_nodes >= 1 and 0 <= node_rank < num_nodes, got {devices}, "
                         f"{num_nodes}, {node_rank}")
    spec = get_task(config.task)
    prepared = spec.open_prepared(data, config.setting, show_progress=show_progress)
    options = dict(splits=splits, dtype=dtype, batch_size=batch_size, chunk_size=chunk_size, device=device,
                   verify_existing=verify_existing, trust_checkpoint=trust_checkpoint)
    if devices * num_nodes == 1:
        return _extract_shard(config, prepared, out_dir, options, (0, 1), show_progress)
    import torch.multiprocessing as mp

    start = time.perf_counter()
    context = mp.start_processes(_extract_rank, args=(os.getpid(), config, prepared, out_dir, options, devices,
                                                      num_nodes, node_rank, show_progress), nprocs=devices,
                                 start_method="spawn", join=False)
    try:
        while not context.join():
            pass
    except BaseException:  # stopped (SIGTERM, Ctrl-C) or a rank failed: no rank outlives the command
        for process in context.processes:
            if process.is_alive():
                process.terminate()
        raise
    seconds = time.perf_counter() - start
    result = {}
    for split in splits:
        record = Path(out_dir) / split / SPLIT_FILE
        done = json.loads(record.read_text()) if record.is_file() else None
        result[split] = {"complete": done is not None, "entries": done["num_items"] if done else None}
    entries = sum(r["entries"] or 0 for r in result.values())
    _logger.info("%d process(es) on this machine, %d in all: %s; %d entries in %.1f s (%.2f clips/s for the job, "
                 "process start-up included)", devices, devices * num_nodes,
                 ", ".join(f"{split} {'complete' if r['complete'] else 'waiting for other machines'}"
                           for split, r in result.items()), entries, seconds, entries / max(seconds, 1e-9))
    return result


def _extract_rank(local_rank: int, parent: int, config: ExperimentConfig, prepared: Path,
                  out_dir: str | os.PathLike, options: dict, devices: int, num_nodes: int, node_rank: int,
                  show_progress: bool) -> None:
    """One process of a multi-process extraction (started by :func:`extract`)."""
    import torch

    from ..data.media import die_with_parent

    die_with_parent(parent)  # a killed `molt extract` leaves no process behind
    logging.basicConfig(level=logging.INFO if show_progress else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    device = options["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        device = f"cuda:{local_rank}"
    else:
        torch.set_num_threads(max(1, torch.get_num_threads() // devices))
    rank = node_rank * devices + local_rank
    _extract_shard(config, prepared, out_dir, {**options, "device": device}, (rank, devices * num_nodes),
                   show_progress and rank == 0)


def _extract_shard(config: ExperimentConfig, prepared: Path, out_dir: str | os.PathLike, options: dict,
                   shard: tuple[int, int], show_progress: bool) -> dict[str, ExtractReport]:
    spec = get_task(config.task)
    datasets = {split: spec.open_split(prepared, split) for split in options["splits"]}
    model = build_model(config, next(iter(datasets.values())).task_options(),
                        trust_checkpoint=options["trust_checkpoint"])
    return extract_splits(model, datasets, out_dir, task=config.task, setting=config.setting, prepared=prepared,
                          dtype=options["dtype"], batch_size=options["batch_size"],
                          chunk_size=options["chunk_size"], device=options["device"],
                          verify_existing=options["verify_existing"], show_progress=show_progress, shard=shard)
