"""Asset group `shards` (see shared/DESIGN.md): each dataset's warehouse rows as WebDataset tars per split.

The writing itself is ingest/shards.py; the queries are warehouse/shards.py. An asset's data version is the
hash of its split indexes, so downstream training is triggered only when shard contents changed.
"""

import hashlib
import time
from dataclasses import dataclass, field

import dagster as dg

from assets.resources import StorageResource, WarehouseResource
from ingest.shards import DEFAULT_MAX_BYTES, DEFAULT_MAX_SAMPLES, ShardLimits, ShardSample, SplitResult, write_split
from warehouse.db import transaction
from warehouse.records import Reject, clear_rejects, record_rejects
from warehouse.shards import TARGETS, ShardRow, labelled_images, replace_shards

SPLITS = ("train", "val", "test")
STAGE = "shards"


class ShardsConfig(dg.Config):
    target: str = "p_normalized"  # or "p_softmax" to reproduce the original notebook's labels
    max_samples_per_shard: int = DEFAULT_MAX_SAMPLES
    max_bytes_per_shard: int = DEFAULT_MAX_BYTES


@dataclass
class DatasetShards:
    dataset: str
    splits: dict[str, SplitResult] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # reason kind -> count

    @property
    def data_version(self) -> str:
        h = hashlib.sha256()
        for split in SPLITS:
            h.update(f"{split}:{self.splits[split].index_sha256}\n".encode())
        return h.hexdigest()[:16]


def build_dataset_shards(
    storage: StorageResource,
    warehouse: WarehouseResource,
    dataset: str,
    target: str = "p_normalized",
    limits: ShardLimits | None = None,
    batch: str | None = None,
) -> DatasetShards:
    """Write every split of `dataset`; record shards rows and per-image rejects. Plain function (no context)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    out = DatasetShards(dataset)
    for split in SPLITS:
        with warehouse.connect() as conn:
            rows = labelled_images(conn, dataset, split, target)
        samples, rejects = [], []
        for r in rows:
            if r.counts is None:
                rejects.append(Reject(r.image_id, "unlabelled: image has no histogram row"))
                continue
            path = str(storage.from_stored(r.path))
            samples.append(ShardSample(dataset, r.image_id, split, path, r.sha256, r.counts, r.target, r.mean, r.std))
        result = write_split(samples, storage.shards_dir(dataset) / split, dataset, split, target, limits)
        rejects += [Reject(f.image_id, f.reason) for f in result.failures]
        shard_rows = [
            ShardRow(storage.to_stored(result.out_dir / s.name), s.nsamples, s.filesize, s.sha256)
            for s in result.shards
        ]
        with warehouse.connect() as conn, transaction(conn):
            replace_shards(conn, dataset, split, shard_rows)
            clear_rejects(conn, dataset, STAGE, [r.image_id for r in rows])
            record_rejects(conn, dataset, STAGE, rejects, batch)
        for r in rejects:
            kind = r.reason.split(":", 1)[0]
            out.rejected[kind] = out.rejected.get(kind, 0) + 1
        out.splits[split] = result
    return out


def _materialize(
    context: dg.AssetExecutionContext,
    config: ShardsConfig,
    storage: StorageResource,
    warehouse: WarehouseResource,
    dataset: str,
) -> dg.MaterializeResult:
    started = time.monotonic()
    limits = ShardLimits(config.max_samples_per_shard, config.max_bytes_per_shard)
    built = build_dataset_shards(storage, warehouse, dataset, config.target, limits, batch=context.run.run_id)
    splits = built.splits.values()
    n_samples = sum(r.n_samples for r in splits)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(built.data_version),
        metadata={
            "shards_written": sum(len(r.written) for r in splits),
            "shards_kept": sum(len(r.kept) for r in splits),
            "shards_removed": sum(len(r.removed) for r in splits),
            "samples": n_samples,
            "samples_per_split": dg.MetadataValue.json({r.split: r.n_samples for r in splits}),
            "shards_per_split": dg.MetadataValue.json({r.split: len(r.shards) for r in splits}),
            "bytes": sum(r.bytes for r in splits),
            "rejected_by_reason": dg.MetadataValue.json(built.rejected),
            "target": config.target,
            "indexes": dg.MetadataValue.json({r.split: str(r.index_path) for r in splits}),
            "samples_per_s": round(n_samples / max(time.monotonic() - started, 1e-9), 1),
        },
    )


@dg.asset(group_name="shards", deps=["ava_images"])
def ava_shards(
    context: dg.AssetExecutionContext, config: ShardsConfig, storage: StorageResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """AVA crops and vote histograms as WebDataset shards under shards/ava/{train,val,test}/."""
    return _materialize(context, config, storage, warehouse, "ava")


@dg.asset(group_name="shards", deps=["sac_images"])
def sac_shards(
    context: dg.AssetExecutionContext, config: ShardsConfig, storage: StorageResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """SAC crops and rating histograms as WebDataset shards under shards/sac/{train,val,test}/."""
    return _materialize(context, config, storage, warehouse, "sac")


@dg.asset(group_name="shards", deps=["kuler_images"])
def kuler_shards(
    context: dg.AssetExecutionContext, config: ShardsConfig, storage: StorageResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Kuler theme swatches and rating histograms as WebDataset shards under shards/kuler/{train,val,test}/."""
    return _materialize(context, config, storage, warehouse, "kuler")
