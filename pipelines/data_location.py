"""The code location `data` of the two-host shape (docs/operating.md, "Two hosts"): ingest, shards, critic and
curation, the SAC inbox sensor, and the recording of the training host's model ledger into the warehouse, the one
writer of which is this host. Serve it with `dagster code-server start -m pipelines.data_location -h HOST -p PORT`.
"""

from __future__ import annotations

import dagster as dg

from pipelines.assets_index import data_asset_checks, data_assets, stubs_of
from pipelines.executor import one_step_in_process_executor
from pipelines.jobs import data_jobs
from pipelines.model_ledger import model_ledger_sensor, record_models
from pipelines.resources import build_resources, shared_home
from pipelines.sensors import all_sensors


def build_data_definitions() -> dg.Definitions:
    home, raw = shared_home()
    assets = data_assets()
    return dg.Definitions(
        assets=[*assets, *stubs_of(assets)],
        asset_checks=data_asset_checks(),
        resources=build_resources(home, raw),
        jobs=[*data_jobs(), record_models],
        sensors=[*all_sensors(), model_ledger_sensor],
        executor=one_step_in_process_executor,
    )


defs = build_data_definitions()
