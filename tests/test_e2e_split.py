"""The two-host shape end to end on 127.0.0.1 with real processes (issue 29): Postgres for Dagster's storage, the
data and training code servers (each in its own folder; the training one as worker `gpu-test`), the webserver
and the daemon over workspace.split.yaml. Data runs go through the data location; the nightly schedule is
evaluated at 02:00 UTC through GraphQL and its run requests launched; the training host's models reach the
warehouse only through the model ledger. Slow: one module, everything materialised once."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient

from ingest.sample_data import write_sample_data
from pipelines import postgres
from pipelines.instance import prepare_instance
from tests.helpers.dagster_services import code_server, dagster_services, free_port
from tests.test_e2e_ui import _write_snapshot_with_new_ratings
from warehouse.db import connect
from warehouse.ledger import event_numbers, ledger_lock

pytestmark = pytest.mark.slow

REPOSITORY = "__repository__"
TINY = {"weights": "none", "epochs_full": 1, "batch_size": 8, "crop": 32, "resize": 36, "workers": 0, "device": "cpu"}
MODELS = ("nima_ava", "nima_sac", "nima_color")
# One process per run (the run's own, started by its code server): no step subprocesses to start on 2 cores.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
TERMINAL = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
DRY_RUN = """
mutation($selector: ScheduleSelector!, $ts: Float) {
  scheduleDryRun(selectorData: $selector, timestamp: $ts) {
    __typename
    ... on DryRunInstigationTick { evaluationResult {
        runRequests { runKey tags { key value } assetSelection { path } } skipReason error { message } } }
    ... on PythonError { message }
  }
}"""
START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) { __typename ... on PythonError { message } }
}"""


def _graphql(port: int, query: str, variables: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"query": query, "variables": variables}).encode())
    with urllib.request.urlopen(request, timeout=120) as resp:
        body = json.load(resp)
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    base = tmp_path_factory.mktemp("split")
    home, raw, logs = base / "home", base / "raw", base / "logs"
    write_sample_data(raw, ava=48, sac=24, kuler=120, seed=11, faults=False)
    # PostgreSQL runs as the `postgres` user when we are root: its folder lies outside pytest's private tmp tree.
    pg_data = Path(tempfile.mkdtemp(prefix="aesthetic-pg-"))
    data_port, training_port = free_port(), free_port()
    with postgres.running(pg_data, free_port()) as pg_url, pytest.MonkeyPatch.context() as mp:
        env = {**os.environ, "AESTHETIC_HOME": str(home), "AESTHETIC_RAW": str(raw), "DAGSTER_PG_URL": pg_url,
               "AESTHETIC_DATA_HOST": "127.0.0.1", "AESTHETIC_DATA_PORT": str(data_port),
               "AESTHETIC_TRAINING_HOST": "127.0.0.1", "AESTHETIC_TRAINING_PORT": str(training_port)}
        env.pop("AESTHETIC_WORKER", None)
        mp.setenv("DAGSTER_PG_URL", pg_url)  # this process reads the same instance
        env["DAGSTER_HOME"] = str(prepare_instance(base / "dagster", postgres=True))
        logs.mkdir()
        for host in ("data-host", "gpu-host"):
            (base / host).mkdir()
        with (code_server("pipelines.data_location", data_port, env, base / "data-host", logs / "data.log"),
              code_server("pipelines.training_location", training_port, {**env, "AESTHETIC_WORKER": "gpu-test"},
                          base / "gpu-host", logs / "training.log") as training_server,
              dagster_services(env, logs, workspace="workspace.split.yaml") as port,
              dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance):
            yield {"port": port, "client": DagsterGraphQLClient("127.0.0.1", port_number=port), "home": home,
                   "raw": raw, "logs": logs, "instance": instance, "training_pid": training_server.pid,
                   "ports": {"data": data_port, "training": training_port}}
    shutil.rmtree(pg_data, ignore_errors=True)


