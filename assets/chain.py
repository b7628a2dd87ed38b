"""The one factory of the chain's Dagster definitions: per row of nima_train/chain.py a training asset, an
evaluation asset and, for a promoted row, the promotion asset and its blocking check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import dagster as dg

from assets.checks import promotion_check
from assets.evaluation import evaluation_asset, promotion_asset
from assets.training import training_asset
from nima_train.chain import CHAIN, ChainModel, check_chain


@dataclass(frozen=True)
class ChainDefinitions:
    assets: dict[str, dg.AssetsDefinition]  # asset name -> definition
    checks: dict[str, dg.AssetChecksDefinition]  # check name -> definition

    def __getitem__(self, name: str) -> dg.AssetsDefinition | dg.AssetChecksDefinition:
        return self.assets[name] if name in self.assets else self.checks[name]


@cache
def _build(chain: tuple[ChainModel, ...]) -> ChainDefinitions:
    assets, checks = {}, {}
    for model in chain:
        assets[model.name] = training_asset(model)
        assets[model.eval_asset] = evaluation_asset(model)
        if model.promoted:
            promotion = promotion_asset(model)
            assets[promotion.key.to_user_string()] = promotion
            check = promotion_check(model)
            checks[next(iter(check.check_keys)).name] = check
    return ChainDefinitions(assets, checks)


def build_chain(chain: Sequence[ChainModel] = CHAIN) -> ChainDefinitions:
    """The chain's assets and checks; the same objects for the same rows (so a test and the code location that
    build the default chain share them)."""
    return _build(check_chain(chain))
