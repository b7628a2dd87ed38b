"""Two tiny assets under the code location's executor, for tests/test_executor.py (run by reconstructable)."""

from __future__ import annotations

import os

import dagster as dg

from assets.downloads import LIGHT
from pipelines.executor import one_step_in_process_executor


def _where() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"pid": os.getpid(), "ppid": os.getppid()})


@dg.asset
def first() -> dg.MaterializeResult:
    return _where()


@dg.asset(deps=[first])
def second() -> dg.MaterializeResult:
    return _where()


@dg.asset(op_tags=LIGHT)
def download() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"pid": os.getpid()})


@dg.asset(deps=[download])
def ingest() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"pid": os.getpid()})


def _job(name: str, selection: list) -> dg.JobDefinition:
    defs = dg.Definitions(
        assets=[first, second, download, ingest],
        jobs=[dg.define_asset_job(name, selection=selection)],
        executor=one_step_in_process_executor,
    )
    return defs.resolve_job_def(name)


def one_step_job() -> dg.JobDefinition:
    return _job("one_step", [first])


def two_step_job() -> dg.JobDefinition:
    return _job("two_steps", [first, second])


def light_and_one_step_job() -> dg.JobDefinition:
    return _job("light_and_one", [download, ingest])


def light_and_two_steps_job() -> dg.JobDefinition:
    return _job("light_and_two", [download, first, second])
