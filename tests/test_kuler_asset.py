"""The kuler group end to end: real Dagster, real DuckDB file, real swatch files on tmp_path."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from assets.kuler import kuler_images
from assets.resources import WarehouseResource
from ingest.crops import sha256_file
from ingest.kuler import KulerSettings, ingest_kuler, read_themes_2014, stripe_centres, to_uint8
from ingest.paths import Paths
from ingest.sample_data import write_kuler_2011, write_sample_data
from ingest.splits import three_way_split
from pipelines.resources import build_resources
from warehouse.db import connect
from warehouse.kuler import kuler_accounting

N_THEMES = 40


@pytest.fixture
def kuler_raw(tmp_path: Path):
    """A 2014 drop with the planted faults (one rating out of range, one naming an unknown theme)."""
    return write_sample_data(tmp_path / "raw", ava=0, sac=0, kuler=N_THEMES, seed=7, faults=True)


def _materialize(tmp_path: Path, config: dict | None = None) -> dict:
    result = dg.materialize(
        [kuler_images],
        resources=build_resources(home=tmp_path / "home", raw=tmp_path / "raw"),
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"kuler_images": {"config": config}}} if config else None,
    )
    assert result.success
    return result.asset_materializations_for_node("kuler_images")[0].metadata


def _rows(home: Path, sql: str) -> list[tuple]:
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        return conn.execute(sql).fetchall()


def _snapshot(home: Path) -> dict:
    """Everything a no-op re-run must leave alone: rows with their timestamps, and the swatch files' mtimes."""
    return {
        "images": _rows(home, "SELECT * FROM images ORDER BY image_id"),
        "histograms": _rows(home, "SELECT * FROM histograms ORDER BY image_id"),
        "rejects": _rows(home, "SELECT * FROM rejects ORDER BY item_id"),
        "themes": _rows(home, "SELECT * FROM kuler_themes ORDER BY image_id"),
        "files": {p.name: p.stat().st_mtime_ns for p in (home / "images" / "kuler").glob("*.jpg")},
    }


def test_kuler_group_materializes_swatches_histograms_and_rejects_that_account_for_every_input(tmp_path, kuler_raw):
    assert kuler_images.group_names_by_key[kuler_images.key] == "kuler"
    meta = _materialize(tmp_path)
    home = tmp_path / "home"

    rejects = dict(_rows(home, "SELECT item_id, reason FROM rejects WHERE dataset = 'kuler' AND stage = 'ratings'"))
    planted = kuler_raw.faults["rating_out_of_range"] + kuler_raw.faults["unknown_theme"]
    assert sorted(rejects) == sorted(planted)
    assert rejects[kuler_raw.faults["unknown_theme"][0]].startswith("unknown theme:")

    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        acc = kuler_accounting(conn)
    assert acc["themes_accepted"] + acc["themes_rejected"] == N_THEMES == acc["images"]
    assert acc["ratings_kept"] + acc["ratings_rejected"] == kuler_raw.kuler_ratings

    themes = read_themes_2014(tmp_path / "raw" / "kuler" / "themeData.mat")
    images = _rows(home, "SELECT image_id, split, path, width, height, sha256 FROM images WHERE dataset = 'kuler'")
    for image_id, split, path, width, height, sha in images:
        assert split == three_way_split(image_id, "kuler")
        file = home / path
        assert not Path(path).is_absolute() and file.is_file() and sha256_file(file) == sha
        assert (width, height) == (256, 256)
        decoded = np.asarray(Image.open(file).convert("RGB"), dtype=int)[128, stripe_centres(256)]
        assert np.abs(decoded - to_uint8(themes.colours[int(image_id) - 1])).max() <= 2

    # high_spread: only the odd bins carry votes; the stored mean is the mean of the mapped votes.
    for counts, n, mean in _rows(home, "SELECT counts, n_ratings, mean FROM histograms WHERE dataset = 'kuler'"):
        assert all(c == 0 for c in counts[1::2]) and sum(counts) == n
        assert mean == pytest.approx(np.dot(counts, np.arange(1, 11)) / n)

    assert meta["themes_read"].value == N_THEMES and meta["ratings_rejected"].value == 2
    assert meta["rejects_by_reason"].value == {"out of range": 1, "unknown theme": 1}
    assert meta["swatches_written"].value == N_THEMES
    png = re.search(r"base64,([A-Za-z0-9+/=]+)\)", meta["preview"].value).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(png))).format == "PNG"
    assert Path(meta["preview_path"].value).is_file()


