"""Lightning at the edge: the one LightningModule of molt-av and the ``train`` entry point (``Trainer`` wiring).

Everything task-specific lives in the task's :class:`~molt.tasks.TaskSpec` (data, head, loss, metrics, monitor);
everything method-specific in the method. Checkpoints (``best.ckpt``, ``last.ckpt``) hold only the trainable
tensors plus optimiser state, so they stay small and resumable; the best model is also exported as an adapter
directory (:meth:`~molt.model.AudioVisualModel.save_pretrained`). Evaluation and prediction are plain PyTorch
(:mod:`molt.app.evaluate`); this is the only module that imports Lightning.
"""
from __future__ import annotations

import dataclasses
import errno
import io
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader

from ..backbones.audio_frontend import check_sample_rate
from ..backbones.base import TapBackbone
from ..backbones.taps import AUTO_BLOCKS
from ..checkpoints import (CONFIG_KEY, GLOBAL_STEP_KEY, RNG_KEY, add_training_entries, check_trainable_tensors,
                           dict_differences, read_training_checkpoint, restore_random_states)
from ..config import ExperimentConfig
from ..data.files import check_output_dir, replace_durably
from ..data.sampling import EvalShard, ResumableLoader
from ..features import cached_splits
from ..methods import count_parameters
from ..model import AudioVisualModel, build_config_backbones, build_model, resolve_device
from ..tasks import get_task
from .memory import peak_rss_bytes

__all__ = ["LitAudioVisual", "train", "software_environment", "TrainingStopped", "NonFiniteLossError",
           "TrainingInterrupted", "NoSpaceLeftError", "GracefulStop", "AtomicCheckpointIO", "claim_version",
           "EXIT_NON_FINITE_LOSS", "EXIT_NO_SPACE", "RUN_VERSION_ENV"]

_logger = logging.getLogger(__name__)

#: exit status of ``molt train`` when the loss became NaN or infinite (0: finished, 2: bad input, 128 + N: signal N)
EXIT_NON_FINITE_LOSS = 3
#: exit status of ``molt train`` when a checkpoint (or another file of the run) did not fit on the disk
EXIT_NO_SPACE = 4
#: the run directory's version that the first process claimed, for the DDP processes it starts
RUN_VERSION_ENV = "MOLT_RUN_VERSION"


class TrainingStopped(RuntimeError):
    """``molt train`` stopped before its end; the message says what was saved. ``exit_code`` is the process's exit
    status and ``resumable`` whether ``--resume last`` continues the run."""

    exit_code = 1
    resumable = False


class NonFiniteLossError(TrainingStopped):
    """The loss became NaN or infinite; the run stops instead of training on garbage."""

    exit_code = EXIT_NON_FINITE_LOSS


class TrainingInterrupted(TrainingStopped):
    """SIGTERM or SIGINT stopped the run at a consistent point (see :class:`GracefulStop`); the exit status is
    128 + the signal's number, as a shell reports a process the signal ended."""

    def __init__(self, signum: int, message: str, *, resumable: bool = True) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
        self.resumable = resumable


class NoSpaceLeftError(TrainingStopped):
    """A checkpoint did not fit on the disk; the earlier checkpoints are intact (they are replaced atomically)."""

    exit_code = EXIT_NO_SPACE
    resumable = True


