"""Incremental SAC snapshots: only unseen (sid, iid) ratings, only touched histograms, only new crops."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pytest

from ingest.paths import Paths
from ingest.sac import SacSettings, ingest_snapshot, read_snapshot
from ingest.sample_data import SAC_DB_NAME, write_sac_db, write_sample_data
from warehouse.db import connect, transaction
from warehouse.labels import upsert_histograms
from warehouse.sac import attach_snapshot, insert_new_ratings, new_ingest_id, stage_snapshot


def sac_tables(path: Path) -> dict[str, list[tuple]]:
    """Every row of a SAC SQLite file's four tables, in rowid order."""
    con = sqlite3.connect(path)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall()
                for t in ("generations", "images", "paths", "ratings")}
    finally:
        con.close()


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(sac dir, snapshot 1, snapshot 2): 2 adds ratings on old images and new images with their ratings."""
    raw = tmp_path_factory.mktemp("raw")
    write_sample_data(raw, ava=0, sac=16, kuler=0, seed=11, faults=True)
    sac = raw / "sac"
    tables = sac_tables(sac / SAC_DB_NAME)
    old = {i[0] for i in tables["images"] if i[0] <= 10}
    gids = {i[1] for i in tables["images"] if i[0] in old}
    # Snapshot 1: images 1..10 with their ratings, except every third rating of an odd image (those
    # arrive in snapshot 2; even images get nothing new).
    first = [r for k, r in enumerate(tables["ratings"]) if r[1] in old and (r[1] % 2 == 0 or k % 3)]
    s1, s2 = sac / "inbox" / "sac_2022_06_01.sqlite", sac / "inbox" / "sac_2022_06_29.sqlite"
    write_sac_db(s1, [g for g in tables["generations"] if g[0] in gids],
                 [i for i in tables["images"] if i[0] in old], [p for p in tables["paths"] if p[0] in old], first)
    write_sac_db(s2, tables["generations"], tables["images"], tables["paths"], tables["ratings"])
    return sac, s1, s2


def run(sac: Path, home: Path, snapshot: Path):
    return ingest_snapshot(Paths(home, sac.parent), partial(connect, home / "warehouse.duckdb"),
                           SacSettings(workers=1), read_snapshot(snapshot))


TABLES = {
    "images": "SELECT dataset, image_id, split, source_path, path, width, height, sha256 FROM images",
    "histograms": "SELECT dataset, image_id, counts, n_ratings, mean, std, p_normalized, p_softmax FROM histograms",
    "rejects": "SELECT dataset, item_id, stage, reason FROM rejects",
    "sac_ratings": "SELECT sid, iid, rating FROM sac_ratings",
    "sac_pending_histograms": "SELECT iid FROM sac_pending_histograms",
    "sac_pending_votes": "SELECT iid, rating FROM sac_pending_votes",
}


def state(home: Path, full: bool = False) -> dict[str, list[tuple]]:
    """Every warehouse table the SAC stage writes (full: with timestamps), and the crop files' bytes."""
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        out = {
            name: sorted(conn.execute(f"SELECT * FROM {name}" if full else sql).fetchall(), key=repr)
            for name, sql in TABLES.items()
        }
    out["crops"] = sorted((p.name, p.read_bytes()) for p in (home / "images" / "sac").iterdir())
    return out


def test_snapshot_1_then_2_ends_exactly_like_snapshot_2_alone(snapshots, tmp_path: Path):
    sac, s1, s2 = snapshots
    first = run(sac, tmp_path / "a", s1)
    second = run(sac, tmp_path / "a", s2)
    alone = run(sac, tmp_path / "b", s2)
    assert first.ratings_new + second.ratings_new == alone.ratings_new
    assert second.images_added > 0 and second.histograms_updated > 0
    a, b = state(tmp_path / "a"), state(tmp_path / "b")
    for table in a:
        assert a[table] == b[table], table
    assert a["images"] and a["rejects"] and not a["sac_pending_histograms"]


def test_rerunning_a_snapshot_changes_nothing(snapshots, tmp_path: Path):
    sac, _, s2 = snapshots
    home = tmp_path / "home"
    run(sac, home, s2)
    before = state(home, full=True)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (home / "images" / "sac").iterdir()}
    again = run(sac, home, s2)
    assert again.ratings_new == 0 and again.images_added == 0 and again.histograms_written == 0
    assert state(home, full=True) == before  # timestamps included
    assert {p.name: p.stat().st_mtime_ns for p in (home / "images" / "sac").iterdir()} == mtimes


