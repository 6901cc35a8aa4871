"""``molt extract``: run a config's frozen backbones once over a task's splits and cache the taps.

Part of molt-av (Apache-2.0). Plain PyTorch: this builds the model of an experiment config, opens the task's
prepared splits through its :class:`~molt.tasks.TaskSpec` and hands both to :mod:`molt.features.extract`.
``molt train --features CACHE`` then trains without running the backbones.
"""
from __future__ import annotations

import os

from .config import ExperimentConfig
from .features.store import ExtractReport
from .methods import get_method
from .model import build_model
from .tasks import get_task

__all__ = ["extract"]


def extract(config: ExperimentConfig, *, data: str | os.PathLike, out_dir: str | os.PathLike,
            splits: tuple[str, ...] = ("train", "val", "test"), dtype: str = "float16", batch_size: int = 8,
            chunk_size: int = 256, device: str | None = None, verify_existing: bool = False,
            show_progress: bool = True, trust_checkpoint: bool = False) -> dict[str, ExtractReport]:
    """Run the frozen backbones of ``config`` once over each split of ``data`` and store the taps in ``out_dir``.

    Resumable: complete chunks of an earlier (killed) run are kept; a cache built for another setup is refused.
    """
    from .features.extract import extract_splits

    if not get_method(config.method).reads_taps:
        raise ValueError(f"{config.method} adapters change what the backbone computes, so there is nothing to cache "
                         f"for it; use a tap-reading method (e.g. molt or mettle)")
    spec = get_task(config.task)
    setting = spec.check_setting(config.setting)
    prepared = spec.prepare(data, setting=setting)
    datasets = {split: spec.open_split(prepared, split) for split in splits}
    model = build_model(config, next(iter(datasets.values())).task_options(), trust_checkpoint=trust_checkpoint)
    return extract_splits(model, datasets, out_dir, task=config.task, setting=config.setting, prepared=prepared,
                          dtype=dtype, batch_size=batch_size, chunk_size=chunk_size, device=device,
                          verify_existing=verify_existing, show_progress=show_progress)
