"""The code location's executor: Dagster's default (multiprocess, or in-process by config), except that a run of
a single step executes that step in the run's own process.

A step subprocess exists to run steps side by side and to isolate them from each other; a run with one step
has neither need, and the subprocess costs it a second interpreter start, a second import of Dagster and the
code location, and a wait for its exit (docs/ava.md has the measured fixed cost). Steps tagged light
(`aesthetic/step: light`: the download assets, I/O only, nothing heavy imported) do not count, so one stage step
with its download still runs in process. Single-asset materialisations from the UI or the CLI, sensor runs of
one snapshot and `--select group:ava` (ava_archive, then ava_images) are such runs; `full_pipeline` and every
run of several other steps keep one process per step. The run config is the default executor's
(`execution: config: multiprocess|in_process`).

Those step processes start from a forkserver that has already imported Dagster and the code location (Dagster's
own `start_method: forkserver`, preloading the job's module), where Dagster's default spawns a fresh interpreter
that imports both again for every step (docs/operating.md has the measured cost). A run config that names a
`start_method` keeps it.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
from dagster._core.definitions.executor_definition import (
    _core_in_process_executor_creation,
    _core_multiprocess_executor_creation,
    multi_or_in_process_executor,
)
from dagster._core.execution.retries import RetryMode
from dagster._core.execution.step_dependency_config import StepDependencyConfig
from dagster._core.executor.base import Executor

from assets.downloads import LIGHT

LIGHT_KEY, LIGHT_VALUE = next(iter(LIGHT.items()))
# No preload_modules: Dagster then preloads the module the job was loaded from (the code location).
FORKSERVER = {"forkserver": {}}


class OneStepInProcess(Executor):
    """The multiprocess executor for plans of several steps, an in-process one (same retries) for one step."""

    def __init__(self, multiprocess: Executor, in_process: Executor) -> None:
        self.multiprocess, self.in_process = multiprocess, in_process

    def for_plan(self, execution_plan) -> Executor:
        keys = execution_plan.step_keys_to_execute
        heavy = [k for k in keys if (execution_plan.get_step_by_key(k).tags or {}).get(LIGHT_KEY) != LIGHT_VALUE]
        return self.in_process if len(heavy) <= 1 else self.multiprocess

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        return self.for_plan(execution_plan).execute(plan_context, execution_plan)

    @property
    def retries(self) -> RetryMode:
        return self.multiprocess.retries

    @property
    def step_dependency_config(self) -> StepDependencyConfig:
        return self.multiprocess.step_dependency_config


@dg.executor(
    name="multiprocess_one_step_in_process",
    config_schema=multi_or_in_process_executor.config_schema,
    requirements=multi_or_in_process_executor.get_requirements,
)
def one_step_in_process_executor(init_context: dg.InitExecutorContext) -> Executor:
    config = init_context.executor_config
    if "in_process" in config:
        return _core_in_process_executor_creation(config["in_process"])
    multi = config["multiprocess"]
    if multi.get("start_method") is None:
        multi = {**multi, "start_method": FORKSERVER}
    in_process = {"retries": multi["retries"], "step_dependency_config": multi.get("step_dependency_config")}
    return OneStepInProcess(_core_multiprocess_executor_creation(multi), _core_in_process_executor_creation(in_process))
