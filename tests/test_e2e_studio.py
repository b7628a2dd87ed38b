"""End to end: a person plays `aesthetic studio` in headless Chromium, the ratings are published as a SAC
snapshot, the real dagster-daemon's inbox sensor backfills it, and the warehouse, the shards and the asset's
metadata hold exactly what was clicked (issue 31). Slow: one studio server and one daemon for the module."""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.sac import sac_images
from cli.main import _studio_publisher
from critic.decision import Thresholds
from critic.scoring import Critic
from critic.studio import PICK_RATING, Studio
from critic.studio_app import StudioService
from ingest.sample_data import write_sample_data
from pipelines.instance import prepare_instance
from pipelines.resources import build_resources
from tests.helpers.browser import SCREENSHOTS, chromium, wait_for_text
from tests.helpers.critic_models import save_test_checkpoint
from tests.helpers.dagster_services import dagster_daemon, start_sensor
from warehouse.db import connect

pytestmark = pytest.mark.slow

RATED = {2: "7", 10: "0"}  # tile index (the critic's order) -> key pressed: 7, and 0 for 10
PICKED_RANKS = [30, 25, 1]  # two variants the critic ranked low, then its own choice


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("studio-e2e")
    home, raw = base / "home", base / "raw"
    write_sample_data(raw, ava=0, sac=12, kuler=0, seed=5)
    assert dg.materialize([sac_images], resources=build_resources(home, raw),
                          instance=dg.DagsterInstance.ephemeral()).success
    # The demo's input size (crop 96 / resize 108) on an untrained network: the path is the promoted model's.
    critic = Critic.from_checkpoint(save_test_checkpoint(base / "model.pt", crop=96, resize=108), version="e2e")
    studio = Studio(critic, home / "studio", thresholds=Thresholds(top_fraction=0.5))
    with StudioService(studio, _studio_publisher(raw), "127.0.0.1", 0) as server:
        yield {"base": base, "home": home, "raw": raw, "server": server}


def _sac_rows(home: Path) -> tuple[set[str], set[str]]:
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        images = {r[0] for r in conn.execute("SELECT image_id FROM images WHERE dataset = 'sac'").fetchall()}
        hists = {r[0] for r in conn.execute("SELECT image_id FROM histograms WHERE dataset = 'sac'").fetchall()}
    return images, hists


def _play(driver, base_url: str) -> dict:
    """Three rounds: rate two variants of round 1 with keys, pick by Enter, double-click and key; publish."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def tiles():
        return driver.find_elements(By.CSS_SELECTOR, ".tile")

    def wait_for(cond, what: str, timeout_s: float = 120):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if cond():
                    return
            except StaleElementReferenceException:  # render() replaced the tiles between finding and reading one
                pass
            time.sleep(0.2)
        raise AssertionError(f"{what} not on the page: {driver.find_element(By.TAG_NAME, 'body').text[:1500]}")

    driver.get(base_url)
    driver.find_element(By.ID, "rater").send_keys("Hana")
    driver.find_element(By.ID, "new").click()
    wait_for(lambda: len(tiles()) == 32, "round 1")
    clicked = {"rated": {}, "picked": []}
    for index, key in RATED.items():
        tiles()[index].click()
        ActionChains(driver).send_keys(key).perform()
        wait_for(lambda i=index: "rated" in tiles()[i].get_attribute("class"), f"the rating of tile {index}")
        clicked["rated"][int(tiles()[index].get_attribute("data-id"))] = 10 if key == "0" else int(key)
    for r, rank in enumerate(PICKED_RANKS, start=1):
        tile = tiles()[rank - 1]
        assert int(tile.get_attribute("data-rank")) == rank
        clicked["picked"].append(int(tile.get_attribute("data-id")))
        if r == 1:
            tile.click()
            ActionChains(driver).send_keys(Keys.ENTER).perform()
        elif r == 2:
            ActionChains(driver).double_click(tile).perform()
        else:  # the cursor starts on the critic's choice
            ActionChains(driver).send_keys("p").perform()
        wait_for(lambda n=r + 1: f"round {n}," in driver.find_element(By.ID, "where").text, f"round {r + 1}")
    # The page's figures match the clicks: one agreement in three picks, at the critic's ranks 30, 25 and 1.
    wait_for_text(driver, ["critic's choice", "your pick", "agreed with the critic in 1 of 3 picks (33%)",
                           "critic's rank of your picks: 30, 25, 1"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / "studio-round-4.png"))
    driver.find_element(By.ID, "publish").click()
    clicked["message"] = wait_for_text(driver, ["published 5 ratings as "])
    driver.save_screenshot(str(SCREENSHOTS / "studio-published.png"))
    return clicked


def test_a_person_plays_three_rounds_publishes_and_the_sensor_backfills_exactly_those_ratings(world, tmp_path):
    server, home, raw = world["server"], world["home"], world["raw"]
    host, port = server.server_address
    images_before, hists_before = _sac_rows(home)
    dagster_home = world["base"] / "dagster"
    env = {**os.environ, "AESTHETIC_HOME": str(home), "AESTHETIC_RAW": str(raw),
           "DAGSTER_HOME": str(prepare_instance(dagster_home))}
    starting = start_sensor(env, "sac_inbox_sensor")  # loads the code location while the person plays
    driver = chromium(tmp_path)
    try:
        clicked = _play(driver, f"http://{host}:{port}/")
    finally:
        driver.quit()
        _, err = starting.communicate(timeout=300)
    assert starting.returncode == 0, err.decode()[-2000:]
    inbox = raw / "sac" / "inbox"
    snapshot = inbox / "studio-1-1.sqlite"
    assert [p.name for p in inbox.iterdir()] == [snapshot.name] and str(snapshot) in clicked["message"]
    expected = {**{i: PICK_RATING for i in clicked["picked"]}, **clicked["rated"]}
    with closing(sqlite3.connect(snapshot)) as con:
        assert {iid: rating for _, iid, rating in con.execute("SELECT sid, iid, rating FROM ratings")} == expected

    with dagster_daemon(env, world["base"] / "logs"):
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            deadline, runs = time.monotonic() + 600, []
            while time.monotonic() < deadline:
                runs = instance.get_runs(dg.RunsFilter(job_name="sac_backfill"))
                if runs and runs[0].is_finished:
                    break
                time.sleep(2)
            assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS, (
                world["base"] / "logs" / "daemon.log").read_text()[-3000:]
            assert runs[0].tags["dagster/partition"].startswith("studio-1-1-")
            event = instance.get_latest_materialization_event(dg.AssetKey("sac_snapshots"))
            meta = event.asset_materialization.metadata

    images_after, hists_after = _sac_rows(home)
    new = {str(i) for i in expected}
    assert images_after - images_before == new and hists_after - hists_before == new
    assert images_before <= images_after and hists_before <= hists_after
    assert (meta["studio_picks"].value, meta["studio_agreed"].value) == (3, 1)
    assert meta["studio_agreement"].value == pytest.approx(1 / 3)
    studio = next(iter(meta["studio"].value.values()))
    assert studio["pick_ranks"] == PICKED_RANKS and studio["ratings"] == 5
    in_shards = {i for f in (home / "shards" / "sac").glob("*/*.parquet")
                 for i in pq.read_table(f, columns=["image_id"]).column("image_id").to_pylist()}
    assert new <= in_shards, "the backfill run rebuilt the SAC shards the nightly retraining reads"
