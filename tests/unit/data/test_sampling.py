"""The training order: DistributedSampler's for (seed, epoch, rank, world size), resumable mid-epoch."""
import torch
from torch.utils.data import DistributedSampler, TensorDataset

from molt.data.sampling import ResumableLoader, ResumableShuffle

DATA = TensorDataset(torch.arange(23))


def test_order_is_distributed_samplers_for_every_rank_and_epoch():
    for world in (1, 2, 3):
        for rank in range(world):
            ours = ResumableShuffle(DATA, seed=7, replicas=lambda rank=rank, world=world: (rank, world))
            theirs = DistributedSampler(DATA, num_replicas=world, rank=rank, shuffle=True, seed=7, drop_last=False)
            for epoch in (0, 1, 5):
                ours.set_epoch(epoch)
                theirs.set_epoch(epoch)
                assert list(ours) == list(theirs) and len(ours) == len(theirs)
    ours = ResumableShuffle(DATA, seed=7)
    orders = []
    for epoch in (0, 1):
        ours.set_epoch(epoch)
        orders.append(list(ours))
    assert sorted(orders[0]) == list(range(23)) and orders[0] != orders[1]


def test_resume_skips_the_consumed_batches_of_that_epoch_once():
    done = {"batches": 0}
    loader = ResumableLoader(DATA, batch_size=4, seed=3, consumed=lambda: done["batches"])
    loader.sampler.set_epoch(2)
    full = [batch[0].tolist() for batch in loader]
    done["batches"] = 2
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 2}

    resumed = ResumableLoader(DATA, batch_size=4, seed=3)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    assert [batch[0].tolist() for batch in resumed] == full[2:]
    assert [batch[0].tolist() for batch in resumed] == full          # once only
    other = ResumableLoader(DATA, batch_size=4, seed=3)
    other.load_state_dict(state)
    other.sampler.set_epoch(3)                                        # a later epoch starts at its beginning
    assert len([batch for batch in other]) == len(full) == len(other)


def test_eval_shards_cover_every_clip_once_in_order():
    from molt.data.sampling import EvalShard

    for world in (1, 2, 3, 5):
        shards = [list(EvalShard(DATA, replicas=lambda rank=rank, world=world: (rank, world))) for rank in range(world)]
        assert sorted(i for shard in shards for i in shard) == list(range(23))
        assert all(shard == sorted(shard) for shard in shards)
        assert [len(EvalShard(DATA, replicas=lambda rank=rank, world=world: (rank, world))) for rank in range(world)] \
            == [len(shard) for shard in shards]