def test_second_materialization_with_same_inputs_rewrites_no_swatch_and_changes_no_row(tmp_path, kuler_raw):
    _materialize(tmp_path)
    before = _snapshot(tmp_path / "home")
    meta = _materialize(tmp_path)
    assert _snapshot(tmp_path / "home") == before
    assert meta["swatches_written"].value == 0 and meta["swatches_unchanged"].value == N_THEMES
    assert set(meta["rows_written"].value.values()) == {0}


def test_low_spread_and_new_temperature_rewrite_histograms_but_not_swatches(tmp_path, kuler_raw):
    _materialize(tmp_path)
    home = tmp_path / "home"
    before = _snapshot(home)
    meta = _materialize(tmp_path, {"mapping": "low_spread", "softmax_temperature": 4.0})
    after = _snapshot(home)
    assert after["images"] == before["images"] and after["files"] == before["files"]
    assert meta["rows_written"].value["histograms_written"] == N_THEMES
    rows = _rows(home, "SELECT counts, p_softmax FROM histograms WHERE dataset = 'kuler'")
    for counts, p_softmax in rows:
        assert list(counts[:2]) == [0, 0] and list(counts[7:]) == [0, 0, 0]
        expected = np.exp(np.array(counts) / 4.0 - max(counts) / 4.0)
        np.testing.assert_allclose(p_softmax, expected / expected.sum())
    assert {r[0] for r in _rows(home, "SELECT DISTINCT temperature FROM kuler_themes")} == {4.0}


def test_2011_release_gives_pseudo_histograms_and_replaces_the_2014_rows(tmp_path, kuler_raw):
    _materialize(tmp_path)
    report = write_kuler_2011(tmp_path / "raw", n=30, seed=5, faults=True, filename="kulerData.mat")
    meta = _materialize(tmp_path, {"release": "2011", "file_2011": "kulerData.mat"})
    home = tmp_path / "home"
    rejects = _rows(home, "SELECT item_id, reason FROM rejects WHERE dataset = 'kuler' ORDER BY item_id")
    assert [r[0] for r in rejects] == report.faults["target_out_of_range"]  # the 2014 rating rejects are gone
    hist = _rows(home, "SELECT image_id, counts, n_ratings FROM histograms WHERE dataset = 'kuler'")
    assert len(hist) == 28 and all(n == 100 and sum(c) == 100 for _, c, n in hist)
    assert {r[0] for r in _rows(home, "SELECT DISTINCT release FROM kuler_themes")} == {"2011"}
    assert len(list((home / "images" / "kuler").glob("*.jpg"))) == 28
    assert meta["swatches_removed"].value == N_THEMES - 28
    assert meta["ratings_read"].value == 30 and meta["ratings_rejected"].value == 2


