"""Memory for the batches DataLoader workers build: shared memory, reused once the main process lets go of it.

A worker hands a tensor in shared memory to the main process as a file descriptor, without copying it (as
default_collate does for its batches). A fresh shared buffer per batch is costly, though: the kernel creates,
zeroes and maps 9.6 MB of new pages for every 64 crops of 224x224, and the main process maps and unmaps them
again (docs/shards.md has the one-off measurement). So each worker keeps a small ring of buffers (`worker_ring`)
and reuses a slot once the main process has freed every tensor that views it:

- a slot is marked busy in a flag array in shared memory when the worker takes it;
- the batch leaves the worker as a `RecycledBatch`, which the main process unpickles as the plain
  [images, targets] pair (the list DataLoader makes of a tuple) and ties a finalizer to the images' storage there;
- the finalizer clears the flag when that storage is freed: after the training step dropped the batch (with
  `pin_memory`, once the pinning thread, which receives the batch, has copied it; not exercised on the CPU-only
  test machine). A batch the consumer keeps (`list(loader)`) keeps its slot, and when every slot is
  held the worker takes a fresh buffer instead, so nothing is overwritten while anyone can still read it and
  nothing waits.

Outside a DataLoader worker every buffer is ordinary memory and batches are plain tuples.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import os
import sys
import weakref
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import torch
from torch.utils.data import get_worker_info

RING_SLOTS = 8  # a worker's in-flight batches: make_loader's prefetch_factor of 4, the one in use, pinning, spare

_MADV_POPULATE_WRITE = 23  # Linux 5.14+; older kernels answer EINVAL and the pages fault in one by one


@cache
def _madvise() -> Callable[[int, int, int], int] | None:
    if sys.platform != "linux":
        return None
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return madvise


def prefault(tensor: torch.Tensor) -> None:
    """Map every page of a fresh buffer in one call (best effort), rather than faulting a new shared-memory batch
    in page by page on its first write (docs/shards.md has the one-off measurement)."""
    madvise = _madvise()
    if madvise is None or tensor.nbytes == 0:
        return
    page = mmap.PAGESIZE
    start = tensor.data_ptr() // page * page
    madvise(start, tensor.data_ptr() + tensor.nbytes - start, _MADV_POPULATE_WRITE)


def _view(storage: torch.UntypedStorage, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def _new_shared(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    tensor = _view(torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize), shape, dtype)
    prefault(tensor)
    return tensor


class BatchRing:
    """Up to `slots` shared-memory batch buffers of one process, each reused once the consumer freed it."""

    def __init__(self, slots: int = RING_SLOTS) -> None:
        self._busy = torch.zeros(slots, dtype=torch.uint8).share_memory_()
        self._flags = self._busy.numpy()  # 1 while a batch in the slot may still be read; cleared by _release
        self._storages: list[torch.UntypedStorage | None] = [None] * slots

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, int]:
        """(an uninitialised shared tensor, its slot); slot -1 is a fresh buffer, as every slot is still held."""
        nbytes = math.prod(shape) * dtype.itemsize
        for slot, storage in enumerate(self._storages):
            if self._flags[slot]:
                continue
            if storage is None or storage.nbytes() < nbytes:
                tensor = _new_shared(shape, dtype)
                self._storages[slot] = tensor.untyped_storage()
            else:
                tensor = _view(storage, shape, dtype)
            self._flags[slot] = 1
            return tensor, slot
        return _new_shared(shape, dtype), -1

    def batch(self, images: torch.Tensor, targets: torch.Tensor, slot: int) -> RecycledBatch:
        """What the worker yields for a batch whose images view `slot` (-1: a fresh buffer, nothing to release).

        Always a RecycledBatch, so every batch reaches the main process alike: as the [images, targets] list
        DataLoader's default_convert makes of a (images, targets) tuple, in a worker or not."""
        return RecycledBatch(images, targets, self._busy, slot)


@cache
def _ring_of_process(pid: int) -> BatchRing:
    return BatchRing()


def worker_ring() -> BatchRing | None:
    """This DataLoader worker's ring (one per process: a forked worker never shares its parent's); None outside."""
    return _ring_of_process(os.getpid()) if get_worker_info() is not None else None


def _release(busy: torch.Tensor, slot: int) -> None:
    busy[slot] = 0


def _received(images: torch.Tensor, targets: torch.Tensor, busy: torch.Tensor, slot: int) -> list[torch.Tensor]:
    # Runs where the batch is unpickled: the slot is free again once this process has freed the images' memory.
    # The storage object lives exactly as long as any tensor viewing it, so its finalizer is the moment.
    if slot >= 0:
        finalizer = weakref.finalize(images.untyped_storage(), _release, busy, slot)
        finalizer.atexit = False
    return [images, targets]


class RecycledBatch:
    """(images, targets) whose images live in a ring slot. Unpacks like the pair; pickled to the main process it
    arrives as the plain [images, targets] list with the slot's release attached (see the module docstring). Not
    a tuple subclass, so DataLoader's default_convert passes it through to be pickled unchanged."""

    __slots__ = ("images", "targets", "_busy", "_slot")

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, busy: torch.Tensor, slot: int) -> None:
        self.images, self.targets, self._busy, self._slot = images, targets, busy, slot

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.images, self.targets))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        return (self.images, self.targets)[index]

    def __reduce__(self) -> tuple[Any, ...]:
        return _received, (self.images, self.targets, self._busy, self._slot)
