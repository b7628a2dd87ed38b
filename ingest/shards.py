"""Shards: each dataset's labelled crops as WebDataset tars per split, and the warehouse rows that list them.

The tar writing itself (deterministic buckets, sidecars, crash safety) is ingest/shard_writer.py; the queries
are warehouse/shards.py. A crop that cannot be read becomes a `rejects` row (stage `shards`), and the next run
rewrites its shard until it is fixed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ingest.paths import Connect, Log, Paths, no_log
from ingest.shard_writer import ShardLimits, ShardSample, SplitResult, write_split
from warehouse.db import transaction
from warehouse.records import Reject, clear_rejects, record_rejects
from warehouse.shards import ShardRow, labelled_images, replace_shards

SPLITS = ("train", "val", "test")
STAGE = "shards"


@dataclass(frozen=True)
class ShardSettings:
    dataset: str
    target: str = "p_normalized"  # or "p_softmax" (the original notebook's labels); checked by the query
    limits: ShardLimits = field(default_factory=ShardLimits)


@dataclass
class ShardsReport:
    dataset: str
    splits: dict[str, SplitResult] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # reason kind -> count

    @property
    def data_version(self) -> str:
        """A hash of the split indexes: what downstream training compares to decide it is stale."""
        h = hashlib.sha256()
        for split in SPLITS:
            h.update(f"{split}:{self.splits[split].index_sha256}\n".encode())
        return h.hexdigest()[:16]


def build_shards(paths: Paths, connect: Connect, settings: ShardSettings, batch: str | None = None,
                 log: Log = no_log) -> ShardsReport:
    """Write every split of the dataset; record `shards` rows and per-image rejects. A full disk stops it with
    NoSpaceLeft (the writer removes its temporaries; the index still names whole shards only)."""
    with paths.full_disk_as_error():
        return _build_shards(paths, connect, settings, batch, log)


def _build_shards(paths: Paths, connect: Connect, settings: ShardSettings, batch: str | None,
                  log: Log) -> ShardsReport:
    dataset = settings.dataset
    out = ShardsReport(dataset)
    for split in SPLITS:
        with connect() as conn:
            rows = labelled_images(conn, dataset, split, settings.target)
        samples, rejects = [], []
        for r in rows:
            if r.counts is None:
                rejects.append(Reject(r.image_id, "unlabelled: image has no histogram row"))
                continue
            path = str(paths.from_stored(r.path))
            samples.append(ShardSample(dataset, r.image_id, split, path, r.sha256, r.counts, r.target, r.mean, r.std))
        result = write_split(samples, paths.shards_dir(dataset) / split, dataset, split, settings.target,
                             settings.limits)
        rejects += [Reject(f.image_id, f.reason) for f in result.failures]
        shard_rows = [ShardRow(paths.to_stored(result.out_dir / s.name), s.nsamples, s.filesize, s.sha256)
                      for s in result.shards]
        with connect() as conn, transaction(conn):
            replace_shards(conn, dataset, split, shard_rows)
            clear_rejects(conn, dataset, STAGE, [r.image_id for r in rows])
            record_rejects(conn, dataset, STAGE, rejects, batch)
        for r in rejects:
            kind = r.reason.split(":", 1)[0]
            out.rejected[kind] = out.rejected.get(kind, 0) + 1
        out.splits[split] = result
        log(f"{dataset}/{split}: {result.n_samples} samples in {len(result.shards)} shards, "
            f"{len(result.written)} written, {len(rejects)} rejected")
    return out
