"""Every asset and asset check of the project, gathered from the one module per stage in assets/."""

from __future__ import annotations

import dagster as dg

from assets import ava, checks, critic, evaluation, kuler, sac, shards, training

STAGE_MODULES = [ava, sac, kuler, shards, training, evaluation, critic]
GROUPS = ["ava", "sac", "kuler", "shards", "training", "evaluation", "critic"]


def all_assets() -> list:
    return list(dg.load_assets_from_modules(STAGE_MODULES))


def all_asset_checks() -> list:
    return list(dg.load_asset_checks_from_modules([checks, *STAGE_MODULES]))