def test_snapshot_2_rebuilds_only_touched_histograms_and_crops_only_new_images(snapshots, tmp_path: Path):
    sac, s1, s2 = snapshots
    home = tmp_path / "home"
    run(sac, home, s1)
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        hist_before = dict(conn.execute("SELECT image_id, updated_at FROM histograms").fetchall())
        seen = set(conn.execute("SELECT sid, iid FROM sac_ratings").fetchall())
    crops_before = {p.name: p.stat().st_mtime_ns for p in (home / "images" / "sac").iterdir()}
    run(sac, home, s2)
    con = sqlite3.connect(s2)
    new_pairs = {(s, i) for s, i, r in con.execute("SELECT sid, iid, rating FROM ratings") if r and 1 <= r <= 10}
    con.close()
    touched = {str(i) for s, i in new_pairs - seen}
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        hist_after = dict(conn.execute("SELECT image_id, updated_at FROM histograms").fetchall())
    changed = {k for k, v in hist_after.items() if hist_before.get(k) != v}
    assert changed == touched & set(hist_after)
    assert set(hist_before) - changed  # some old images had no new ratings and were left alone
    crops_after = {p.name: p.stat().st_mtime_ns for p in (home / "images" / "sac").iterdir()}
    assert {k: crops_after[k] for k in crops_before} == crops_before
    assert set(crops_after) > set(crops_before)


