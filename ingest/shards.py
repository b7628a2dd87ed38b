"""Shards: each dataset's labelled crops as WebDataset tars per split, and the warehouse rows that list them.

The tar writing itself (deterministic buckets, sidecars, crash safety) is ingest/shard_writer.py; the queries
are warehouse/shards.py. A crop that cannot be read becomes a `rejects` row (stage `shards`), and the next run
rewrites its shard until it is fixed. So does a train crop that a leak finder names as a near-duplicate of a val
or test crop (docs/shards.md, "Cross-split near-duplicates").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from common.bounds import bounded_like, check_ranges, setting
from ingest.paths import Connect, Log, Paths, no_log
from ingest.shard_writer import ShardLimits, ShardSample, SplitResult, write_split
from warehouse.db import transaction
from warehouse.records import Reject, clear_rejects, record_rejects
from warehouse.shards import ShardRow, labelled_images, replace_shards

SPLITS = ("train", "val", "test")
STAGE = "shards"

# Given every split's samples, the train samples to leave out: image_id -> reject reason. The near-duplicate
# search is the critic's (critic.leakage.leak_finder), which ingest may not import, so the caller hands it in.
LeakFinder = Callable[[Mapping[str, Sequence[ShardSample]]], Mapping[str, str]]


@dataclass(frozen=True)
class ShardSettings:
    """Which dataset, which label, and how big a tar may grow."""

    dataset: str  # supplied by the asset (one per dataset), never by the run config
    # Checked by the query that reads it (warehouse/shards.py).
    target: str = setting("p_normalized", "the label each sample carries: p_normalized, or p_softmax to "
                                          "reproduce the original notebook's labels")
    max_samples_per_shard: int = bounded_like(ShardLimits, "max_samples", "samples per tar")
    max_bytes_per_shard: int = bounded_like(ShardLimits, "max_bytes", "bytes per tar")

    def __post_init__(self) -> None:
        check_ranges(self)

    @property
    def limits(self) -> ShardLimits:
        return ShardLimits(self.max_samples_per_shard, self.max_bytes_per_shard)


@dataclass
class ShardsReport:
    dataset: str
    splits: dict[str, SplitResult] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # reason kind -> count
    dropped_leaks: dict[str, str] = field(default_factory=dict)  # train image_id -> reason

    @property
    def data_version(self) -> str:
        """A hash of the split indexes: what downstream training compares to decide it is stale."""
        h = hashlib.sha256()
        for split in SPLITS:
            h.update(f"{split}:{self.splits[split].index_sha256}\n".encode())
        return h.hexdigest()[:16]


def build_shards(paths: Paths, connect: Connect, settings: ShardSettings, batch: str | None = None,
                 log: Log = no_log, drop_leaks: LeakFinder | None = None) -> ShardsReport:
    """Write every split of the dataset; record `shards` rows and per-image rejects. A full disk stops it with
    NoSpaceLeft (the writer removes its temporaries; the index still names whole shards only).

    With `drop_leaks`, the train samples it names (near-duplicates of val or test samples) are left out of the
    train shards and recorded as rejects with its reason; without it, every labelled sample is written.
    """
    with paths.full_disk_as_error():
        return _build_shards(paths, connect, settings, batch, log, drop_leaks)


def _build_shards(paths: Paths, connect: Connect, settings: ShardSettings, batch: str | None,
                  log: Log, drop_leaks: LeakFinder | None) -> ShardsReport:
    dataset = settings.dataset
    out = ShardsReport(dataset)
    rows, samples, rejects = {}, {}, {}
    for split in SPLITS:
        with connect() as conn:
            rows[split] = labelled_images(conn, dataset, split, settings.target)
        samples[split], rejects[split] = [], []
        for r in rows[split]:
            if r.counts is None:
                rejects[split].append(Reject(r.image_id, "unlabelled: image has no histogram row"))
                continue
            path = str(paths.from_stored(r.path))
            samples[split].append(
                ShardSample(dataset, r.image_id, split, path, r.sha256, r.counts, r.target, r.mean, r.std))
    if drop_leaks is not None:
        out.dropped_leaks = dict(sorted(drop_leaks(samples).items()))
        samples["train"] = [s for s in samples["train"] if s.image_id not in out.dropped_leaks]
        rejects["train"] += [Reject(image_id, reason) for image_id, reason in out.dropped_leaks.items()]
        if out.dropped_leaks:
            log(f"{dataset}/train: {len(out.dropped_leaks)} near-duplicates of val/test samples left out")
    for split in SPLITS:
        result = write_split(samples[split], paths.shards_dir(dataset) / split, dataset, split, settings.target,
                             settings.limits)
        split_rejects = rejects[split] + [Reject(f.image_id, f.reason) for f in result.failures]
        shard_rows = [ShardRow(paths.to_stored(result.out_dir / s.name), s.nsamples, s.filesize, s.sha256)
                      for s in result.shards]
        with connect() as conn, transaction(conn):
            replace_shards(conn, dataset, split, shard_rows)
            clear_rejects(conn, dataset, STAGE, [r.image_id for r in rows[split]])
            record_rejects(conn, dataset, STAGE, split_rejects, batch)
        for r in split_rejects:
            kind = r.reason.split(":", 1)[0]
            out.rejected[kind] = out.rejected.get(kind, 0) + 1
        out.splits[split] = result
        log(f"{dataset}/{split}: {result.n_samples} samples in {len(result.shards)} shards, "
            f"{len(result.written)} written, {len(split_rejects)} rejected")
    return out