class LitAudioVisual(L.LightningModule):
    """Training loop glue around :class:`~molt.model.AudioVisualModel`."""

    def __init__(self, model: AudioVisualModel, config: ExperimentConfig, task_options: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.task_options = task_options
        # frozen backbone tensors are not in checkpoints (see on_save_checkpoint)
        self.strict_loading = False

    def forward(self, batch: dict[str, Any]):
        return self.model(batch)

    def _losses(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor], Any]:
        output = self.model(batch)
        task_loss = self.model.task.loss(output.predictions, batch)
        losses = {"task": task_loss, **output.method.aux_losses}
        return sum(losses.values()), losses, output

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, parts, _ = self._losses(batch)
        if not torch.isfinite(loss):
            ids = batch.get("video_id")
            raise NonFiniteLossError(f"non-finite loss {loss.item()} at global step {self.global_step}, epoch "
                                     f"{self.current_epoch}, batch {batch_idx} (clips: {ids}); parts: "
                                     f"{ {k: float(v.detach()) for k, v in parts.items()} }. Lower the learning "
                                     f"rate or check the input data.")
        batch_size = len(batch["video_id"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in parts.items():
            self.log(f"train/{name}_loss", value, batch_size=batch_size)
        return loss

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        loss, _, output = self._losses(batch)
        self.log(f"{stage}/loss", loss, batch_size=len(batch["video_id"]), sync_dist=True)
        self.model.task.update_metrics(output.predictions, batch)

    def _sum_metric_state_across_processes(self) -> None:
        """Under DDP each process saw part of the split: add the metric sums of all processes so every process
        computes the figures of the whole split (not a mean of per-process ratios)."""
        task = self.model.task
        if self.trainer.world_size <= 1:
            return
        state = getattr(task, "metric_state", {})
        for name in sorted(state):
            local = state[name].to(self.device)
            state[name] = self.trainer.strategy.reduce(local, reduce_op="sum").cpu()

    def _eval_epoch_end(self, stage: str) -> None:
        self._sum_metric_state_across_processes()
        metrics = self.model.task.compute_metrics()
        self.model.task.reset_metrics()
        for name, value in metrics.items():
            # the same value on every rank (the sums were added): syncing averages equal numbers
            self.log(f"{stage}/{name}", float(value), prog_bar=(stage == "val"), sync_dist=self.trainer.world_size > 1)

    def on_validation_epoch_start(self) -> None:
        self.model.task.reset_metrics()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self.model.task.reset_metrics()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self):
        optim = self.config.optim
        groups = [
            {"params": [p for p in self.model.method.parameters() if p.requires_grad], "lr": optim.lr},
            {"params": [p for p in self.model.task.parameters() if p.requires_grad], "lr": optim.head_lr},
        ]
        optimizer = torch.optim.Adam([g for g in groups if g["params"]], weight_decay=optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=optim.step_size, gamma=optim.gamma)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        add_training_entries(checkpoint, self.model, self.config, self.task_options)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_trainable_tensors(self.model, checkpoint, "checkpoint")
        if RNG_KEY in checkpoint and self.trainer.state.fn == "fit":
            restore_random_states(checkpoint[RNG_KEY])  # dropout continues where the saved run was


def _megabytes(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint under a temporary name and renames it, so a run killed while saving leaves the previous
    ``last.ckpt`` intact instead of a truncated file. A full disk (or quota) removes the temporary file and raises
    :class:`NoSpaceLeftError` saying how much space the checkpoint needs and where; with ``on_no_space`` it hands
    the error to that function instead and returns (see :class:`GracefulStop`: under DDP only the first process
    writes, and an error raised there alone would leave the others waiting for it)."""

    def __init__(self, on_no_space: Callable[[NoSpaceLeftError], None] | None = None) -> None:
        super().__init__()
        self.on_no_space = on_no_space

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        temporary = path.with_name(f".{path.name}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            super().save_checkpoint(checkpoint, temporary, storage_options)
            replace_durably(temporary, path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else 0
            earlier = "; the earlier checkpoints there are intact" if any(path.parent.glob("*.ckpt")) else ""
            stopped = NoSpaceLeftError(f"no space left on the device for {path}: the checkpoint needs "
                                       f"{_megabytes(buffer.getbuffer().nbytes)}, {_megabytes(free)} are free there"
                                       f"{earlier}; free space on that disk (or quota)"
                                       f"{' and resume' if earlier else ' and start again'}")
            stopped.resumable = bool(earlier)
            if self.on_no_space is None:
                raise stopped from None
            self.on_no_space(stopped)


class StepCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every N training steps, except after the last batch of an epoch.

    A checkpoint written there (by ``on_train_batch_end``, before the epoch's validation) makes Lightning 2.x count
    the epoch as complete on resume, validation included: the resumed run never validated that epoch, so its best
    checkpoint (and the exported adapters) could differ from the uninterrupted run's. The epoch-end ``last.ckpt``
    (written after validation) follows moments later; a run killed in between resumes from the checkpoint of the
    batch before and trains the last batch again, exactly as the uninterrupted run did.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class GracefulStop(L.Callback):
    """SIGTERM and SIGINT (sent by SLURM and Kubernetes before they kill a job, or by Ctrl+C) stop the run with a
    resumable ``last.ckpt`` and :class:`TrainingInterrupted` (exit status 128 + the signal's number); a checkpoint
    that did not fit on the disk stops it with :class:`NoSpaceLeftError` (exit status 4).

    Why our own handlers rather than Lightning's: Lightning 2.x turns SIGTERM into ``SIGTERMException``, a
    ``SystemExit`` without a status (the process exits 0, as if the run had finished), its handler broadcasts a
    tensor from inside the signal handler (which can interleave with DDP's gradient all-reduce), and it turns SIGINT
    into a ``KeyboardInterrupt`` raised wherever the process happens to be (in the middle of an optimiser step).
    Here the handler only records the signal; the training loop acts on it at one point per batch, after the
    optimiser step (``on_train_batch_end``), where the processes agree on it with one all-reduce so that every DDP
    process stops at the same batch and only the first one writes:

    * in the middle of an epoch: ``last.ckpt`` of that moment (the state a ``--checkpoint-every-n-steps``
      checkpoint holds, which resumes at the next batch), then stop;
    * after the last batch of an epoch: the epoch ends as usual (validation, ``best.ckpt``, ``last.ckpt``), then
      stop (a checkpoint before that epoch's validation would not resume exactly, see :class:`StepCheckpoint`);
    * during the final test: the test ends and the results are written, then the run exits with the signal's status.

    A full disk is agreed on the same way (the first process, the only one that writes, reports it through
    :class:`AtomicCheckpointIO`'s ``on_no_space``), at the next batch's end or at the end of training, so that every
    process stops instead of waiting for the first one.

    A second signal of either kind ends the process at once (the default action). Lightning installs its own SIGTERM
    handler when ``fit`` and ``test`` start; :meth:`install` runs again in ``on_train_start`` and ``on_test_start``
    to take it back.

    Under SLURM, ``#SBATCH --signal=TERM@120`` sends SIGTERM two minutes before the time limit; the same command
    with ``--resume last``, in the next job, continues the run. Lightning's own auto-requeue
    (``SLURMEnvironment(auto_requeue=True)``, on SIGUSR1) is left as it is: it writes an ``hpc_ckpt_N.ckpt`` of its
    own and requeues the job itself.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, last_path: Path | None = None) -> None:
        self.last_path = last_path       # the run's last.ckpt, once its directory is known
        self.received = 0                # set by the handler (signal number)
        self.agreed = 0                  # the signal every process stops for
        self.no_space: NoSpaceLeftError | None = None
        self._originals: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.SIGNALS:
            previous = signal.signal(signum, self._handle)
            self._originals.setdefault(signum, previous)

    def restore(self) -> None:
        for signum, handler in self._originals.items():
            signal.signal(signum, handler)
        self._originals = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received:        # asked twice: stop at once
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum

    def checkpoint_failed(self, error: NoSpaceLeftError) -> None:
        """:class:`AtomicCheckpointIO`'s ``on_no_space``: remember the first failure until the processes agree."""
        self.no_space = self.no_space or error

    def _agree(self, trainer: L.Trainer) -> int:
        """The signal any process received (0: none), the same on every process; :class:`NoSpaceLeftError` on every
        process when a checkpoint did not fit."""
        signum, full = self.received, self.no_space is not None
        if trainer.world_size > 1:
            flags = torch.tensor([signum, int(full)], dtype=torch.int64, device=trainer.strategy.root_device)
            signum, full = (int(value) for value in trainer.strategy.reduce(flags, reduce_op="max").tolist())
        if full:
            raise self.no_space or NoSpaceLeftError("the first process could not write a checkpoint (no space "
                                                    "left on the device)")
        return signum

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.install()
        signum = self._agree(trainer)
        if signum:
            earlier = self.last_path is not None and self.last_path.is_file()
            raise TrainingInterrupted(signum, f"stopped by {signal.Signals(signum).name} before the first training "
                                              f"step of this run, nothing new to save"
                                              f"{'' if earlier else '; start again with the same command'}",
                                      resumable=earlier)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.install()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        signum = self._agree(trainer)
        if self.agreed or not signum or (batch_idx + 1) % trainer.accumulate_grad_batches:
            return
        self.agreed = signum
        batches = trainer.num_training_batches
        if batch_idx + 1 >= batches:
            return          # stopped at the end of this epoch (on_train_epoch_end), after validation and checkpoints
        trainer.save_checkpoint(self.last_path, weights_only=False)
        if self.no_space is not None:
            raise self.no_space
        raise TrainingInterrupted(signum, f"stopped by {signal.Signals(signum).name} at global step "
                                          f"{trainer.global_step} (epoch {trainer.current_epoch + 1}, batch "
                                          f"{batch_idx + 1} of {batches}); saved {self.last_path}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # set here, not after the last batch: Lightning logs the step metrics of any step where should_stop is set,
        # which would add a point to the curves that the uninterrupted run does not have
        if not self.agreed:
            self.agreed = self._agree(trainer)      # the signal came during the last batch's validation
        if self.agreed:
            trainer.should_stop = True              # the epoch's checkpoints are written after this hook

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._agree(trainer)                        # the last epoch's checkpoints are written by now

def _train_loader(dataset, config: ExperimentConfig, trainer: L.Trainer) -> ResumableLoader:
    """Training batches shuffled as a pure function of ``(seed, epoch, rank, world size)``; Lightning stores the
    loader's position in every checkpoint, so a run resumed from a mid-epoch ``last.ckpt`` continues the epoch at
    the batch after it (see :mod:`molt.data.sampling`)."""
    return ResumableLoader(dataset, batch_size=config.trainer.batch_size, seed=config.trainer.seed,
                           num_workers=config.trainer.num_workers,
                           replicas=lambda: (trainer.global_rank, trainer.world_size),
                           consumed=lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed)


def _eval_loader(dataset, config: ExperimentConfig, trainer: L.Trainer) -> DataLoader:
    """Validation / test batches in dataset order; under DDP each rank takes every ``world size``-th clip, none twice
    (the metric sums are added across ranks). Its own seeded generator keeps each new iteration from drawing the
    workers' base seed from the global generator, which dropout uses."""
    workers = config.trainer.num_workers
    return DataLoader(dataset, batch_size=config.trainer.batch_size, num_workers=workers,
                      sampler=EvalShard(dataset, replicas=lambda: (trainer.global_rank, trainer.world_size)),
                      generator=torch.Generator().manual_seed(config.trainer.seed), persistent_workers=workers > 0,
                      drop_last=False)


class _DropLightningChatter(logging.Filter):
    """What Lightning says at every run that a user did not ask for: tips advertising optional packages, the
    accelerators it found and did not use, the seed, the end of fit and the reloading of the best checkpoint for
    the test (the run's own lines say what happened)."""

    NOISE = ("Tip:", "GPU available:", "TPU available:", "HPU available:", "IPU available:", "Seed set to",
             "`Trainer.fit` stopped:", "Restoring states from the checkpoint",
             "Loaded model weights from the checkpoint")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(part in message for part in self.NOISE)


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 10 s``, ``1 h 02 min``."""
    seconds = int(round(max(seconds, 0.0)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _four_places(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"


class ProgressLines(L.Callback):
    """Progress for logs that are not a terminal (a batch job, a pipe, ``nohup``), where no progress bar is drawn:
    one line at the end of every epoch (the epoch's mean training loss, the validation score and the best so far,
    elapsed time and ETA) and, with ``every_n_steps``, one every that many training steps (the loss averaged over
    the epoch so far). Logged by the first process only."""

    def __init__(self, monitor: str, mode: str, every_n_steps: int | None = None) -> None:
        self.monitor, self.mode, self.every_n_steps = monitor, mode, every_n_steps
        self.started = time.monotonic()
        self.first_epoch = 0
        self.best: float | None = None      # of the epochs this process saw (checkpoint callbacks update later)
        self.loss_sum, self.loss_count = 0.0, 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.monotonic()
        self.first_epoch = trainer.current_epoch          # a resumed run counts its ETA from where it resumed

    def _times(self, trainer: L.Trainer, epochs_done: float) -> str:
        elapsed = time.monotonic() - self.started
        remaining = trainer.max_epochs - self.first_epoch - epochs_done
        eta = elapsed / epochs_done * remaining if epochs_done > 0 else 0.0
        return f"{_duration(elapsed)} elapsed, ETA {_duration(eta)}"

    def _mean_loss(self) -> str:
        return _four_places(self.loss_sum / self.loss_count if self.loss_count else None)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.loss_sum, self.loss_count = 0.0, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if torch.is_tensor(loss):
            self.loss_sum += float(loss.detach())
            self.loss_count += 1
        if not self.every_n_steps or not trainer.is_global_zero or (batch_idx + 1) % self.every_n_steps:
            return
        batches = trainer.num_training_batches
        done = trainer.current_epoch - self.first_epoch + (batch_idx + 1) / batches
        _logger.info("epoch %d/%d step %d/%d: train loss %s, %s", trainer.current_epoch + 1, trainer.max_epochs,
                     batch_idx + 1, batches, self._mean_loss(), self._times(trainer, done))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None:
            better = max if self.mode == "max" else min
            self.best = float(value) if self.best is None else better(self.best, float(value))
        _logger.info("epoch %d/%d: train loss %s, %s %s (best %s), %s", trainer.current_epoch + 1,
                     trainer.max_epochs, self._mean_loss(), self.monitor, _four_places(value),
                     _four_places(self.best), self._times(trainer, trainer.current_epoch + 1 - self.first_epoch))


def _one_log_line_per_event() -> None:
    """When the application configured logging (the CLI does), let Lightning's records reach its handlers once, at
    its level: Lightning installs a handler of its own on the ``lightning`` logger (every line was printed twice) and
    sets its loggers to INFO (``--quiet`` still printed them)."""
    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        library_logger = logging.getLogger(name)
        for handler in list(library_logger.handlers):
            if isinstance(handler, logging.StreamHandler):
                library_logger.removeHandler(handler)
        library_logger.propagate = True
        library_logger.setLevel(logging.NOTSET)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed",
                 "lightning.fabric.utilities.rank_zero"):
        chatty = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningChatter) for f in chatty.filters):
            chatty.addFilter(_DropLightningChatter())


def software_environment() -> dict[str, Any]:
    """What the figures depend on: versions (torch, timm, lightning, av, numpy, Python), the thread count and the
    CPU's vector instruction set."""
    from importlib import metadata

    versions = {}
    for package in ("torch", "timm", "lightning", "av", "numpy", "molt-av"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {**versions, "python": sys.version.split()[0], "torch_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda, "cpu": _cpu_model(),
            # the vector instructions torch's CPU kernels use (AVX2 and AVX512 round differently)
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _cpu_model() -> str:
    import platform

    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# the config sections that build the model: a checkpoint resumes only into a model built from the same ones
_MODEL_KEYS = ("task", "setting", "method", "backbone", "audio_clip_seconds", "shared_audio_frontend",
               "method_config", "head")


def _frozen_backbone_names(module: torch.nn.Module) -> list[str]:
    """Names of every parameter and buffer of the frozen backbones inside ``module``, under every path."""
    names = []
    for prefix, child in module.named_modules(remove_duplicate=False):
        if isinstance(child, TapBackbone):
            names += [f"{prefix}.{name}" for name, _ in child.named_parameters(remove_duplicate=False)]
            names += [f"{prefix}.{name}" for name, _ in child.named_buffers(remove_duplicate=False)]
    return sorted(set(names))


def _check_resumable(path: str | os.PathLike, config: ExperimentConfig) -> int:
    """The checkpoint's global step; a ``ValueError`` listing every difference when it was made for another model
    than ``config`` builds."""
    state = read_training_checkpoint(path)
    saved, current = state[CONFIG_KEY], config.to_dict()
    differences = [line for key in _MODEL_KEYS
                   for line in dict_differences(saved.get(key), current[key], key, ("checkpoint", "this run"))]
    if differences:
        raise ValueError(f"{path} was made for another setup ({'; '.join(differences)}); resume with the config it "
                         f"was trained with, or start a new run without --resume")
    return int(state[GLOBAL_STEP_KEY])


def _resolve_resume(resume: str | None, run_root: Path,
                    config: ExperimentConfig) -> tuple[str | None, str | None, int | None]:
    """``(checkpoint to resume from, TensorBoard version to continue, its global step)`` for
    ``--resume last|PATH|None``."""
    if resume is None:
        return None, None, None
    if resume != "last":
        if not Path(resume).is_file():
            raise FileNotFoundError(f"--resume: checkpoint not found: {resume}")
        return resume, None, _check_resumable(resume, config)
    candidates = sorted(run_root.glob("version_*/checkpoints/last.ckpt"), key=os.path.getmtime)
    if not candidates:
        raise FileNotFoundError(f"--resume last: no last.ckpt under {run_root}")
    return str(candidates[-1]), candidates[-1].parent.parent.name, _check_resumable(candidates[-1], config)


def _versions(run_root: Path) -> list[int]:
    """The numbers of the ``version_N`` directories under ``run_root``."""
    return [int(path.name.split("_", 1)[1]) for path in run_root.glob("version_*")
            if path.name.split("_", 1)[1].isdigit()]


def claim_version(run_root: Path) -> str:
    """Create the next free ``version_N`` directory under ``run_root`` and return its name. ``mkdir`` without
    ``exist_ok`` is the lock: of several runs started at once on the same ``--out``, each gets its own directory
    (the one that finds ``version_N`` taken tries ``N + 1``)."""
    run_root.mkdir(parents=True, exist_ok=True)
    number = max(_versions(run_root), default=-1) + 1
    while True:
        try:
            (run_root / f"version_{number}").mkdir()
        except FileExistsError:
            number += 1
            continue
        return f"version_{number}"


def _run_version(run_root: Path) -> str:
    """The version directory of a new run: claimed by the first process (global rank 0), which hands it to the
    DDP processes it starts through :data:`RUN_VERSION_ENV`. Processes started otherwise (``torchrun``, ``srun``)
    never claim one: they write nothing there (Lightning broadcasts the first process's checkpoint folder), so they
    name the newest existing version."""
    if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0" and \
            os.environ.get("RANK", "0") == "0":
        version = claim_version(run_root)
        os.environ[RUN_VERSION_ENV] = version
        return version
    if os.environ.get(RUN_VERSION_ENV):
        return os.environ[RUN_VERSION_ENV]
    return f"version_{max(_versions(run_root), default=0)}"


def _finite_checkpoints(checkpoint_dir: Path) -> str:
    """Which checkpoints of the run a non-finite loss leaves to resume from, in words."""
    found = []
    for name in ("last.ckpt", "best.ckpt"):
        path = checkpoint_dir / name
        if not path.is_file():
            continue
        try:
            state = read_training_checkpoint(path)
        except ValueError:
            continue
        if all(torch.isfinite(tensor).all() for tensor in state["state_dict"].values() if tensor.is_floating_point()):
            found.append(f"{path} (global step {state[GLOBAL_STEP_KEY]})")
    if not found:
        return "no checkpoint with finite weights was written before; start again with a lower learning rate"
    return (f"the last finite weights are in {' and '.join(found)}: evaluate them with molt eval, or start again "
            f"with a lower learning rate")


def _choose_auto_blocks(config: ExperimentConfig, train_set: Any, *, features: str | os.PathLike | None,
                        trust_checkpoint: bool) -> tuple[ExperimentConfig, Any, dict[str, Any] | None]:
    """``blocks_visual: auto`` / ``blocks_audio: auto``: measure the backbones' layer similarity on a few training
    clips (paper Fig. 4) and take the late blocks it suggests (:func:`~molt.app.analysis.layers.suggest_split`
    with ``late=None``). Returns the config with explicit blocks, the backbones it built (``None`` when no block
    selection is ``auto``), and the choice (``blocks``, and the ``folder`` holding the measurement's files)."""
    sides = [side for side in ("visual", "audio")
             if str(getattr(config.method_config, f"blocks_{side}", "")).strip().lower() == AUTO_BLOCKS]
    if not sides:
        return config, None, None
    if features is not None:
        raise ValueError("blocks auto measures the backbones on training clips, which training from a feature cache "
                         "never runs; run molt analyze layers and set the blocks it suggests, or drop --features")
    from .analysis.layers import measure_layers

    backbones = build_config_backbones(config, trust_checkpoint=trust_checkpoint)
    folder = tempfile.mkdtemp(prefix="molt-layers-")
    analysis = measure_layers(dict(zip(("visual", "audio"), backbones)), train_set, out_dir=folder, clips=8,
                              segments_per_clip=2, late=None, about={"task": config.task, "auto": sides})
    blocks = {side: analysis.splits[side].late for side in sides}
    for side in sides:
        _logger.info("blocks_%s auto: %s late blocks %s (%s)", side, analysis.results[side].name,
                     ",".join(map(str, blocks[side])), analysis.splits[side].reason)
    method_config = config.method_config.replace(**{f"blocks_{side}": blocks[side] for side in sides})
    return dataclasses.replace(config, method_config=method_config), backbones, {"blocks": blocks, "folder": folder}


def train(config: ExperimentConfig, *, data: str | os.PathLike, out_dir: str | os.PathLike = "runs",
          resume: str | None = None, run_name: str | None = None, enable_progress_bar: bool = True,
          features: str | os.PathLike | None = None, trust_checkpoint: bool = False) -> dict[str, Any]:
    """Train on ``data`` (a dataset root of ``config.task``'s layout, prepared on first use, or a prepared directory).

    Model selection uses the task's monitor metric on the validation split; the returned figures are on the test
    split. With ``features`` (a cache written by ``molt extract`` for the same setup), batches carry the cached taps
    and the frozen backbones are never run nor loaded (they are built on the ``meta`` device).
    Returns a dict with the run directory, adapter directory, best validation and test metrics, parameter counts,
    peak memory and wall time. The progress bar is shown only on a terminal (one updating line; none in logs).

    A run that stops early raises a :class:`TrainingStopped` whose message says what was saved:
    :class:`TrainingInterrupted` (SIGTERM or SIGINT while this function runs, see :class:`GracefulStop`),
    :class:`NonFiniteLossError`, :class:`NoSpaceLeftError`. Numbers no run can use (``max_epochs`` below 1, a
    negative learning rate) and an ``out_dir`` it cannot write raise a ``ValueError`` before any work; a new run's
    directory ``version_N`` is claimed atomically (:func:`claim_version`).
    """
    start = time.time()
    check_output_dir(out_dir)
    guard = GracefulStop()
    guard.install()
    try:
        return _train(config, data=data, out_dir=out_dir, resume=resume, run_name=run_name, start=start,
                      enable_progress_bar=enable_progress_bar, features=features, trust_checkpoint=trust_checkpoint,
                      guard=guard)
    finally:
        guard.restore()


def _train(config: ExperimentConfig, *, data: str | os.PathLike, out_dir: str | os.PathLike, resume: str | None,
           run_name: str | None, start: float, enable_progress_bar: bool, features: str | os.PathLike | None,
           trust_checkpoint: bool, guard: GracefulStop) -> dict[str, Any]:
    if str(config.trainer.accelerator).lower() in ("gpu", "cuda", "mps"):
        resolve_device(config.trainer.accelerator)      # refuses a GPU that is not there, naming the fix
    _one_log_line_per_event()
    enable_progress_bar = enable_progress_bar and sys.stdout.isatty()
    # frozen backbones stay in eval mode on purpose (see TapBackbone.train)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # small data sets log less often than every 10 steps, as asked; and Lightning's own use of a deprecated torch API
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # with a feature cache the backbones sit on the meta device; BatchNorm fills in a missing num_batches_tracked
    # when Lightning loads a checkpoint (which holds trainable tensors only), and torch warns that it is a no-op
    warnings.filterwarnings("ignore", message=r"for .*num_batches_tracked: copying from a non-meta parameter")
    # a resumed run writes into its own checkpoints folder again, on purpose (a new run claims a fresh version_N)
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    seed = config.trainer.seed
    L.seed_everything(seed, workers=True)
    spec = get_task(config.task)
    prepared = spec.open_prepared(data, config.setting, show_progress=enable_progress_bar)
    train_set, val_set, test_set = (spec.open_split(prepared, split) for split in ("train", "val", "test"))
    task_options = train_set.task_options()
    config, backbones, layer_choice = _choose_auto_blocks(config, train_set, features=features,
                                                          trust_checkpoint=trust_checkpoint)
    model = build_model(config, task_options, backbones_on_meta=features is not None,
                        trust_checkpoint=trust_checkpoint, backbones=backbones)
    if features is not None:
        cached = cached_splits(model, {"train": train_set, "val": val_set, "test": test_set}, features,
                               task=config.task, setting=config.setting, prepared=prepared)
        train_set, val_set, test_set = cached["train"], cached["val"], cached["test"]
    if model.audio is not None:
        check_sample_rate(train_set.sample_rate, model.audio.sample_rate, source=prepared)
    trainable, total = count_parameters(model)
    lit = LitAudioVisual(model, config, task_options)
    # DDP keeps the frozen backbones out of its synchronisation: every process builds the same ones, and from a
    # feature cache they sit on the meta device, which DDP would refuse
    lit._ddp_params_and_buffers_to_ignore = _frozen_backbone_names(lit)

    run_name = run_name or f"{config.task}_{config.method}_{config.backbone_label}"
    resume_path, version, resume_step = _resolve_resume(resume, Path(out_dir, run_name), config)
    if version is None:
        version = _run_version(Path(out_dir, run_name))
    # a resumed run drops what the killed one logged after its checkpoint, so no step appears twice in TensorBoard
    purge = {"purge_step": resume_step} if resume_path else {}
    logger = TensorBoardLogger(save_dir=str(out_dir), name=run_name, version=version, **purge)
    run_dir = Path(logger.log_dir)
    checkpoint_dir = run_dir / "checkpoints"
    guard.last_path = checkpoint_dir / "last.ckpt"
    monitor = f"val/{spec.monitor}"
    best = ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor=monitor, mode=spec.monitor_mode,
                           save_top_k=1, enable_version_counter=False)
    # last.ckpt at the end of every epoch, whatever the validation score: an unmonitored top-1 callback keeps the
    # newest epoch (a monitored callback with save_last rewrites last.ckpt only when it saves a better top-k file)
    last = ModelCheckpoint(dirpath=checkpoint_dir, filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    trainer_cfg = config.trainer
    callbacks = [guard, best, last]
    if trainer_cfg.checkpoint_every_n_steps:
        callbacks.append(StepCheckpoint(dirpath=checkpoint_dir, filename="last", monitor=None, save_top_k=1,
                                        every_n_train_steps=trainer_cfg.checkpoint_every_n_steps,
                                        enable_version_counter=False))
    if enable_progress_bar:
        callbacks.append(TQDMProgressBar())
    else:
        callbacks.append(ProgressLines(monitor, spec.monitor_mode, trainer_cfg.progress_every_n_steps))
    trainer = L.Trainer(
        max_epochs=trainer_cfg.max_epochs, accelerator=trainer_cfg.accelerator, devices=trainer_cfg.devices,
        strategy=trainer_cfg.strategy, precision=trainer_cfg.precision, logger=logger,
        callbacks=callbacks,
        log_every_n_steps=trainer_cfg.log_every_n_steps,
        accumulate_grad_batches=trainer_cfg.accumulate_grad_batches,
        gradient_clip_val=trainer_cfg.gradient_clip_val, deterministic=False,
        enable_progress_bar=enable_progress_bar, enable_model_summary=False, num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO(on_no_space=guard.checkpoint_failed)])
    if layer_choice is not None:     # the measurement behind blocks: auto, beside the run's other files
        if trainer.is_global_zero:
            shutil.rmtree(run_dir / "layers", ignore_errors=True)
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.move(layer_choice["folder"], run_dir / "layers")
        else:
            shutil.rmtree(layer_choice["folder"], ignore_errors=True)
    try:
        trainer.fit(lit, _train_loader(train_set, config, trainer), _eval_loader(val_set, config, trainer),
                    ckpt_path=resume_path, weights_only=True)
    except NonFiniteLossError as error:
        raise NonFiniteLossError(f"{error} {_finite_checkpoints(checkpoint_dir)}") from None
    except SIGTERMException:   # Lightning's handler saw the signal before ours took over (see GracefulStop)
        guard.agreed = guard.agreed or signal.SIGTERM
    if guard.agreed:
        raise TrainingInterrupted(guard.agreed, f"stopped by {signal.Signals(guard.agreed).name} at the end of epoch "
                                                f"{trainer.current_epoch} (global step {trainer.global_step}); saved "
                                                f"{guard.last_path}")
    best_path = best.best_model_path or last.best_model_path
    if not best_path:
        raise ValueError(f"training ran {trainer.global_step} steps and wrote no checkpoint: the training split of "
                         f"{data} has {len(train_set)} clips ({trainer.num_training_batches} batches); give it "
                         f"clips and at least one epoch (--epochs)")
    try:
        test_metrics = trainer.test(lit, _eval_loader(test_set, config, trainer), ckpt_path=best_path,
                                    verbose=False, weights_only=True)[0]
    except SIGTERMException:
        raise TrainingInterrupted(signal.SIGTERM, f"stopped by SIGTERM during the final test; training had "
                                                  f"finished: {best_path} and {guard.last_path} are complete") from None
    adapter_dir = run_dir / "adapters" / "best"
    result = {
        "run_dir": str(run_dir),
        "adapters": str(adapter_dir),
        "best_checkpoint": best_path,
        "monitor": monitor,
        f"best_val_{spec.monitor}": float(best.best_model_score) if best.best_model_score is not None else None,
        "test": {k.removeprefix("test/"): float(v) for k, v in test_metrics.items()},
        "trainable_params": trainable,
        "total_params": total,
        "peak_rss_mb": round(peak_rss_bytes() / 2 ** 20, 1),
        "wall_time_s": round(time.time() - start, 1),
        "global_step": trainer.global_step,
        "features": str(features) if features is not None else None,
        "auto_blocks": None if layer_choice is None else layer_choice["blocks"],
        "environment": software_environment(),
    }
    if trainer.is_global_zero:
        model.save_pretrained(adapter_dir, results=result)     # the model card shows the run's metrics
        with open(run_dir / "result.json", "w") as handle:
            json.dump(result, handle, indent=2)
    if guard.received:
        raise TrainingInterrupted(guard.received, f"{signal.Signals(guard.received).name} arrived during the final "
                                                  f"test; the run had finished: results in {run_dir / 'result.json'}",
                                  resumable=False)
    return result
