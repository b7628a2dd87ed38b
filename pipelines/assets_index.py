"""Every asset and asset check of the project, gathered from the one module per stage in assets/."""

from __future__ import annotations

import dagster as dg

from assets import ava, checks, critic, curation, evaluation, kuler, sac, shards, training

STAGE_MODULES = [ava, sac, kuler, shards, training, evaluation, critic, curation]
# The contract's groups (docs/contract.md, "Asset groups"): each materialises as it stands, with no partition to choose.
GROUPS = ["ava", "sac", "kuler", "shards", "training", "evaluation", "critic", "curation"]
# Run on demand (its own job, or a group selection), not in full_pipeline: it reads every shard again, and the
# corpus it curates is often not ours.
ON_DEMAND_GROUPS = ["curation"]
# Partitioned assets sit in groups of their own: selecting one asks for partitions (`--partition`, a backfill).
PARTITIONED_GROUPS = ["sac_inbox"]


def all_assets() -> list:
    return list(dg.load_assets_from_modules(STAGE_MODULES))


def all_asset_checks() -> list:
    return list(dg.load_asset_checks_from_modules([checks, *STAGE_MODULES]))
