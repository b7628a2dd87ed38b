"""Jobs are asset selections: one per stage group, and the whole graph."""

from __future__ import annotations

import dagster as dg

from pipelines.assets_index import GROUPS, ON_DEMAND_GROUPS, PARTITIONED_GROUPS

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
