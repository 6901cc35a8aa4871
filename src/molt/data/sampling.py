"""Training order that a killed run can resume exactly, in one process or under DDP.

Part of molt-av (Apache-2.0). The order of an epoch is a pure function of ``(seed, epoch, rank, world size)``: the
order of :class:`torch.utils.data.DistributedSampler`. :class:`ResumableLoader` is a ``DataLoader`` with the
``state_dict`` / ``load_state_dict`` pair that Lightning saves in checkpoints and restores on resume: it records
how many batches of the epoch the trainer has consumed, and the resumed run starts its epoch at the next one,
without decoding the batches it skips. Plain PyTorch: the trainer supplies where it stands through callables.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["ResumableShuffle", "ResumableLoader", "EvalShard"]


class ResumableShuffle(DistributedSampler):
    """``DistributedSampler(shuffle=True, drop_last=False)`` whose rank and world size are read when an epoch starts.

    A trainer knows the ranks only once it has launched its processes, after the loader was built: ``replicas()``
    returns ``(rank, world size)`` then. Being a ``DistributedSampler``, Lightning keeps it instead of injecting its
    own, and calls :meth:`set_epoch` every epoch. :meth:`resume_at` makes the next iteration of that epoch start
    ``start`` indices in (once).
    """

    def __init__(self, dataset: Dataset, *, seed: int,
                 replicas: Callable[[], tuple[int, int]] = lambda: (0, 1)) -> None:
        super().__init__(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed, drop_last=False)
        self._replicas = replicas
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, start: int) -> None:
        """Start the next iteration of ``epoch`` at position ``start`` of this rank's order (once)."""
        self._resume = (epoch, start)

    def rank_order(self) -> list[int]:
        """This rank's indices of the current epoch, in order (padded like ``DistributedSampler``)."""
        rank, world = self._replicas()
        size = len(self.dataset)
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(size, generator=generator).tolist()
        total = math.ceil(size / world) * world
        order += (order * math.ceil(total / max(size, 1)))[:total - size]
        return order[rank:total:world]

    def __iter__(self) -> Iterator[int]:
        order = self.rank_order()
        resume, self._resume = self._resume, None
        if resume is not None and resume[0] == self.epoch and 0 < resume[1] < len(order):
            order = order[resume[1]:]
        return iter(order)

    def __len__(self) -> int:
        _, world = self._replicas()
        return math.ceil(len(self.dataset) / world)


class EvalShard(DistributedSampler):
    """Validation / test indices of one rank, in order and without padding: rank ``r`` of ``w`` takes
    ``r, r + w, ...``, so the ranks together see every clip exactly once (``DistributedSampler`` repeats clips to
    even out the ranks, which would count them twice in the metrics). Rank and world size are read per iteration,
    as in :class:`ResumableShuffle`."""

    def __init__(self, dataset: Dataset, *, replicas: Callable[[], tuple[int, int]] = lambda: (0, 1)) -> None:
        super().__init__(dataset, num_replicas=1, rank=0, shuffle=False, drop_last=False)
        self._replicas = replicas

    def __iter__(self) -> Iterator[int]:
        rank, world = self._replicas()
        return iter(range(rank, len(self.dataset), world))

    def __len__(self) -> int:
        rank, world = self._replicas()
        return len(range(rank, len(self.dataset), world))


class ResumableLoader(DataLoader):
    """A shuffling training ``DataLoader`` over a :class:`ResumableShuffle` that resumes mid-epoch.

    ``consumed()`` returns how many batches of the current epoch the trainer has finished (Lightning:
    ``trainer.fit_loop.epoch_loop.batch_progress.current.processed``); :meth:`state_dict` stores it with the epoch,
    and :meth:`load_state_dict` makes the restored epoch skip those batches.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, seed: int, num_workers: int = 0,
                 replicas: Callable[[], tuple[int, int]] = lambda: (0, 1),
                 consumed: Callable[[], int] = lambda: 0) -> None:
        sampler = ResumableShuffle(dataset, seed=seed, replicas=replicas)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                         generator=torch.Generator().manual_seed(seed), persistent_workers=num_workers > 0,
                         drop_last=False)
        self.consumed = consumed

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": int(self.sampler.epoch), "batches": int(self.consumed())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.resume_at(int(state["epoch"]), int(state["batches"]) * self.batch_size)
