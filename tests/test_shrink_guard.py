"""Nothing accepted is lost by accident: a Parquet id column of the wrong type is refused in one line before any image
work, and a run that would turn more than half of a stage's accepted items into rejects (a moved folder, sources
turned bad, a swapped ratings file) stops in one line before deleting anything, unless allow_shrink is set
(ingest/shrink_guard.py). Real drops, real DuckDB, real crop files, real Dagster runs."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import dagster as dg
import pytest

from assets.ava import AvaConfig, ava_images
from assets.kuler import KulerConfig, kuler_images
from ingest.archives import ArchiveError, ParquetColumns, parquet_sources
from ingest.ava import AvaSettings, ingest_ava
from ingest.fetch import Source
from ingest.kuler import KulerSettings, ingest_kuler
from ingest.paths import Paths
from ingest.sac import INBOX, SacSettings, ingest_sac, read_snapshot
from ingest.sample_data import SAC_DB_NAME, SampleReport, write_sample_data
from ingest.shrink_guard import ShrinkRefused, guard_shrink
from pipelines.resources import build_resources
from tests.helpers.archives import photos
from warehouse.db import connect

TABLES = ("images", "histograms", "rejects", "ava_crop_state", "ava_image_meta", "kuler_themes")


@pytest.fixture
def raw(sample_raw: SampleReport, tmp_path: Path) -> Path:
    """A private copy of the session's AVA drop (with its planted faults)."""
    out = tmp_path / "raw"
    shutil.copytree(sample_raw.out / "ava", out / "ava")
    return out


def run_ava(home: Path, raw: Path, **settings):
    return ingest_ava(Paths(home, raw), lambda: connect(home / "warehouse.duckdb"), AvaSettings(workers=1, **settings))


def state(home: Path) -> dict:
    """Every row the stages own and every crop file's bytes: what a stopped run must leave as it was."""
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        rows = {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}
    crops = {str(p.relative_to(home)): p.read_bytes() for p in sorted((home / "images").rglob("*.jpg"))}
    return {**rows, "crops": crops}


def accepted(home: Path, dataset: str) -> int:
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        return conn.execute("SELECT count(*) FROM images WHERE dataset = ?", [dataset]).fetchone()[0]


def accepted_ids(home: Path) -> list[str]:
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        return [r[0] for r in conn.execute("SELECT image_id FROM images ORDER BY image_id").fetchall()]


def one_line_refusal(message: str, stage: str, lost: int, before: int, kind: str) -> None:
    assert "\n" not in message
    assert message.startswith(f"{stage}: stopped before deleting anything: this run would turn {lost} of the "
                              f"{before} accepted items into rejects ({lost} {kind!r}, e.g. ")
    assert message.endswith("or set allow_shrink to accept the loss")


# --- Parquet id columns -----------------------------------------------------------------------------------------


def write_parquet_ids(dest: Path, files: list[Path], ids) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image_id": ids, "image": pa.array([p.read_bytes() for p in files], pa.binary())}),
                   dest, row_group_size=8)
    return dest


def id_column(kind: str, files: list[Path]):
    import pyarrow as pa

    ids = [int(p.stem) for p in files]
    return {"int64": pa.array(ids, pa.int64()), "double": pa.array([float(i) for i in ids], pa.float64()),
            "list<element: int64>": pa.array([[i] for i in ids], pa.list_(pa.int64()))}[kind]


@pytest.mark.parametrize("kind", ["double", "list<element: int64>"])
def test_a_float_or_list_parquet_id_column_over_accepted_images_is_refused_and_nothing_is_lost(raw, tmp_path, kind):
    files, home = photos(raw / "ava" / "images"), tmp_path / "home"
    archive = write_parquet_ids(tmp_path / "ava.parquet", files, id_column("int64", files))
    first = run_ava(home, raw, acquisition="parquet", source=archive)
    assert first.accepted >= 20
    before = state(home)
    write_parquet_ids(archive, files, id_column(kind, files))
    with pytest.raises(ArchiveError) as info:
        run_ava(home, raw, acquisition="parquet", source=archive)
    assert str(info.value) == (f"{archive}: id column 'image_id' has Arrow type {kind}; it must hold integers or "
                               "strings (123, or a file name such as 123.jpg): cast it, or set parquet_id_column")
    assert state(home) == before


