"""End to end with real processes: dagster-webserver and dagster-daemon on 127.0.0.1, the GraphQL API,
and headless Chromium looking at the UI (issue 9). Slow: the whole graph runs once for the module."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from ingest.sample_data import write_sample_data
from pipelines.instance import ensure_dagster_home
from tests.dagster_services import ROOT, dagster_services
from warehouse.db import connect

pytestmark = pytest.mark.slow

LOCATION = "aesthetics"
REPOSITORY = "__repository__"
# Short training so the module stays within a few minutes on 2 CPU cores.
FAST_TRAINING = {"epochs_full": 1, "batch_size": 16}
RUN_CONFIG = {"ops": {name: {"config": FAST_TRAINING} for name in ("nima_ava", "nima_sac", "nima_color")}}
SCREENSHOTS = Path(os.environ.get("AESTHETIC_SCREENSHOTS") or ROOT / ".aesthetic" / "screenshots")


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
    write_sample_data(raw, ava=48, sac=24, kuler=40, seed=11, faults=True)
    env = {
        **os.environ,
        "AESTHETIC_HOME": str(home),
        "AESTHETIC_RAW": str(raw),
        "DAGSTER_HOME": str(ensure_dagster_home(base / "dagster")),
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


def _chromium(download_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("Chromium and chromedriver are required (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1600,1000",
                 f"--user-data-dir={download_dir / 'profile'}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def _wait_for_text(driver, texts: list[str], timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    body = ""
    while time.monotonic() < deadline:
        body = driver.find_element("tag name", "body").text
        if all(t in body for t in texts):
            return body
        time.sleep(1)
    raise AssertionError(f"{[t for t in texts if t not in body]} not on the page; it shows:\n{body[:2000]}")


def test_browser_shows_the_asset_graph_and_the_evaluation_metrics(deployment, tmp_path):
    assert deployment["status"] == DagsterRunStatus.SUCCESS
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{deployment['port']}"
    driver = _chromium(tmp_path)
    try:
        driver.get(f"{base}/asset-groups")
        _wait_for_text(driver, ["ava_images", "sac_images", "kuler_images", "nima_ava", "eval_nima_ava"])
        driver.save_screenshot(str(SCREENSHOTS / "asset-graph.png"))
        driver.get(f"{base}/assets/eval_nima_ava")
        body = _wait_for_text(driver, ["eval_nima_ava", "srcc_mean", "binary_accuracy"])
        driver.save_screenshot(str(SCREENSHOTS / "eval-nima-ava.png"))
        assert "Materialized" in body or "materialized" in body.lower()
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
    assert result["runRequests"] == [] and "unchanged" in (result["skipReason"] or ""), result
