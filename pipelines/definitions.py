"""The code location `aesthetics`: assembles assets, checks, resources, jobs, schedules and sensors."""

import warnings

import dagster as dg

from pipelines.assets_index import all_asset_checks, all_assets
from pipelines.jobs import all_jobs
from pipelines.resources import build_resources
from pipelines.schedules import all_schedules
from pipelines.sensors import all_sensors

# BackfillPolicy (SAC snapshots) and Pipes are marked beta; the warning repeats in every step's log.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

defs = dg.Definitions(
    assets=all_assets(),
    asset_checks=all_asset_checks(),
    resources=build_resources(),
    jobs=all_jobs(),
    schedules=all_schedules(),
    sensors=all_sensors(),
)