def test_a_wrong_id_column_in_a_later_shard_is_refused_before_any_crop_is_made(raw, tmp_path):
    files, home = photos(raw / "ava" / "images"), tmp_path / "home"
    shards = tmp_path / "shards"
    shards.mkdir()
    write_parquet_ids(shards / "a.parquet", files[:10], id_column("int64", files[:10]))
    write_parquet_ids(shards / "b.parquet", files[10:], id_column("double", files[10:]))
    with pytest.raises(ArchiveError, match=r"b\.parquet: id column 'image_id' has Arrow type double"):
        run_ava(home, raw, acquisition="parquet", source=shards)
    assert not list((home / "images").rglob("*.jpg")) and accepted(home, "ava") == 0


def test_parquet_id_columns_of_integers_and_strings_are_read(raw, tmp_path):
    import pyarrow as pa

    files = photos(raw / "ava" / "images")[:4]
    ids = [int(p.stem) for p in files]
    columns = {"int32": pa.array(ids, pa.int32()), "uint64": pa.array(ids, pa.uint64()),
               "string": pa.array([p.name for p in files], pa.string()),
               "large_string": pa.array([str(i) for i in ids], pa.large_string()),
               "dictionary": pa.array([str(i) for i in ids]).dictionary_encode()}
    for name, column in columns.items():
        archive = write_parquet_ids(tmp_path / f"{name}.parquet", files, column)
        got = list(parquet_sources(archive, [str(i) for i in ids], ParquetColumns()))
        assert all(isinstance(g, Source) for g in got) and sorted(g.item_id for g in got) == sorted(map(str, ids))


# --- the shrink guard -------------------------------------------------------------------------------------------


def test_the_guard_stops_only_beyond_half_and_never_with_allow_shrink():
    lost = {"1": "missing: 1.jpg", "2": "missing: 2.jpg", "3": "not an image: 3.jpg"}
    guard_shrink("ava", 0, {}, False)
    guard_shrink("ava", 6, lost, False)  # exactly half
    guard_shrink("ava", 5, lost, True)
    with pytest.raises(ShrinkRefused) as info:
        guard_shrink("ava", 5, lost, False)
    assert str(info.value).startswith("ava: stopped before deleting anything: this run would turn 3 of the 5 "
                                      "accepted items into rejects (2 'missing', e.g. 'missing: 1.jpg')")


def test_an_ava_images_folder_moved_away_stops_in_one_line_and_allow_shrink_goes_on(raw, tmp_path):
    home = tmp_path / "home"
    n = run_ava(home, raw).accepted
    before = state(home)
    (raw / "ava" / "images").rename(raw / "ava" / "images.moved")
    with pytest.raises(ShrinkRefused) as info:
        run_ava(home, raw)
    one_line_refusal(str(info.value), "ava", n, n, "missing")
    assert state(home) == before
    report = run_ava(home, raw, allow_shrink=True)
    assert report.accepted == 0 and report.rejected_by_reason.get("fetch/missing", 0) >= n
    assert accepted(home, "ava") == 0 and not list((home / "images" / "ava").glob("*.jpg"))


def test_sources_turned_bad_stop_the_run_before_their_crops_and_rows_are_deleted(raw, tmp_path):
    home = tmp_path / "home"
    n = run_ava(home, raw).accepted
    before = state(home)
    for image_id in accepted_ids(home):
        (raw / "ava" / "images" / f"{image_id}.jpg").write_bytes(b"<html>not a photo any more</html>")
    with pytest.raises(ShrinkRefused) as info:
        run_ava(home, raw)
    assert f"would turn {n} of the {n} accepted items into rejects" in str(info.value)
    assert state(home) == before  # crops, images rows and crop state as they were
    report = run_ava(home, raw, allow_shrink=True)
    assert report.accepted == 0 and not list((home / "images" / "ava").glob("*.jpg"))


