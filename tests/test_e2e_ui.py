"""End to end with real processes: dagster-webserver and dagster-daemon on 127.0.0.1, the GraphQL API,
and headless Chromium looking at the UI (issue 9). Slow: the whole graph runs once for the module."""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.request
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient
from PIL import Image

from ingest.sample_data import write_sac_db, write_sample_data
from pipelines.instance import prepare_instance
from tests.helpers.browser import SCREENSHOTS, chromium, wait_for_text
from tests.helpers.dagster_services import dagster_services
from warehouse.db import connect

pytestmark = pytest.mark.slow

LOCATION = "aesthetics"
REPOSITORY = "__repository__"
# Short training so the module stays within a few minutes on 2 CPU cores.
FAST_TRAINING = {"epochs_full": 1, "batch_size": 16}
RUN_CONFIG = {"ops": {name: {"config": FAST_TRAINING} for name in ("nima_ava", "nima_sac", "nima_color")}}


def graphql(port: int, query: str, variables: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as resp:
        body = json.load(resp)
    assert "errors" not in body, body
    return body["data"]


def wait_for_run(client: DagsterGraphQLClient, run_id: str, timeout_s: float) -> DagsterRunStatus:
    deadline = time.monotonic() + timeout_s
    terminal = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id)
        if status in terminal:
            return status
        time.sleep(2)
    raise TimeoutError(f"run {run_id} still {status} after {timeout_s}s")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    home = base / "home"
    raw = base / "raw"
    # Enough Kuler themes for a test split of about a dozen: with two, the promotion check's SRCC is NaN whenever
    # the two predictions tie, which made the run fail by chance (seen once in CI).
    write_sample_data(raw, ava=48, sac=24, kuler=120, seed=11, faults=True)
    env = {
        **os.environ,
        "AESTHETIC_HOME": str(home),
        "AESTHETIC_RAW": str(raw),
        "DAGSTER_HOME": str(prepare_instance(base / "dagster")),
    }
    with dagster_services(env, base / "logs") as port:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        run_id = client.submit_job_execution(
            "full_pipeline", repository_location_name=LOCATION, repository_name=REPOSITORY, run_config=RUN_CONFIG
        )
        status = wait_for_run(client, run_id, timeout_s=1200)
        yield {"port": port, "client": client, "run_id": run_id, "status": status, "home": home, "raw": raw,
               "logs": base / "logs"}


def test_full_graph_launched_through_graphql_succeeds_and_fills_the_warehouse(deployment):
    assert deployment["status"] == DagsterRunStatus.SUCCESS, (deployment["logs"] / "daemon.log").read_text()[-4000:]
    with connect(deployment["home"] / "warehouse.duckdb", read_only=True) as conn:
        per_dataset = dict(conn.execute("SELECT dataset, count(*) FROM images GROUP BY ALL").fetchall())
        rejected = dict(conn.execute("SELECT dataset, count(*) FROM rejects GROUP BY ALL").fetchall())
        shard_sets = conn.execute("SELECT DISTINCT dataset, split FROM shards").fetchall()
        models = [r[0] for r in conn.execute("SELECT name FROM models ORDER BY created_at").fetchall()]
        reports = conn.execute("SELECT count(*) FROM eval_reports").fetchone()[0]
    assert set(per_dataset) == {"ava", "sac", "kuler"} and min(per_dataset.values()) > 10
    assert set(rejected) == {"ava", "sac", "kuler"}, "the planted faults must show up as rejects"
    assert {d for d, _ in shard_sets} == {"ava", "sac", "kuler"}
    assert models[:3] == ["nima_ava", "nima_sac", "nima_color"]
    assert reports >= 3


def _dismiss_welcome_dialog(driver) -> None:
    """A fresh instance greets the first visit with a newsletter dialog; a user clicks Skip."""
    for button in driver.find_elements("tag name", "button"):
        if button.text.strip() == "Skip":
            button.click()
            return


def test_browser_shows_the_asset_graph_and_the_evaluation_metrics(deployment, tmp_path):
    assert deployment["status"] == DagsterRunStatus.SUCCESS
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{deployment['port']}"
    groups = {
        "ava": ["ava_archive", "ava_images"], "sac": ["sac_download", "sac_images"], "sac_inbox": ["sac_snapshots"],
        "kuler": ["kuler_download", "kuler_images"],
        "shards": ["ava_shards", "sac_shards", "kuler_shards"], "training": ["nima_ava", "nima_sac", "nima_color"],
        "evaluation": ["eval_nima_ava", "eval_nima_sac", "eval_nima_color", "production_model"],
        "critic": ["critic_evolution", "critic_onnx"],
    }
    driver = chromium(tmp_path)
    try:
        driver.get(f"{base}/asset-groups")
        wait_for_text(driver, ["Global asset lineage", *groups])
        _dismiss_welcome_dialog(driver)
        driver.save_screenshot(str(SCREENSHOTS / "global-lineage.png"))
        for group, names in groups.items():
            driver.get(f"{base}/locations/{LOCATION}/asset-groups/{group}")
            wait_for_text(driver, names)
            driver.save_screenshot(str(SCREENSHOTS / f"group-{group}.png"))
        driver.get(f"{base}/assets/eval_nima_ava")
        body = wait_for_text(driver, ["eval_nima_ava", "srcc_mean", "lcc_mean", "binary_accuracy", "emd_r1"])
        driver.save_screenshot(str(SCREENSHOTS / "eval-nima-ava.png"))
        assert "Latest materialization" in body
    finally:
        driver.quit()


