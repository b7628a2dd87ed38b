"""The code location's executor: one step runs in the run's process, several steps one process each."""

from __future__ import annotations

import os

import dagster as dg

from pipelines.definitions import defs
from pipelines.executor import one_step_in_process_executor
from tests.helpers import one_or_two_steps


def _step_metadata(result: dg.ExecutionResult, key: str = "pid") -> dict[str, int]:
    return {
        event.step_key: event.event_specific_data.materialization.metadata[key].value
        for event in result.all_events if event.event_type_value == "ASSET_MATERIALIZATION"
    }


def _execute(tmp_path, job_fn, run_config: dict | None = None) -> dg.ExecutionResult:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        with dg.execute_job(dg.reconstructable(job_fn), instance=instance, run_config=run_config) as result:
            assert result.success
            return result


def _run(tmp_path, job_fn, run_config: dict | None = None) -> tuple[dict[str, int], list[str]]:
    result = _execute(tmp_path, job_fn, run_config)
    return _step_metadata(result), [e.event_type_value for e in result.all_events]


def test_a_run_of_one_step_executes_it_in_the_run_process(tmp_path):
    pids, kinds = _run(tmp_path, one_or_two_steps.one_step_job)
    assert pids == {"first": os.getpid()}
    assert "STEP_WORKER_STARTING" not in kinds


def test_a_run_of_several_steps_gives_each_its_own_process(tmp_path):
    pids, kinds = _run(tmp_path, one_or_two_steps.two_step_job)
    assert set(pids) == {"first", "second"}
    assert os.getpid() not in pids.values() and pids["first"] != pids["second"]
    assert kinds.count("STEP_WORKER_STARTING") == 2


def test_step_processes_fork_from_one_forkserver_instead_of_each_starting_an_interpreter(tmp_path):
    parents = _step_metadata(_execute(tmp_path, one_or_two_steps.two_step_job), "ppid")
    # Spawned steps are children of the run's process; forked ones are children of the forkserver it started.
    assert len(set(parents.values())) == 1 and os.getpid() not in parents.values()


def test_a_start_method_in_the_run_config_is_kept(tmp_path):
    config = {"execution": {"config": {"multiprocess": {"start_method": {"spawn": {}}}}}}
    parents = _step_metadata(_execute(tmp_path, one_or_two_steps.two_step_job, config), "ppid")
    assert set(parents.values()) == {os.getpid()}


def test_a_light_step_beside_one_step_keeps_the_run_in_process(tmp_path):
    pids, kinds = _run(tmp_path, one_or_two_steps.light_and_one_step_job)
    assert pids == {"download": os.getpid(), "ingest": os.getpid()}
    assert "STEP_WORKER_STARTING" not in kinds


def test_a_light_step_beside_two_steps_still_gives_each_its_own_process(tmp_path):
    pids, kinds = _run(tmp_path, one_or_two_steps.light_and_two_steps_job)
    assert os.getpid() not in pids.values() and kinds.count("STEP_WORKER_STARTING") == 3


def test_run_config_still_chooses_in_process_for_every_step(tmp_path):
    config = {"execution": {"config": {"in_process": {}}}}
    pids, kinds = _run(tmp_path, one_or_two_steps.two_step_job, config)
    assert pids == {"first": os.getpid(), "second": os.getpid()}
    assert "STEP_WORKER_STARTING" not in kinds


def test_the_code_location_uses_it_for_every_job():
    for job in defs.get_repository_def().get_all_jobs():
        assert job.executor_def is one_step_in_process_executor, job.name