def test_losing_half_of_the_accepted_images_goes_on_without_allow_shrink(raw, tmp_path):
    home = tmp_path / "home"
    first = run_ava(home, raw)
    ids = accepted_ids(home)
    for image_id in ids[: len(ids) // 2]:
        (raw / "ava" / "images" / f"{image_id}.jpg").unlink()
    report = run_ava(home, raw)
    assert report.accepted == first.accepted - len(ids) // 2 == accepted(home, "ava")


def test_the_ava_asset_fails_with_the_line_and_runs_with_allow_shrink(raw, tmp_path):
    home, resources = tmp_path / "home", build_resources(home=tmp_path / "home", raw=raw)
    instance = dg.DagsterInstance.ephemeral()

    def materialize(**config):
        return dg.materialize([ava_images], run_config=dg.RunConfig({"ava_images": AvaConfig(workers=1, **config)}),
                              resources=resources, instance=instance, raise_on_error=False)

    assert materialize().success
    n, before = accepted(home, "ava"), state(home)
    (raw / "ava" / "images").rename(raw / "ava" / "images.moved")
    result = materialize()
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    one_line_refusal(failure.step_failure_data.user_failure_data.description, "ava", n, n, "missing")
    assert state(home) == before
    result = materialize(allow_shrink=True)
    assert result.success
    assert result.asset_materializations_for_node("ava_images")[0].metadata["accepted"].value == 0


def test_a_kuler_ratings_file_gone_bad_stops_before_any_swatch_changes(tmp_path):
    import scipy.io

    raw, home = tmp_path / "raw", tmp_path / "home"
    write_sample_data(raw, ava=0, sac=0, kuler=40, seed=7, faults=True)
    resources, instance = build_resources(home=home, raw=raw), dg.DagsterInstance.ephemeral()
    n = ingest_kuler(Paths(home, raw), lambda: connect(home / "warehouse.duckdb"), KulerSettings()).themes_accepted
    before = state(home)
    ratings_path = raw / "kuler" / "allMTurkRatings.mat"
    ratings = scipy.io.loadmat(ratings_path)["testRatings"]
    ratings[:, 2] = 9  # every rating out of range: no theme has a valid one
    scipy.io.savemat(ratings_path, {"testRatings": ratings})
    with pytest.raises(ShrinkRefused) as info:
        ingest_kuler(Paths(home, raw), lambda: connect(home / "warehouse.duckdb"), KulerSettings())
    one_line_refusal(str(info.value), "kuler", n, n, "no ratings")
    assert state(home) == before
    result = dg.materialize([kuler_images], run_config=dg.RunConfig({"kuler_images": KulerConfig()}),
                            resources=resources, instance=instance, raise_on_error=False)
    assert not result.success and state(home) == before
    result = dg.materialize([kuler_images], run_config=dg.RunConfig({"kuler_images": KulerConfig(allow_shrink=True)}),
                            resources=resources, instance=instance)
    assert result.asset_materializations_for_node("kuler_images")[0].metadata["themes_accepted"].value == 0
    assert accepted(home, "kuler") == 0 and not list((home / "images" / "kuler").glob("*.jpg"))


def test_sac_never_takes_an_accepted_image_away_when_its_images_folder_moves(tmp_path):
    raw, home = tmp_path / "raw", tmp_path / "home"
    write_sample_data(raw, ava=0, sac=10, kuler=0, seed=2, faults=True)
    paths, wh = Paths(home, raw), lambda: connect(home / "warehouse.duckdb")
    ingest_sac(paths, wh, SacSettings(workers=1))
    n, crops = accepted(home, "sac"), state(home)["crops"]
    assert n >= 5
    (raw / "sac" / "images").rename(raw / "sac" / "images.moved")
    inbox = raw / "sac" / INBOX
    inbox.mkdir()
    snapshot = inbox / "later.sqlite"
    shutil.copy(raw / "sac" / SAC_DB_NAME, snapshot)
    with closing(sqlite3.connect(snapshot)) as db, db:  # a later snapshot: one more image, its file not there
        gid = db.execute("SELECT max(id) + 1 FROM generations").fetchone()[0]
        iid = db.execute("SELECT max(id) + 1 FROM images").fetchone()[0]
        db.execute("INSERT INTO generations VALUES (?, 1, 'CLIP+CC12M', 'a new prompt', 1)", [gid])
        db.execute("INSERT INTO images VALUES (?, ?, 0)", [iid, gid])
        db.execute("INSERT INTO paths VALUES (?, ?)", [iid, f"{gid}_0.png"])
        db.execute("INSERT INTO ratings VALUES (999, ?, 8, 1)", [iid])
    report = ingest_sac(paths, wh, SacSettings(workers=1, snapshots=(read_snapshot(snapshot).key,)))
    assert report.snapshots[0].images_added == 0 and accepted(home, "sac") == n and state(home)["crops"] == crops
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        (reason,) = conn.execute("SELECT reason FROM rejects WHERE dataset = 'sac' AND item_id = ?",
                                 [str(iid)]).fetchone()
    assert reason.startswith("missing: ")
