"""The `sac` asset group in real Dagster: assets, the inbox sensor, the backfill job."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import dagster as dg
import pytest

from assets.sac import sac_images, sac_snapshot_partitions, sac_snapshots
from ingest.sac import read_snapshot
from ingest.sample_data import SAC_DB_NAME, write_sample_data
from pipelines.resources import build_resources
from warehouse.db import connect


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    out = tmp_path / "raw"
    write_sample_data(out, ava=0, sac=10, kuler=0, seed=2, faults=True)
    return out


def sensor_result(instance: dg.DagsterInstance, raw: Path, home: Path, cursor: str | None) -> dg.SensorResult:
    from pipelines.sensors import sac_inbox_sensor

    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=build_resources(home, raw))
    return sac_inbox_sensor(ctx)


def test_sac_images_materializes_crops_histograms_and_metadata(raw: Path, tmp_path: Path):
    home = tmp_path / "home"
    result = dg.materialize([sac_images], resources=build_resources(home, raw),
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    meta = result.asset_materializations_for_node("sac_images")[0].metadata
    assert meta["ratings_ignored_null"].value == 1 and meta["ratings_rejected"].value == 2
    assert meta["images_read"].value == 10 and meta["images_rejected"].value == 3
    assert meta["images_added"].value == 7 == meta["sac_histograms_total"].value
    assert meta["rejects_by_reason"].value == {"corrupt": 1, "missing": 1, "unsafe path": 1, "out of range": 2}
    assert meta["mean_score_distribution"].value.startswith("![SAC mean scores](data:image/png;base64,")
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM images WHERE dataset = 'sac'").fetchone() == (7,)


def test_inbox_sensor_adds_one_partition_and_run_per_new_snapshot(raw: Path, tmp_path: Path):
    inbox = raw / "sac" / "inbox"
    inbox.mkdir()
    shutil.copy(raw / "sac" / SAC_DB_NAME, inbox / "sac 2022-07-01.sqlite")
    shutil.copy(raw / "sac" / SAC_DB_NAME, inbox / ".sac_being_copied.sqlite")  # not renamed in yet
    instance = dg.DagsterInstance.ephemeral()
    first = sensor_result(instance, raw, tmp_path / "home", None)
    key = read_snapshot(inbox / "sac 2022-07-01.sqlite").key
    assert key.startswith("sac_2022-07-01-")
    assert [(r.partition_key, r.run_key) for r in first.run_requests] == [(key, key)]
    assert [r.partition_keys for r in first.dynamic_partitions_requests] == [[key]]
    instance.add_dynamic_partitions(sac_snapshot_partitions.name, [key])  # what the daemon does with it

    again = sensor_result(instance, raw, tmp_path / "home", first.cursor)
    assert again.run_requests == [] and again.dynamic_partitions_requests == []

    con_path = inbox / "sac_2022_08_01.sqlite"
    shutil.copy(raw / "sac" / SAC_DB_NAME, con_path)
    with closing(sqlite3.connect(con_path)) as db:  # other bytes, other key; a whole database still
        db.execute("PRAGMA user_version = 7")
    third = sensor_result(instance, raw, tmp_path / "home", again.cursor)
    assert [r.partition_key for r in third.run_requests] == [read_snapshot(con_path).key]


def test_backfill_of_two_snapshots_runs_once_and_each_adds_only_its_news(raw: Path, tmp_path: Path):
    inbox = raw / "sac" / "inbox"
    inbox.mkdir()
    shutil.copy(raw / "sac" / SAC_DB_NAME, inbox / "a.sqlite")
    shutil.copy(raw / "sac" / SAC_DB_NAME, inbox / "b.sqlite")
    with (inbox / "b.sqlite").open("ab") as fh:
        fh.write(b"\0" * 16)
    keys = [read_snapshot(inbox / n).key for n in ("a.sqlite", "b.sqlite")]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(sac_snapshot_partitions.name, keys)
    home = tmp_path / "home"
    result = dg.materialize(
        [sac_snapshots], resources=build_resources(home, raw), instance=instance,
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[1]},
    )
    assert result.success
    mats = result.asset_materializations_for_node("sac_snapshots")
    assert sorted(m.partition for m in mats) == sorted(keys)
    assert mats[0].metadata["snapshots"].value == keys
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        assert conn.execute("SELECT snapshot, ratings_new > 0 FROM sac_snapshots ORDER BY snapshot").fetchall() == [
            (keys[0], True), (keys[1], False)]


def test_definitions_keep_full_pipeline_unpartitioned_and_add_the_backfill_job_and_sensor():
    from pipelines.definitions import defs

    full = defs.resolve_job_def("full_pipeline")
    assert full.partitions_def is None
    assert dg.AssetKey("sac_images") in full.asset_layer.executable_asset_keys
    assert dg.AssetKey("sac_snapshots") not in full.asset_layer.executable_asset_keys
    assert defs.resolve_job_def("sac_job").partitions_def is None
    backfill = defs.resolve_job_def("sac_backfill")
    assert backfill.partitions_def == sac_snapshot_partitions
    assert defs.resolve_sensor_def("sac_inbox_sensor").job_name == "sac_backfill"


def _studio_snapshot(raw: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A studio snapshot as `aesthetic studio` publishes it: two rated designs of one session, one of them the
    person's pick, which the critic had ranked 5th."""
    import numpy as np
    from PIL import Image

    from ingest.sac_studio import write_studio_snapshot

    gid, sid = 10**12 + 10**6, 10**12 + 1
    iids = [gid + 1000 + 3, gid + 1000 + 9]
    files = {}
    for k, iid in enumerate(iids):
        files[f"studio/1/{iid}.png"] = tmp_path / f"{iid}.png"
        pixels = np.random.default_rng(k).integers(0, 256, (96, 96, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((256, 256)).save(files[f"studio/1/{iid}.png"])
    path = write_studio_snapshot(
        raw, "studio-1-1", generations=[(gid, sid, "aesthetic studio", "studio session 1: heart", 1)],
        images=[(i, gid, i - gid) for i in iids], paths=[(i, f"studio/1/{i}.png") for i in iids],
        ratings=[(sid, iids[0], 9, 1), (sid, iids[1], 8, 1)], picks=[(sid, iids[1], 1, iids[0], 5)], files=files)
    return Path(path), [str(i) for i in iids]


def test_sac_backfill_of_a_studio_snapshot_rebuilds_the_sac_shards_and_reports_the_picks(raw: Path, tmp_path: Path):
    import pyarrow.parquet as pq

    from pipelines.definitions import build_definitions

    home = tmp_path / "home"
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([sac_images], resources=build_resources(home, raw), instance=instance).success
    snapshot, iids = _studio_snapshot(raw, tmp_path)
    key = read_snapshot(snapshot).key
    instance.add_dynamic_partitions(sac_snapshot_partitions.name, [key])

    job = build_definitions(home=home, raw=raw).resolve_job_def("sac_backfill")
    result = job.execute_in_process(partition_key=key, instance=instance)
    assert result.success
    assert len(result.asset_materializations_for_node("sac_shards")) == 1, "the shards are rebuilt in the same run"
    meta = result.asset_materializations_for_node("sac_snapshots")[0].metadata
    assert meta["studio"].value == {key: {"ratings": 2, "picks": 1, "agreed": 0, "agreement": 0.0, "pick_ranks": [5],
                                          "mean_pick_rank": 5.0, "median_pick_rank": 5}}
    assert (meta["studio_picks"].value, meta["studio_agreed"].value) == (1, 0)
    assert meta["studio_agreement"].value == 0.0 and meta["studio_mean_pick_rank"].value == 5.0
    in_shards = {i for f in (home / "shards" / "sac").glob("*/*.parquet")
                 for i in pq.read_table(f, columns=["image_id"]).column("image_id").to_pylist()}
    assert set(iids) <= in_shards, "the shards the next nightly retraining reads hold the studio's ratings"
