"""The code location `aesthetics`: assembles assets, checks, resources, jobs, schedules and sensors."""

import dagster as dg

from pipelines.assets_index import all_asset_checks, all_assets
from pipelines.executor import one_step_in_process_executor
from pipelines.jobs import all_jobs
from pipelines.resources import build_resources
from pipelines.schedules import all_schedules
from pipelines.sensors import all_sensors

defs = dg.Definitions(
    assets=all_assets(),
    asset_checks=all_asset_checks(),
    resources=build_resources(),
    jobs=all_jobs(),
    schedules=all_schedules(),
    sensors=all_sensors(),
    executor=one_step_in_process_executor,
)
