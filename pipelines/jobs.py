"""Jobs are asset selections: one per stage group, and the whole graph."""

from __future__ import annotations

import dagster as dg

from pipelines.assets_index import (
    CHAIN_GROUPS,
    DATA_GROUPS,
    GROUPS,
    ON_DEMAND_GROUPS,
    PARTITIONED_GROUPS,
    PREPARE_GROUPS,
)

# Partitioned assets run through their own backfill jobs: a job may not mix partitions definitions, and
# full_pipeline must run without a partition key.
PARTITIONED = dg.AssetSelection.groups(*PARTITIONED_GROUPS)

full_pipeline_job = dg.define_asset_job(
    "full_pipeline", selection=dg.AssetSelection.all() - PARTITIONED - dg.AssetSelection.groups(*ON_DEMAND_GROUPS))

# One run per new SAC snapshot (the sensor), or one run over many (a backfill from the UI); the SAC shards are
# rebuilt in the same run, so the nightly retraining (pipelines/schedules.py) finds them changed.
sac_backfill_job = dg.define_asset_job("sac_backfill", selection=PARTITIONED | dg.AssetSelection.assets("sac_shards"))


def group_job(group: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(f"{group}_job", selection=dg.AssetSelection.groups(group) - PARTITIONED)


def all_jobs() -> list:
    return [full_pipeline_job, sac_backfill_job, *(group_job(g) for g in GROUPS)]


# The data location's "everything the models train on": full_pipeline there would include the critic, which needs
# a model the training location promotes.
data_pipeline_job = dg.define_asset_job(
    "data_pipeline", selection=dg.AssetSelection.groups(*PREPARE_GROUPS),
    description="ingest and shards: what the training location's nightly schedule trains on")


def data_jobs() -> list:
    """The data location's jobs (two-host shape)."""
    return [data_pipeline_job, sac_backfill_job, *(group_job(g) for g in DATA_GROUPS)]


def chain_jobs() -> list:
    """The training location's jobs besides nightly_retrain, which its schedule brings."""
    return [group_job(g) for g in CHAIN_GROUPS]