def _wait(instance: dg.DagsterInstance, run_id: str, logs: Path, timeout_s: float = 600) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.status in TERMINAL:
            assert run.status == dg.DagsterRunStatus.SUCCESS, _failure(instance, run_id, logs)
            return run
        time.sleep(1)
    raise TimeoutError(f"run {run_id} not done after {timeout_s}s:\n{_failure(instance, run_id, logs)}")


def _failure(instance: dg.DagsterInstance, run_id: str, logs: Path) -> str:
    errors = [e.message or str(e.dagster_event.event_specific_data) for e in instance.all_logs(run_id)
              if e.dagster_event and e.dagster_event.is_failure]
    return "\n".join(errors[-5:]) + "\n" + (logs / "daemon.log").read_text()[-2000:]


def _location(run: dg.DagsterRun) -> str:
    return run.remote_job_origin.location_name


def _run_worker_pid(instance: dg.DagsterInstance, run_id: str, timeout_s: float = 180) -> int:
    """The pid of the run's process, from the event its code server's child writes when it starts."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in instance.all_logs(run_id):
            found = re.match(r"Started process for run \(pid: (\d+)\)", entry.message or "")
            if found:
                return int(found.group(1))
        assert instance.get_run_by_id(run_id).status not in TERMINAL, "the run ended before its process was seen"
        time.sleep(0.5)
    raise TimeoutError(f"run {run_id} did not start within {timeout_s}s")


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: the parent's pid
        chain.append(pid)
    return chain


def _nightly_tick(split: dict) -> dict:
    """The nightly schedule evaluated at today's 02:00 UTC through GraphQL (what the daemon does at that time)."""
    at = datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0).timestamp()
    selector = {"repositoryLocationName": "training", "repositoryName": REPOSITORY, "scheduleName": "nightly_retrain"}
    tick = _graphql(split["port"], DRY_RUN, {"selector": selector, "ts": at})["scheduleDryRun"]
    assert tick["__typename"] == "DryRunInstigationTick", tick
    result = tick["evaluationResult"]
    assert result["error"] is None, result
    return result


def _launch_nightly(split: dict, request: dict) -> dg.DagsterRun:
    """Launch a run request of the tick as the daemon would, with short training; while the model ledger is held
    the run cannot finish, so its process is alive when its ancestry is read."""
    keys = [a["path"][-1] for a in request["assetSelection"]]
    config = {"ops": {k: {"config": TINY} for k in keys if k in MODELS}, **IN_PROCESS}
    tags = {t["key"]: t["value"] for t in request["tags"]}
    instance = split["instance"]
    with ledger_lock(split["home"] / "ledger"):
        run_id = split["client"].submit_job_execution("nightly_retrain", repository_location_name="training",
                                                      repository_name=REPOSITORY, run_config=config, tags=tags,
                                                      asset_selection=[[k] for k in keys])
        pid = _run_worker_pid(instance, run_id)
        assert split["training_pid"] in _ancestors(pid), "the run's process is not a child of the training server"
    return _wait(instance, run_id, split["logs"])


def _launch(split: dict, location: str, job: str, assets: list[str] | None = None) -> dg.DagsterRun:
    run_id = split["client"].submit_job_execution(job, repository_location_name=location, repository_name=REPOSITORY,
                                                  asset_selection=[[a] for a in assets] if assets else None,
                                                  run_config=IN_PROCESS)
    return _wait(split["instance"], run_id, split["logs"])


def _recorded(split: dict, timeout_s: float = 240) -> dict[str, tuple]:
    """The warehouse's model rows once every event of the model ledger is recorded, by the record_models runs
    that model_ledger_sensor (running by default in the data location) asks for."""
    events, deadline = event_numbers(split["home"] / "ledger"), time.monotonic() + timeout_s
    while _ledger_events(split["home"]) != events:
        if time.monotonic() > deadline:
            raise TimeoutError(f"ledger events {events} not recorded within {timeout_s}s:\n"
                               f"{(split['logs'] / 'daemon.log').read_text()[-3000:]}")
        time.sleep(2)
    runs = split["instance"].get_runs(dg.RunsFilter(job_name="record_models"))
    assert {_location(r) for r in runs} == {"data"}
    assert {r.tags.get("dagster/sensor_name") for r in runs} == {"model_ledger_sensor"}
    return _models(split["home"])


