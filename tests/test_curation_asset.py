"""Asset group `curation` in real Dagster: our own shards by default, metadata, report folder, failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.curation import curated_corpus, default_shards
from critic.settings import DETECTORS
from pipelines.resources import build_resources
from tests.helpers.critic_models import register_model
from tests.helpers.tiny_training import write_tiny_shards
from tests.test_curate import write_corpus


def _materialize(home: Path, config: dict | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [curated_corpus], resources=build_resources(home=home, raw=home / "raw"),
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        run_config={"ops": {"curated_corpus": {"config": config}}} if config else None)


@pytest.fixture
def home_with_shards(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    register_model(home, crop=96, resize=108)
    write_tiny_shards(home / "shards" / "ava" / "train", 12, size=64, per_shard=6)
    sac = home / "shards" / "sac" / "test"
    tars = write_corpus(sac)
    shutil.move(tars["b"], sac / "shard-b.tar")  # listed by the index below, beside shard a
    (sac / "index.json").write_text(json.dumps({"nsamples": 19, "shardlist": [
        {"url": "a.tar", "nsamples": 13}, {"url": "shard-b.tar", "nsamples": 6}]}))
    return home


def test_curation_asset_curates_our_own_shards_and_reports(home_with_shards: Path) -> None:
    home = home_with_shards
    assert default_shards(home / "shards") == [str(home / "shards/ava/train"), str(home / "shards/sac/test")]
    config = {"similarity": 0.5, "workers": 0}
    result = _materialize(home, config)
    assert result.success
    meta = result.asset_materializations_for_node("curated_corpus")[0].metadata
    counts = dict(duckdb.sql(f"SELECT decision, count(*) FROM '{home}/curation/manifest.parquet' GROUP BY 1")
                  .fetchall())
    assert counts == {"kept": 27, "duplicate": 1, "unreadable": 3}
    assert {d: meta[d].value for d in ("kept", "low_score", "duplicate", "unreadable")} == \
        {"kept": 27, "low_score": 0, "duplicate": 1, "unreadable": 3}
    assert meta["samples"].value == 31 and meta["shards"].value == 4 and meta["duplicate_clusters"].value == 1
    assert sum(meta["score_histogram"].value["counts"]) == 28
    for name in ("histogram", "top", "bottom", "duplicates"):
        assert meta[name].value.startswith("![")
    report = Path(meta["report"].value)
    detected = meta["detected"].value  # detector -> samples it fires on (none asked to drop anything here)
    assert set(detected) == set(DETECTORS) and all(meta[d].value == 0 for d in (*DETECTORS, "exact_duplicate"))
    sheets = [f"detector-{d}.png" for d, n in detected.items() if n]
    assert sorted(p.name for p in report.iterdir()) == sorted(["bottom.png", "counts.json", "duplicates.png",
                                                                "histogram.png", "top.png", *sheets])
    assert all(meta[f"detector_{d}"].value.startswith("![") for d, n in detected.items() if n)
    doc = json.loads((report / "counts.json").read_text())
    assert doc["counts"]["duplicate"] == 1 and doc["detected"] == detected
    again = _materialize(home, config)
    assert again.asset_materializations_for_node("curated_corpus")[0].metadata["shards_skipped"].value == 4


def test_curation_asset_fails_naming_the_shard_it_could_not_open(home_with_shards: Path) -> None:
    missing = home_with_shards / "nowhere.tar"
    result = _materialize(home_with_shards, {"shards": [str(missing)], "workers": 0})
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"1 of 1 shards failed: {missing} (missing: {missing} does not exist)" in \
        failure.event_specific_data.error.message
