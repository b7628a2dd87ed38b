"""Jobs are asset selections: one per stage group, and the whole graph."""

from __future__ import annotations

import dagster as dg

from pipelines.assets_index import GROUPS

full_pipeline_job = dg.define_asset_job("full_pipeline", selection=dg.AssetSelection.all())


def group_job(group: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(f"{group}_job", selection=dg.AssetSelection.groups(group))


def all_jobs() -> list:
    return [full_pipeline_job, *(group_job(g) for g in GROUPS)]