def _ledger_events(home: Path) -> list[int]:
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        return [r[0] for r in conn.execute("SELECT seq FROM ledger_events ORDER BY seq").fetchall()]


def _models(home: Path) -> dict[str, tuple]:
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        rows = conn.execute("SELECT version, name, worker, host, code_location, device, device_name, torch_version, "
                            "cuda_version FROM models").fetchall()
    return {r[0]: r[1:] for r in rows}


def test_the_nightly_tick_trains_every_model_on_the_training_host_and_the_data_host_records_them(split):
    data = _launch(split, "data", "data_pipeline")
    assert _location(data) == "data"
    assert json.loads(data.tags[".dagster/grpc_info"])["port"] == split["ports"]["data"]

    result = _nightly_tick(split)
    (request,) = result["runRequests"]
    assert {a["path"][-1] for a in request["assetSelection"]} == {
        *MODELS, "eval_nima_ava", "eval_nima_sac", "eval_nima_color", "production_model"}
    run = _launch_nightly(split, request)
    assert _location(run) == "training"
    assert json.loads(run.tags[".dagster/grpc_info"])["port"] == split["ports"]["training"]

    models = _recorded(split)
    assert sorted(name for name, *_ in models.values()) == sorted(MODELS)
    for name, worker, host, location, device, device_name, torch_version, cuda_version in models.values():
        assert (worker, location, device) == ("gpu-test", "training", "cpu"), name
        assert host and device_name and torch_version and cuda_version is not None, name
    with connect(split["home"] / "warehouse.duckdb", read_only=True) as conn:
        assert conn.execute("SELECT alias FROM model_aliases ORDER BY alias").fetchall() == [
            ("nima_ava",), ("nima_color",), ("nima_sac",), ("production",)]
        assert conn.execute("SELECT count(*) FROM eval_reports").fetchone()[0] == 3


def test_nothing_new_skips_and_a_new_sac_snapshot_retrains_only_sac_and_color(split):
    before = _models(split["home"])
    assert before, "runs after the first test"
    result = _nightly_tick(split)
    assert result["runRequests"] == [] and "no shards changed" in result["skipReason"], result

    raw = split["raw"]
    _write_snapshot_with_new_ratings(raw, raw / "sac" / "inbox", rated=[])
    selector = {"repositoryLocationName": "data", "repositoryName": REPOSITORY, "sensorName": "sac_inbox_sensor"}
    assert _graphql(split["port"], START_SENSOR, {"selector": selector})["startSensor"]["__typename"] == "Sensor"
    backfill = _sensor_run(split, "sac_backfill")
    assert _location(backfill) == "data"
    # The backfill run rebuilds the SAC shards itself: no other data run comes before the nightly tick.
    rebuilt = split["instance"].get_latest_materialization_event(dg.AssetKey("sac_shards"))
    assert rebuilt.run_id == backfill.run_id

    (request,) = _nightly_tick(split)["runRequests"]
    assert {a["path"][-1] for a in request["assetSelection"]} == {
        "nima_sac", "nima_color", "eval_nima_sac", "eval_nima_color", "production_model"}
    assert _location(_launch_nightly(split, request)) == "training"
    new = {v: row for v, row in _recorded(split).items() if v not in before}
    assert sorted(row[0] for row in new.values()) == ["nima_color", "nima_sac"]
    assert all(row[1] == "gpu-test" for row in new.values())


def _sensor_run(split: dict, job: str, timeout_s: float = 300) -> dg.DagsterRun:
    """The first run of `job` that a sensor asked for, once it ended."""
    instance, deadline = split["instance"], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = instance.get_runs(dg.RunsFilter(job_name=job))
        if runs:
            return _wait(instance, runs[-1].run_id, split["logs"])
        time.sleep(2)
    raise TimeoutError(f"no {job} run within {timeout_s}s:\n{(split['logs'] / 'daemon.log').read_text()[-3000:]}")

