"""Every asset and asset check of the project: the one module per stage in assets/, and the chain's training and
evaluation assets, built from the chain table (assets/chain.py, nima_train/chain.py)."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from assets import ava, checks, critic, curation, kuler, sac, shards
from assets.chain import build_chain
from nima_train.chain import CHAIN, ChainModel

# The groups `training` and `evaluation` are built per row of the chain, not read from their modules.
STAGE_MODULES = [ava, sac, kuler, shards, critic, curation]
# The contract's groups (docs/contract.md): each materialises as it stands, with no partition to choose.
GROUPS = ["ava", "sac", "kuler", "shards", "training", "evaluation", "critic", "curation"]
# Run on demand (its own job, or a group selection), not in full_pipeline: it reads every shard again, and the
# corpus it curates is often not ours.
ON_DEMAND_GROUPS = ["curation"]
# Partitioned assets sit in groups of their own: selecting one asks for partitions (`--partition`, a backfill).
PARTITIONED_GROUPS = ["sac_inbox"]


def all_assets(chain: Sequence[ChainModel] = CHAIN) -> list:
    return [*dg.load_assets_from_modules(STAGE_MODULES), *build_chain(chain).assets.values()]


def all_asset_checks(chain: Sequence[ChainModel] = CHAIN) -> list:
    return [*dg.load_asset_checks_from_modules([checks, *STAGE_MODULES]), *build_chain(chain).checks.values()]