def test_2011_normal_spread_takes_its_deviation_from_2014_ratings_in_the_same_drop(tmp_path, kuler_raw):
    write_kuler_2011(tmp_path / "raw", n=30, seed=5, filename="mturkData.mat")
    meta = _materialize(tmp_path, {"release": "2011", "spread_2011": "normal"})
    assert "normal pseudo-votes" in meta["labels"].value
    assert "median per-theme std of allMTurkRatings.mat" in meta["labels"].value
    home = tmp_path / "home"
    counts = _rows(home, "SELECT counts, n_ratings FROM histograms WHERE dataset = 'kuler'")
    assert all(n == 100 for _, n in counts) and max(sum(c > 0 for c in row) for row, _ in counts) > 2
    (tmp_path / "raw" / "kuler" / "themeData.mat").unlink()  # no 2014 release: the stated default
    meta = _materialize(tmp_path, {"release": "2011", "spread_2011": "normal"})
    assert "std 1.000 stars (default)" in meta["labels"].value
    meta = _materialize(tmp_path, {"release": "2011", "spread_2011": "normal", "std_2011": 0.7})
    assert "std 0.700 stars (config)" in meta["labels"].value


def test_bad_release_file_fails_the_run_with_the_loader_message(tmp_path, kuler_raw):
    (tmp_path / "raw" / "kuler" / "themeData.mat").write_bytes(b"\x00" * 64)
    result = dg.materialize(
        [kuler_images],
        resources=build_resources(home=tmp_path / "home", raw=tmp_path / "raw"),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node("kuler_images")
    assert "themeData.mat: not a readable MATLAB" in str(failure.error)


def _paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "home", tmp_path / "raw")


def test_run_killed_before_the_warehouse_write_is_completed_by_the_next_run(tmp_path, kuler_raw):
    warehouse = WarehouseResource(path=str(tmp_path / "home" / "warehouse.duckdb"))
    blocked = tmp_path / "blocked"
    blocked.mkdir()  # a folder where the database file should be: DuckDB cannot open it
    # The run's first connections (the crop folder's sweep, the shrink guard's read) work; from the third, the
    # warehouse write, on the database cannot be opened, so the run stops with every swatch written and none recorded.
    connections = iter([warehouse.connect, warehouse.connect])
    with pytest.raises(Exception):  # noqa: B017 - whatever DuckDB raises, the run must stop
        ingest_kuler(_paths(tmp_path), lambda: next(connections, WarehouseResource(path=str(blocked)).connect)(),
                     KulerSettings())
    assert len(list((tmp_path / "home" / "images" / "kuler").glob("*.jpg"))) == N_THEMES
    out = ingest_kuler(_paths(tmp_path), warehouse.connect, KulerSettings())
    # The unrecorded swatches were swept before the run and written again: no file outlives its row.
    assert out.swatches_written == N_THEMES and out.sync.images_written == N_THEMES
    recorded = {Path(p).name for (p,) in _rows(tmp_path / "home", "SELECT path FROM images")}
    assert {p.name for p in (tmp_path / "home" / "images" / "kuler").glob("*.jpg")} == recorded


def test_theme_whose_ratings_all_turn_bad_moves_from_images_to_rejects(tmp_path, kuler_raw):
    import scipy.io

    warehouse = WarehouseResource(path=str(tmp_path / "home" / "warehouse.duckdb"))
    ingest_kuler(_paths(tmp_path), warehouse.connect, KulerSettings())
    ratings_path = tmp_path / "raw" / "kuler" / "allMTurkRatings.mat"
    ratings = scipy.io.loadmat(ratings_path)["testRatings"]
    ratings[ratings[:, 1] == 3, 2] = 9  # every rating of theme row 3 now out of range
    scipy.io.savemat(ratings_path, {"testRatings": ratings})
    out = ingest_kuler(_paths(tmp_path), warehouse.connect, KulerSettings())
    with warehouse.connect(read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM images WHERE dataset = 'kuler' AND image_id = '3'").fetchone()[0] == 0
        reason = conn.execute("SELECT reason FROM rejects WHERE dataset = 'kuler' AND item_id = '3'").fetchone()[0]
        acc = kuler_accounting(conn)
    assert reason.startswith("no ratings:")
    assert out.sync.rows_removed == 1 and out.swatches_removed == 1
    assert acc["ratings_kept"] + acc["ratings_rejected"] == len(ratings)
    assert acc["themes_accepted"] + acc["themes_rejected"] == N_THEMES
