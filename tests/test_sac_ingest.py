"""SAC ingest on real SQLite files, a real DuckDB warehouse and real image files (ingest/sac.py)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tarfile
from collections import Counter
from functools import partial
from pathlib import Path

import duckdb
import numpy as np
import pytest

from ingest.paths import Paths
from ingest.sac import TAR_PREFIX, ImageSources, SacSettings, drop_databases, ingest_snapshot, read_snapshot, split_for
from ingest.sample_data import SAC_DB_NAME, write_sample_data
from ingest.splits import three_way_split
from warehouse.db import connect
from warehouse.sac import Candidate, SqliteExtensionUnavailable, load_sqlite_extension


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    out = tmp_path / "raw"
    write_sample_data(out, ava=0, sac=14, kuler=0, seed=5, faults=True)
    return out


def ingest(raw: Path, home: Path, db_file: Path | None = None, temperature: float = 1.0):
    sac = raw / "sac"
    db_file = db_file or drop_databases(sac, home / "tmp")[0]
    return ingest_snapshot(Paths(home, raw), partial(connect, home / "warehouse.duckdb"),
                           SacSettings(temperature=temperature, workers=1), read_snapshot(db_file))


def query(home: Path, sql: str, params: list | None = None) -> list[tuple]:
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        return conn.execute(sql, params).fetchall()


def sqlite_rows(path: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_histograms_count_votes_1_to_10_ignoring_null_and_rejecting_out_of_range(raw: Path, tmp_path: Path):
    home = tmp_path / "home"
    report = ingest(raw, home, temperature=2.0)
    db = raw / "sac" / SAC_DB_NAME
    expected: dict[str, list[int]] = {}
    for _sid, iid, rating in sqlite_rows(db, "SELECT sid, iid, rating FROM ratings ORDER BY rowid"):
        if rating is not None and 1 <= rating <= 10:
            expected.setdefault(str(iid), [0] * 10)[rating - 1] += 1
    stored = {r[0]: r[1:] for r in query(home, "SELECT image_id, counts, n_ratings, mean, p_normalized, p_softmax"
                                               " FROM histograms WHERE dataset = 'sac'")}
    accepted = {r[0] for r in query(home, "SELECT image_id FROM images WHERE dataset = 'sac'")}
    assert set(stored) == accepted and accepted
    for image_id, (counts, n, mean, p_norm, p_soft) in stored.items():
        c = np.array(expected[image_id])
        assert list(counts) == list(c) and n == c.sum()
        assert mean == pytest.approx((np.arange(1, 11) * c).sum() / c.sum())
        assert p_norm == pytest.approx(c / c.sum())
        e = np.exp(c / 2.0 - (c / 2.0).max())
        assert p_soft == pytest.approx(e / e.sum())
    rejects = dict(query(home, "SELECT item_id, reason FROM rejects WHERE stage = 'ratings'"))
    assert rejects["rating:4:2"] == "out of range: rating 11 is not an integer 1..10"
    assert rejects["rating:5:2"] == "out of range: rating 0 is not an integer 1..10"
    assert "rating:3:1" not in rejects  # NULL is not a vote, and not an error
    assert report.ratings.ignored == 1 and report.ratings.rejected == 2


def test_every_image_ends_in_images_or_rejects_with_a_reason(raw: Path, tmp_path: Path):
    home = tmp_path / "home"
    report = ingest(raw, home)
    accepted = {r[0] for r in query(home, "SELECT image_id FROM images WHERE dataset = 'sac'")}
    rejected = dict(query(home, "SELECT item_id, reason FROM rejects WHERE stage = 'image'"))
    all_ids = {str(r[0]) for r in sqlite_rows(raw / "sac" / SAC_DB_NAME, "SELECT id FROM images")}
    assert accepted | set(rejected) == all_ids and not accepted & set(rejected)
    assert report.images_read == len(all_ids) == report.images_added + report.images_rejected
    assert rejected["3"].startswith("unsafe path: '../../etc/passwd' climbs out")
    assert rejected["4"].startswith("missing: ")
    assert rejected["5"].startswith("corrupt: ")
    for image_id, path in query(home, "SELECT image_id, path FROM images WHERE dataset = 'sac'"):
        assert path == f"images/sac/{image_id}.jpg" and (home / path).is_file()


def test_text_and_fractional_ratings_and_unknown_images_become_rejects(raw: Path, tmp_path: Path):
    db = raw / "sac" / SAC_DB_NAME
    con = sqlite3.connect(db)
    con.executemany("INSERT INTO ratings VALUES (?, ?, ?, 1)",
                    [(30, 1, "seven"), (31, 1, 7.5), (32, 99999, 6), ("x", 1, 5), (33, 1, "8")])
    con.commit()
    con.close()
    home = tmp_path / "home"
    ingest(raw, home)
    rejects = dict(query(home, "SELECT item_id, reason FROM rejects WHERE stage = 'ratings'"))
    assert rejects["rating:30:1"] == "not a number: rating seven"
    assert rejects["rating:31:1"] == "out of range: rating 7.5 is not an integer 1..10"
    assert rejects["rating:32:99999"] == "unknown image: no images row with id 99999"
    assert rejects["rating:x:1"].startswith("bad id: ")
    assert "rating:33:1" not in rejects  # a number stored as text is still a vote
    assert query(home, "SELECT rating FROM sac_ratings WHERE sid = 33 AND iid = 1") == [(8,)]


def test_links_and_absolute_paths_out_of_the_image_root_are_rejected_unopened(raw: Path, tmp_path: Path):
    sac = raw / "sac"
    outside = tmp_path / "outside"
    outside.mkdir()
    # Valid images outside the root: if either were opened, it would be accepted.
    shutil.copy(sac / "images" / "1_0.png", outside / "a.png")
    os.symlink(outside / "a.png", sac / "images" / "link.png")
    os.symlink(sac / "images" / "1_0.png", sac / "images" / "inside_link.png")  # stays inside: fine
    con = sqlite3.connect(sac / SAC_DB_NAME)
    con.execute("UPDATE paths SET path = 'link.png' WHERE iid = 6")
    con.execute("UPDATE paths SET path = ? WHERE iid = 7", [str(outside / "a.png")])
    con.execute("UPDATE paths SET path = 'inside_link.png' WHERE iid = 8")
    con.commit()
    con.close()
    home = tmp_path / "home"
    ingest(raw, home)
    rejected = dict(query(home, "SELECT item_id, reason FROM rejects WHERE stage = 'image'"))
    assert rejected["6"].startswith("unsafe path: 'link.png' resolves outside")
    assert rejected["7"].startswith("unsafe path: ") and "is absolute" in rejected["7"]
    assert query(home, "SELECT count(*) FROM images WHERE image_id = '8'") == [(1,)]


def test_public_tarball_gives_the_same_crops_and_refuses_link_members(raw: Path, tmp_path: Path):
    sac = raw / "sac"
    home_dir = tmp_path / "home_dir"
    ingest(raw, home_dir)
    # The tarball layout: database and images under home/jdp/simulacra-aesthetic-captions/.
    tar_raw = tmp_path / "tar_raw"
    (tar_raw / "sac").mkdir(parents=True)
    with tarfile.open(tar_raw / "sac" / "simulacra-aesthetic-captions.tar", "w") as tar:
        tar.add(sac / SAC_DB_NAME, TAR_PREFIX + SAC_DB_NAME)
        for f in sorted((sac / "images").iterdir()):
            if f.name != "1_0.png":
                tar.add(f, TAR_PREFIX + f.name)
        link = tarfile.TarInfo(TAR_PREFIX + "1_0.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/hostname"
        tar.addfile(link)
    home_tar = tmp_path / "home_tar"
    ingest(tar_raw, home_tar)
    sql = "SELECT image_id, split, sha256 FROM images WHERE dataset = 'sac' ORDER BY image_id"
    from_dir, from_tar = query(home_dir, sql), query(home_tar, sql)
    assert [r for r in from_dir if r[0] != "1"] == from_tar
    assert query(home_tar, "SELECT reason FROM rejects WHERE item_id = '1' AND stage = 'image'") == [
        (f"unsafe path: {TAR_PREFIX}1_0.png is a link inside simulacra-aesthetic-captions.tar",)
    ]


def test_split_is_fixed_by_the_generation_so_a_prompt_never_straddles_splits(raw: Path, tmp_path: Path):
    home = tmp_path / "home"
    ingest(raw, home)
    gids = dict(sqlite_rows(raw / "sac" / SAC_DB_NAME, "SELECT CAST(id AS TEXT), gid FROM images"))
    splits = dict(query(home, "SELECT image_id, split FROM images WHERE dataset = 'sac'"))
    by_gid: dict[int, set[str]] = {}
    for image_id, split in splits.items():
        assert split == three_way_split(str(gids[image_id]), "sac")
        by_gid.setdefault(gids[image_id], set()).add(split)
    assert all(len(s) == 1 for s in by_gid.values())
    assert any(len([i for i in splits if gids[i] == g]) > 1 for g in by_gid)  # some prompts have several images
    # 80/10/10 over many generations
    counts = Counter(split_for(Candidate(None, "", g, None, True)) for g in range(20_000))
    assert abs(counts["train"] / 20_000 - 0.8) < 0.02 and abs(counts["test"] / 20_000 - 0.1) < 0.02


def test_missing_sqlite_extension_names_the_pip_fix():
    conn = duckdb.connect()
    with pytest.raises(SqliteExtensionUnavailable, match=r"pip install duckdb-extension-sqlite-scanner==1\.5\.5"):
        load_sqlite_extension(conn, "sqlite_scanner_not_installed")
    conn.close()


def test_no_database_in_the_drop_is_a_clear_error(tmp_path: Path):
    (tmp_path / "sac").mkdir()
    with pytest.raises(FileNotFoundError, match="no SAC database"):
        drop_databases(tmp_path / "sac", tmp_path / "scratch")


def test_images_naming_the_same_tarball_member_each_get_it(tmp_path: Path):
    sac = tmp_path / "sac"
    sac.mkdir()
    member = tmp_path / "a.png"
    member.write_bytes(b"not really a png")
    with tarfile.open(sac / "simulacra-aesthetic-captions.tar", "w") as tar:
        tar.add(member, TAR_PREFIX + "a.png")
    same = [Candidate(i, str(i), 1, name, True) for i, name in ((1, "a.png"), (2, "a.png"), (3, "b.png"), (4, "b.png"))]
    found = {c.iid: source for c, source, _ in ImageSources(sac).locate(same)}
    assert found[1] == found[2] == b"not really a png"
    assert all(str(found[i]).startswith("missing: b.png") for i in (3, 4))
