"""The code location `aesthetics`: assembles assets, checks, resources, jobs, schedules and sensors."""

from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from nima_train.chain import CHAIN, ChainModel
from pipelines.assets_index import all_asset_checks, all_assets
from pipelines.executor import one_step_in_process_executor
from pipelines.jobs import all_jobs
from pipelines.resources import build_resources
from pipelines.schedules import all_schedules
from pipelines.sensors import all_sensors


def build_definitions(chain: Sequence[ChainModel] = CHAIN, home: str | Path | None = None,
                      raw: str | Path | None = None) -> dg.Definitions:
    """The code location over a model chain (the project's own by default), its resources on home and raw (the
    environment's by default)."""
    return dg.Definitions(
        assets=all_assets(chain),
        asset_checks=all_asset_checks(chain),
        resources=build_resources(home, raw),
        jobs=all_jobs(),
        schedules=all_schedules(chain),
        sensors=all_sensors(),
        executor=one_step_in_process_executor,
    )


defs = build_definitions()
