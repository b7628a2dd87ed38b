"""Every asset and asset check of the project: the one module per stage in assets/, and the chain's training and
evaluation assets, built from the chain table (assets/chain.py, nima_train/chain.py). The two-host shape serves
the same definitions from two code locations: the data stages, and the chain (data_* and chain_* below)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import dagster as dg

from assets import ava, checks, critic, curation, kuler, sac, shards
from assets.chain import build_chain
from nima_train.chain import CHAIN, ChainModel

# The groups `training` and `evaluation` are built per row of the chain, not read from their modules.
STAGE_MODULES = [ava, sac, kuler, shards, critic, curation]
# The contract's groups (docs/contract.md): each materialises as it stands, with no partition to choose.
GROUPS = ["ava", "sac", "kuler", "shards", "training", "evaluation", "critic", "curation"]
# What the chain factory builds (the training location of the two-host shape); the rest are the data stages.
CHAIN_GROUPS = ["training", "evaluation"]
DATA_GROUPS = [g for g in GROUPS if g not in CHAIN_GROUPS]
# What the models train on: ingest and shards, without the critic (which needs a promoted model).
PREPARE_GROUPS = ["ava", "sac", "kuler", "shards"]
# Run on demand (its own job, or a group selection), not in full_pipeline: it reads every shard again, and the
# corpus it curates is often not ours.
ON_DEMAND_GROUPS = ["curation"]
# Partitioned assets sit in groups of their own: selecting one asks for partitions (`--partition`, a backfill).
PARTITIONED_GROUPS = ["sac_inbox"]


def data_assets() -> list:
    return dg.load_assets_from_modules(STAGE_MODULES)


def chain_assets(chain: Sequence[ChainModel] = CHAIN) -> list:
    return list(build_chain(chain).assets.values())


def data_asset_checks() -> list:
    return dg.load_asset_checks_from_modules([checks, *STAGE_MODULES])


def chain_asset_checks(chain: Sequence[ChainModel] = CHAIN) -> list:
    return list(build_chain(chain).checks.values())


def all_assets(chain: Sequence[ChainModel] = CHAIN) -> list:
    return [*data_assets(), *chain_assets(chain)]


def all_asset_checks(chain: Sequence[ChainModel] = CHAIN) -> list:
    return [*data_asset_checks(), *chain_asset_checks(chain)]


def stubs_of(assets: Iterable[dg.AssetsDefinition]) -> list[dg.AssetSpec]:
    """A bare spec (no group, not materialisable here) for each asset these depend on but do not define: what
    another code location materialises, so one lineage shows across both."""
    defined = {key for a in assets for key in a.keys}
    needed = {dep for a in assets for dep in a.dependency_keys} - defined
    return [dg.AssetSpec(key) for key in sorted(needed, key=lambda k: k.to_user_string())]
