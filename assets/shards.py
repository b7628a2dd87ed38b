"""Asset group `shards`: each dataset's warehouse rows as WebDataset tars per split.

The stage is ingest/shards.py. An asset's data version is the hash of its split indexes, so downstream training
is triggered only when shard contents changed. Train samples that are near-duplicates of val or test samples are
left out (critic/leakage.py) unless `drop_cross_split_duplicates` is off, by the perceptual hash alone unless the
config pins a model (`leak_model`), never by whatever model is promoted; the rule is recorded with the shards
(shards/<dataset>/leak_rule.json), and the blocking checks in assets/checks.py, under that same rule, stop
training while any such pair remains.
"""

import time

import dagster as dg
from pydantic import Field

from assets.resources import StorageResource, WarehouseResource
from assets.settings_config import settings_config
from ingest.shards import ShardSettings, build_shards


class ShardsConfig(settings_config(ShardSettings, "shards", exclude=("dataset",))):
    """ShardSettings' fields (ingest/shards.py) but the dataset, which is the asset's; and the leak rule, which
    is the critic's (critic/leakage.py)."""

    drop_cross_split_duplicates: bool = Field(True, description="leave out (as rejects) train samples that are "
                                              "near-duplicates of val/test ones; off, the leakage check on this "
                                              "asset blocks training instead")
    leak_model: str = Field("", description="a model version (or an alias, resolved when the run starts) whose "
                                            "features widen the photos' near-duplicate search; recorded with the "
                                            "shards and used by their check. Empty: the perceptual hash alone "
                                            "(Kuler: by palette), whatever is promoted")


def _materialize(
    context: dg.AssetExecutionContext,
    config: ShardsConfig,
    storage: StorageResource,
    warehouse: WarehouseResource,
    dataset: str,
) -> dg.MaterializeResult:
    started = time.monotonic()
    settings = config.settings(dataset=dataset)
    from critic.leak_cache import cache_dir
    from critic.leakage import leak_finder, load_critic, record_rule, shards_rule  # torch stays out of the location

    rule = shards_rule(dataset, config.leak_model or None, warehouse.connect, storage.home_path)
    if config.leak_model and rule.model is None:
        context.log.info(f"{dataset}: leak_model {config.leak_model} not used: {rule.describe()} decides alone")
    finder, leak_meta = None, {"cross_split_duplicates": "kept (drop_cross_split_duplicates is off)"}
    searched: dict = {}
    if config.drop_cross_split_duplicates:
        # the signature and pair cache the blocking check reads too (critic/leak_cache.py)
        finder = leak_finder(rule, load_critic(rule, warehouse.connect, storage.home_path),
                             on_report=lambda report: searched.update(report.work),
                             cache=cache_dir(storage.home_path), dataset=dataset)
        leak_meta = {"cross_split_duplicates": rule.describe()}
    with storage.full_disk_as_failure():
        # Recorded before the shards are written, so the check tests them under the rule of the last run that
        # wrote them: a run that dies midway leaves at worst a check that blocks, never one that passes by
        # another rule.
        record_rule(storage.shards_dir(dataset), rule)
        built = build_shards(storage.paths(), warehouse.connect, settings, context.run.run_id, context.log.info,
                             drop_leaks=finder)
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
            **leak_meta,
            "leak_rule": dg.MetadataValue.json(rule.as_dict()),
            "cross_split_duplicates_dropped": len(built.dropped_leaks),
            "dropped_train_samples": dg.MetadataValue.json(built.dropped_leaks),
            "leak_search": dg.MetadataValue.json(searched),
        },
    )


@dg.asset(group_name="shards", deps=["ava_images"])
def ava_shards(
    context: dg.AssetExecutionContext, config: ShardsConfig, storage: StorageResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """AVA crops and vote histograms as WebDataset shards under shards/ava/{train,val,test}/."""
    return _materialize(context, config, storage, warehouse, "ava")


# sac_snapshots too: the sac_backfill run that ingests a snapshot rebuilds these shards after it, so the next
# nightly retraining sees their new data version and trains on the new ratings.
@dg.asset(group_name="shards", deps=["sac_images", "sac_snapshots"])
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
