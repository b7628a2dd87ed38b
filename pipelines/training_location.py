"""The code location `training` of the two-host shape (docs/operating.md, "Two hosts"): the chain's training,
evaluation and promotion assets, the nightly schedule and its job `nightly_retrain`. Serve it on the GPU host with
`dagster code-server start -m pipelines.training_location -h HOST -p PORT`: its runs are started by that server,
on that host. It writes no warehouse rows: model rows go to the model ledger on the shared volume, which the data
location records (warehouse/ledger.py)."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from nima_train.chain import CHAIN, ChainModel
from pipelines.assets_index import chain_asset_checks, chain_assets, stubs_of
from pipelines.executor import one_step_in_process_executor
from pipelines.jobs import chain_jobs
from pipelines.resources import build_resources, shared_home
from pipelines.schedules import retrain_schedule


def build_training_definitions(chain: Sequence[ChainModel] = CHAIN) -> dg.Definitions:
    home, raw = shared_home()
    assets = chain_assets(chain)
    return dg.Definitions(
        assets=[*assets, *stubs_of(assets)],
        asset_checks=chain_asset_checks(chain),
        resources=build_resources(home, raw, ledger=True),
        jobs=chain_jobs(),
        schedules=[retrain_schedule(chain)],
        executor=one_step_in_process_executor,
    )


defs = build_training_definitions()