SCHEDULE_DRY_RUN = """
mutation($selector: ScheduleSelector!, $ts: Float) {
  scheduleDryRun(selectorData: $selector, timestamp: $ts) {
    __typename
    ... on DryRunInstigationTick { evaluationResult {
        runRequests { runKey jobName tags { key value } assetSelection { path } }
        skipReason error { message } } }
    ... on PythonError { message }
  }
}"""


def test_nightly_schedule_tick_requests_a_training_run_only_when_shards_changed(deployment):
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "scheduleName": "nightly_retrain"}
    tick = graphql(deployment["port"], SCHEDULE_DRY_RUN, {"selector": selector, "ts": time.time()})["scheduleDryRun"]
    assert tick["__typename"] == "DryRunInstigationTick", tick
    result = tick["evaluationResult"]
    assert result["error"] is None, result
    # The full run trained on the current shards, so the nightly tick has nothing new to learn from.
    assert result["runRequests"] == [] and "no shards changed" in (result["skipReason"] or ""), result


START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}"""
RUNS = """
query($job: String!) {
  runsOrError(filter: {pipelineName: $job}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""


def _sac_histograms(home: Path) -> dict[str, tuple]:
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        rows = conn.execute(
            "SELECT image_id, counts, updated_at FROM histograms WHERE dataset = 'sac'"
        ).fetchall()
    return {r[0]: (tuple(r[1]), r[2]) for r in rows}


def _write_snapshot_with_new_ratings(raw: Path, inbox: Path, rated: list[int]) -> int:
    """The base SAC database plus new votes on `rated` images and one new image; returns the new image id."""
    base = next((raw / "sac").glob("*.sqlite"))
    con = sqlite3.connect(base)
    try:
        tables = {t: con.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall()
                  for t in ("generations", "images", "paths", "ratings")}
    finally:
        con.close()
    new_gid = max(g[0] for g in tables["generations"]) + 1
    new_iid = max(i[0] for i in tables["images"]) + 1
    Image.new("RGB", (320, 256), (200, 40, 90)).save(raw / "sac" / "images" / f"{new_gid}_0.png")
    ratings = tables["ratings"] + [(900 + k, iid, 10, 1) for k, iid in enumerate(rated)]
    ratings += [(901, new_iid, 7, 1), (902, new_iid, 8, 1)]
    inbox.mkdir(parents=True, exist_ok=True)
    # Written under a dot name, then renamed in, as a sync tool would: the sensor skips dot files.
    tmp = inbox / ".incoming.sqlite"
    write_sac_db(
        tmp,
        tables["generations"] + [(new_gid, 1, "CLIP+CC12M", "a new prompt", 1)],
        tables["images"] + [(new_iid, new_gid, 0)],
        tables["paths"] + [(new_iid, f"{new_gid}_0.png")],
        ratings,
    )
    os.replace(tmp, inbox / "sac_2022_07_01.sqlite")
    return new_iid


def test_a_snapshot_dropped_in_the_inbox_is_run_by_the_sensor_and_changes_only_touched_images(deployment):
    assert deployment["status"] == DagsterRunStatus.SUCCESS
    port, home, raw = deployment["port"], deployment["home"], deployment["raw"]
    before = _sac_histograms(home)
    rated = sorted(int(i) for i in before)[:3]
    new_iid = _write_snapshot_with_new_ratings(raw, raw / "sac" / "inbox", rated)
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": "sac_inbox_sensor"}
    started = graphql(port, START_SENSOR, {"selector": selector})["startSensor"]
    assert started["__typename"] == "Sensor", started

    deadline, runs = time.monotonic() + 600, []  # the run rebuilds the SAC shards too
    while time.monotonic() < deadline:
        runs = graphql(port, RUNS, {"job": "sac_backfill"})["runsOrError"]["results"]
        if runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(3)
    assert len(runs) == 1 and runs[0]["status"] == "SUCCESS", runs
    tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
    assert tags["dagster/partition"].startswith("sac_2022_07_01")

    after = _sac_histograms(home)
    changed = {i for i in after if after[i] != before.get(i)}
    assert changed == {str(i) for i in rated} | {str(new_iid)}
    for iid in rated:
        assert after[str(iid)][0][9] == before[str(iid)][0][9] + 1, "the new 10-point vote is counted once"