def test_a_kill_after_the_ratings_commit_is_finished_by_the_next_run(snapshots, tmp_path: Path):
    sac, _, s2 = snapshots
    home = tmp_path / "home"
    run(sac, home, s2)
    # Ratings committed, then the process dies before crops and histograms:
    key = read_snapshot(s2).key
    with connect(home / "warehouse.duckdb") as conn, attach_snapshot(conn, s2), transaction(conn):
        # Image 9 as an earlier snapshot left it: half its ratings, and its histogram counted from them.
        sids = [r[0] for r in conn.execute("SELECT sid FROM sac_ratings WHERE iid = 9 ORDER BY sid").fetchall()]
        assert len(sids) >= 2
        conn.execute("DELETE FROM sac_ratings WHERE iid = 9 AND sid < ?", [sids[len(sids) // 2]])
        counts = [0] * 10
        for (rating,) in conn.execute("SELECT rating FROM sac_ratings WHERE iid = 9").fetchall():
            counts[rating - 1] += 1
        upsert_histograms(conn, "sac", [("9", counts)])
        # Another cropped image whose histogram is gone, as if its ratings had arrived before its crop.
        other = int(conn.execute(
            "SELECT min(CAST(image_id AS INTEGER)) FROM histograms WHERE dataset = 'sac' AND image_id <> '9'"
        ).fetchone()[0])
        conn.execute("DELETE FROM histograms WHERE image_id = ?", [str(other)])
        conn.execute("DELETE FROM sac_ratings WHERE iid = ?", [other])
        stage_snapshot(conn, resume=False)  # the boundary stored by the first run would skip every row
        assert insert_new_ratings(conn, key, new_ingest_id()) > 0
        # The returning votes are queued: 9's to be added to its histogram, the other's counted whole.
        assert conn.execute("SELECT count(*) FROM sac_pending_votes WHERE iid = 9").fetchone()[0] == len(sids) // 2
        assert conn.execute("SELECT count(*) FROM sac_pending_votes WHERE iid = ?", [other]).fetchone()[0] > 0
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM images WHERE image_id = ?", [str(other)]).fetchone()[0] == 1
    run(sac, home, s2)
    fresh = tmp_path / "fresh"
    run(sac, fresh, s2)
    assert state(home) == state(fresh)


@pytest.fixture(scope="module")
def appended(snapshots) -> tuple[Path, Path, list, list]:
    """(sac dir, base file, rows snapshot 2 appends to it, base ratings): a file later copies grow."""
    sac, _, s2 = snapshots
    tables = sac_tables(s2)
    # A NULL rating (not a vote) first, so a rewrite that drops NULL rows renumbers every rowid after it;
    # a vote for image 999, which the base file lacks ('unknown image' until a later file adds it).
    ratings = [(7, 3, None, 1), *tables["ratings"], (21, 999, 6, 1)]
    base = sac / "grow" / "sac_base.sqlite"
    write_sac_db(base, tables["generations"], tables["images"], tables["paths"], ratings)
    # Appended later: new votes on old images, a repeat of a stored pair with another value (the first
    # row wins), a bad row for a pair that already has a vote, a vote for a pair whose earlier row was
    # rejected (sample fault rating:4:2 = 11: the reject stays beside the vote), and a NULL.
    assert (4, 2, 11, 1) in ratings
    tail = [(31, 1, 9, 1), (32, 2, 4, 1), (31, 5, 2, 1), (ratings[1][0], ratings[1][1], 1, 1),
            (ratings[2][0], ratings[2][1], 42, 1), (4, 2, 7, 1), (33, 6, None, 1)]
    return sac, base, tail, ratings


def grown(base: Path, dest: Path, tail: list, new_image: bool = False, rewrite: bool = False,
          images: Sequence[tuple[int, int, str]] = ()) -> Path:
    """A later copy of base with `tail` appended (new_image: with image 999; rewrite: NULL rows dropped
    and every rowid renumbered, as a VACUUM or a fresh export may do; images: more (id, gid, path) rows)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(base.read_bytes())
    con = sqlite3.connect(dest)
    if rewrite:
        con.executescript(
            "CREATE TABLE r2 AS SELECT * FROM ratings WHERE rating IS NOT NULL ORDER BY rowid;"
            "DROP TABLE ratings; ALTER TABLE r2 RENAME TO ratings;"
        )
    if new_image:
        con.execute("INSERT INTO images VALUES (999, 1, 9)")
        con.execute("INSERT INTO paths VALUES (999, 'missing_999.png')")
    for iid, gid, path in images:
        con.execute("INSERT INTO images VALUES (?, ?, 0)", [iid, gid])
        con.execute("INSERT INTO paths VALUES (?, ?)", [iid, path])
    con.executemany("INSERT INTO ratings VALUES (?, ?, ?, ?)", tail)
    con.commit()
    con.close()
    return dest


def test_a_snapshot_appended_to_an_ingested_file_reads_only_its_new_rows(appended, tmp_path: Path):
    sac, base, tail, ratings = appended
    later = grown(base, tmp_path / "later.sqlite", tail)
    home = tmp_path / "a"
    first = run(sac, home, base)
    second = run(sac, home, later)
    assert first.ratings_after_rowid is None and first.ratings.read == len(ratings)
    assert second.ratings_after_rowid == len(ratings)  # resumed after the base file's last row
    assert second.ratings.read == len(tail) and second.ratings.ignored == 1
    assert second.ratings_new == 4  # the repeated pair and the bad row add no vote
    assert first.images_after_rowid is None and second.images_after_rowid == 16  # the base file's images
    run(sac, tmp_path / "b", later)
    assert state(home) == state(tmp_path / "b")


def test_a_rewritten_file_is_read_whole_and_ends_like_ingesting_it_alone(appended, tmp_path: Path):
    sac, base, tail, _ = appended
    rewritten = grown(base, tmp_path / "rewritten.sqlite", tail, rewrite=True)
    home = tmp_path / "a"
    run(sac, home, base)
    again = run(sac, home, rewritten)
    assert again.ratings_after_rowid is None  # the fingerprint at the old boundary no longer matches
    run(sac, tmp_path / "b", rewritten)
    assert state(home) == state(tmp_path / "b")


def test_an_earlier_unknown_image_vote_forces_a_whole_read_once_its_image_arrives(appended, tmp_path: Path):
    sac, base, tail, _ = appended
    later = grown(base, tmp_path / "later.sqlite", tail, new_image=True)
    home = tmp_path / "a"
    run(sac, home, base)
    assert any(r[1] == "rating:21:999" and r[3].startswith("unknown image") for r in state(home)["rejects"])
    again = run(sac, home, later)
    assert again.ratings_after_rowid is None
    run(sac, tmp_path / "b", later)
    assert state(home) == state(tmp_path / "b")
    assert (21, 999, 6) in state(home)["sac_ratings"]


def test_new_images_of_an_appended_file_are_staged_alone_cropped_and_rated(appended, tmp_path: Path):
    sac, base, tail, _ = appended
    # Image 40 (after the base file's 16) with its file and two votes; image 41 whose file is missing.
    shutil.copyfile(sac / "images" / "1_0.png", sac / "images" / "grown_40.png")
    later = grown(base, tmp_path / "later.sqlite", [*tail, (51, 40, 8, 1), (52, 40, 6, 1), (53, 41, 5, 1)],
                  images=[(40, 1, "grown_40.png"), (41, 1, "grown_41.png")])
    home = tmp_path / "a"
    first = run(sac, home, base)
    second = run(sac, home, later)
    assert second.images_after_rowid == 16 and second.ratings_after_rowid is not None
    assert second.images_read == first.images_read + 2 and second.images_added == 1
    assert second.rejects_by_reason.get("missing") == first.rejects_by_reason.get("missing", 0) + 1
    a = state(home)
    assert ("sac", "40") in {(h[0], h[1]) for h in a["histograms"]}
    assert {(51, 40, 8), (52, 40, 6)} <= set(a["sac_ratings"])
    run(sac, tmp_path / "b", later)
    assert a == state(tmp_path / "b")
    # Re-running the same file stages nothing past its own end and changes nothing.
    again = run(sac, home, later)
    assert again.images_after_rowid == 41 and again.ratings_new == 0 and again.images_added == 0
    assert state(home) == a


def test_an_image_filling_a_gap_below_the_boundary_makes_the_images_staged_whole(appended, tmp_path: Path):
    sac, base, tail, _ = appended
    # A base file with 100 more (vote-less) images, 17..116, but not 52: a rowid the fingerprint's 17 spread
    # rows skip, so only the row count can notice when the later file adds image 52 below the boundary.
    gapped = tmp_path / "gapped.sqlite"
    gapped.write_bytes(base.read_bytes())
    con = sqlite3.connect(gapped)
    con.executemany("INSERT INTO images VALUES (?, 1, 0)", [(i,) for i in range(17, 117) if i != 52])
    con.executemany("INSERT INTO paths VALUES (?, ?)", [(i, f"more_{i}.png") for i in range(17, 117) if i != 52])
    con.commit()
    con.close()
    assert 52 not in {max(1, 116 * n // 16) for n in range(17)}
    later = grown(gapped, tmp_path / "later.sqlite", tail, images=[(52, 1, "more_52.png")])
    home = tmp_path / "a"
    run(sac, home, gapped)
    second = run(sac, home, later)
    assert second.ratings_after_rowid is not None
    assert second.images_after_rowid is None  # one more row at or below the boundary: read them all
    run(sac, tmp_path / "b", later)
    assert state(home) == state(tmp_path / "b")
    assert any(r[1] == "52" for r in state(home)["rejects"])  # image 52 was seen (no votes), not skipped


def test_a_ratings_only_snapshot_of_a_clean_drop_is_one_transaction_and_ends_like_it_alone(tmp_path: Path):
    raw = tmp_path / "raw"
    write_sample_data(raw, ava=0, sac=12, kuler=0, seed=5, faults=False)
    sac = raw / "sac"
    tables = sac_tables(sac / SAC_DB_NAME)
    # Image 3 has no votes in the base file ('no votes', not cropped); the later file appends its first vote
    # and one more vote on image 1.
    base = sac / "grow" / "base.sqlite"
    write_sac_db(base, tables["generations"], tables["images"], tables["paths"],
                 [r for r in tables["ratings"] if r[1] != 3])
    later = grown(base, tmp_path / "later.sqlite", [(77, 3, 8, 1), (77, 1, 5, 1)])
    home = tmp_path / "a"
    first = run(sac, home, base)
    assert first.rejects_by_reason == {"no votes": 1}
    second = run(sac, home, later)
    assert second.images_after_rowid == 12 and second.ratings_after_rowid is not None
    assert second.images_added == 1 and second.ratings_new == 2 and second.histograms_written == 2
    run(sac, tmp_path / "b", later)
    assert state(home) == state(tmp_path / "b")
    # A third file with one more vote on image 1: nothing to crop, so it is all one transaction.
    third = run(sac, home, grown(later, tmp_path / "third.sqlite", [(78, 1, 9, 1)]))
    assert third.images_added == 0 and third.histograms_written == 1 and "crops" not in third.step_seconds
    run(sac, tmp_path / "c", tmp_path / "third.sqlite")
    assert state(home) == state(tmp_path / "c")
