"""Worker batch memory: ring slots are reused only after the main process freed a batch, never while it is held."""

from __future__ import annotations

import pickle

import torch
from torch.utils.data import DataLoader, IterableDataset

from nima_train.batch_memory import RING_SLOTS, BatchRing, RecycledBatch, worker_ring

SHAPE = (4, 8)


class Numbered(IterableDataset):
    """Batch i is filled with i; its targets say (i, the ring slot it was built in, -1 for a fresh buffer)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def __iter__(self):
        ring = worker_ring()
        assert ring is not None, "runs in a DataLoader worker"
        for i in range(self.n):
            images, slot = ring.take(SHAPE, torch.int64)
            images.fill_(i)
            yield ring.batch(images, torch.tensor([i, slot]), slot)


def loader(n: int) -> DataLoader:
    return DataLoader(Numbered(n), batch_size=None, num_workers=1, prefetch_factor=2)


def test_batches_the_consumer_keeps_are_never_overwritten() -> None:
    kept = list(loader(3 * RING_SLOTS))
    assert all(type(batch) is list for batch in kept)  # a RecycledBatch arrives as DataLoader's pair
    for i, (images, meta) in enumerate(kept):
        assert int(meta[0]) == i
        assert torch.equal(images, torch.full(SHAPE, i))
    slots = [int(meta[1]) for _, meta in kept]
    # Every slot was taken once and never given back, so the rest of the batches came in fresh buffers.
    assert sorted(slots[:RING_SLOTS]) == list(range(RING_SLOTS)) and set(slots[RING_SLOTS:]) == {-1}


def test_slots_are_reused_once_the_consumer_lets_go() -> None:
    slots = []
    for i, (images, meta) in enumerate(loader(6 * RING_SLOTS)):
        assert torch.equal(images, torch.full(SHAPE, i))
        slots.append(int(meta[1]))
    # A few batches are in flight at once (prefetch 2, the one in hand): a few slots serve every batch.
    assert -1 not in slots and len(set(slots)) <= 4


def test_a_recycled_batch_unpacks_like_the_pair_and_unpickles_as_it() -> None:
    ring = BatchRing(slots=1)
    images, slot = ring.take(SHAPE, torch.int64)
    batch = ring.batch(images.fill_(3), torch.zeros(2), slot)
    assert isinstance(batch, RecycledBatch) and len(batch) == 2 and batch[0] is images
    first, second = batch
    assert first is images and second is batch.targets
    assert ring.take(SHAPE, torch.int64)[1] == -1  # the one slot is held: a fresh buffer, not the held one
    received = pickle.loads(pickle.dumps(batch))  # the pair, with the slot's release tied to its images
    assert type(received) is list and torch.equal(received[0], images) and torch.equal(received[1], torch.zeros(2))


def test_fresh_batch_memory_gives_the_same_batches_as_recycled_memory(tmp_path):
    from nima_train.data import make_loader
    from tests.helpers.tiny_training import write_tiny_shards

    urls = [str(p) for p in write_tiny_shards(tmp_path / "s", 24, size=64)]

    def batches(recycle: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = make_loader(urls, train=False, batch_size=8, num_workers=1, image_size=48, uint8=True,
                             recycle_batches=recycle)
        return [(images.clone(), targets.clone()) for images, targets in loader]

    recycled, fresh = batches(True), batches(False)
    assert len(recycled) == len(fresh) == 3
    for (a, ta), (b, tb) in zip(recycled, fresh, strict=True):
        assert torch.equal(a, b) and torch.equal(ta, tb)
