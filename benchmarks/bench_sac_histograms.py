"""SAC histograms: DuckDB vs pandas on a 10M-rating SQLite file, and an incremental 1% snapshot vs a full build.

    .venv/bin/python benchmarks/bench_sac_histograms.py                 # the issue's size: 10M ratings, 1M images
    .venv/bin/python benchmarks/bench_sac_histograms.py --ratings 1000000 --images 100000   # quick look

Every measurement runs in its own subprocess, so its peak RSS (ru_maxrss) is its own:
- duckdb_query: per-image counts of ratings 1..10 (NULL and out-of-range rows are no votes) for images with a
  path, into a temp table: in one query straight from the SQLite file (the same reads and rules as pandas), and
  the pipeline's way, which first scans and classifies every row once into a temp table
  (warehouse/sac.stage_snapshot) because rejects, inserts and counts all read it;
- pandas: pd.read_sql of the needed ratings columns and paths + groupby/unstack (the usual notebook way);
- warehouse_full: the pipeline's own function (ingest/sac.ingest_snapshot) on an empty warehouse: stage,
  insert every rating into sac_ratings, build all histograms (crops are out of scope: the images rows are
  set up beforehand, untimed, as if cropped);
- warehouse_incremental: the same code on that warehouse with a later copy of the file holding 1% more
  ratings appended (read from the first file's last rowid on: warehouse/sac.resume_rowid).
The full build and the incremental run as --repeats pairs (default 3), each after os.sync(); the script
prints every pair and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate(path: Path, n_ratings: int, n_images: int, seed: int = 0) -> None:
    """A SAC-shaped SQLite file, written by DuckDB into the attached file (far faster than executemany)."""
    import duckdb

    from ingest.sample_data import SAC_SCHEMA
    from warehouse.sac import load_sqlite_extension

    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    con.executescript(SAC_SCHEMA)
    con.close()
    db = duckdb.connect()
    load_sqlite_extension(db)
    db.execute(f"ATTACH '{path}' AS s (TYPE sqlite)")
    db.execute("SELECT setseed(?)", [seed / 1000])
    n_gen = (n_images + 2) // 3
    db.execute("INSERT INTO s.generations SELECT i, 1 + i % 997, 'CLIP+CC12M', 'prompt ' || i, 1 FROM range(1, ?) t(i)",
               [n_gen + 1])
    db.execute("INSERT INTO s.images SELECT i, 1 + (i - 1) // 3, (i - 1) % 3 FROM range(1, ?) t(i)", [n_images + 1])
    db.execute(
        "INSERT INTO s.paths SELECT i, (1 + (i - 1) // 3) || '_' || ((i - 1) % 3) || '.png' FROM range(1, ?) t(i)",
        [n_images + 1],
    )
    # Ratings: uniform images, 50k raters, scores around the image's quality; 0.5% NULL, 0.01% out of range.
    db.execute(
        """INSERT INTO s.ratings
        SELECT 1 + (random() * 50000)::BIGINT % 50000 AS sid, iid,
               CASE WHEN u < 0.005 THEN NULL WHEN u < 0.0051 THEN 11
                    ELSE least(10, greatest(1, round(1 + (iid % 9) + random() * 2 - 1)))::INTEGER END,
               1
        FROM (SELECT 1 + (random() * ?)::BIGINT % ? AS iid, random() AS u FROM range(?) t(i))""",
        [n_images, n_images, n_ratings],
    )
    db.close()


def add_ratings(src: Path, dest: Path, n_new: int, n_images: int, seed: int = 1) -> None:
    """A later snapshot: a copy of src with n_new more ratings by new raters."""
    import duckdb

    from warehouse.sac import load_sqlite_extension

    shutil.copyfile(src, dest)
    db = duckdb.connect()
    load_sqlite_extension(db)
    db.execute(f"ATTACH '{dest}' AS s (TYPE sqlite)")
    db.execute("SELECT setseed(?)", [seed / 1000])
    db.execute(
        "INSERT INTO s.ratings SELECT 60000 + (random() * 50000)::BIGINT, 1 + (random() * ?)::BIGINT % ?,"
        " 1 + (random() * 10)::BIGINT % 10, 1 FROM range(?)",
        [n_images, n_images, n_new],
    )
    db.close()


# ----- the measured work, each run in a child process -----

BINS = ", ".join(f"count(*) FILTER (WHERE r.rating = {k})" for k in range(1, 11))
# Votes 1..10 per image joined to paths (NULL and out-of-range rows are not votes), into a temp table as the
# pipeline stages counts (warehouse/sac_stage_counts.sql). {votes} is either every valid row (the notebook's
# read_sql + groupby) or one vote per (sid, iid), the first row winning, as the pipeline stores them
# (warehouse/sac_insert_ratings.sql).
HISTOGRAM_SQL = f"""
CREATE OR REPLACE TEMP TABLE bench_counts AS
SELECT h.* FROM (SELECT r.iid, [{BINS}]::INTEGER[10] AS counts FROM ({{votes}}) r GROUP BY r.iid) h
WHERE h.iid IN (SELECT iid FROM sac_src.paths WHERE path IS NOT NULL)
"""
VOTES = {
    "plain": "SELECT iid, rating FROM sac_snap_ratings WHERE status = 'ok'",
    "one_per_rater": "SELECT sid, iid, arg_min(rating, row_no) AS rating FROM sac_snap_ratings"
                     " WHERE status = 'ok' GROUP BY sid, iid",
}
# The pandas reads: the columns each variant needs, every row (the filters run in pandas, as DuckDB's run in DuckDB).
PANDAS_COLUMNS = {"plain": "iid, rating", "one_per_rater": "sid, iid, rating"}
# checksum() in SQL, computed after the clock stops (the pipeline never fetches histograms into Python).
CHECKSUM_SQL = ("SELECT count(*), coalesce(sum(iid * list_sum(list_transform(counts, lambda v, k: k * v))"
                " % 1000003), 0) FROM bench_counts")


# The direct way: one query from the SQLite file to the histograms, with the same rules (and the same reads) as
# the pandas code: ratings 1..10 only (NULL and out-of-range rows are no votes), images with a path only.
DIRECT_VOTES = {
    "plain": "SELECT iid, rating FROM sac_src.ratings WHERE rating BETWEEN 1 AND 10 AND rating = floor(rating)",
    "one_per_rater": "SELECT sid, iid, arg_min(rating, rowid) AS rating FROM sac_src.ratings"
                     " WHERE rating BETWEEN 1 AND 10 AND rating = floor(rating) GROUP BY sid, iid",
}
DIRECT_SQL = f"""
CREATE OR REPLACE TEMP TABLE bench_counts AS
SELECT r.iid, [{BINS}]::INTEGER[10] AS counts FROM ({{votes}}) r
WHERE r.iid IN (SELECT iid FROM sac_src.paths WHERE path IS NOT NULL)
GROUP BY r.iid
"""


def run_duckdb_query(db_path: str) -> dict:
    import duckdb

    from warehouse.sac import stage_snapshot, with_snapshot

    def checksum(conn: duckdb.DuckDBPyConnection, result: dict) -> dict:
        images, check = conn.execute(CHECKSUM_SQL).fetchone()
        return {**result, "images": images, "checksum": int(check)}

    out = {}
    for name, votes in DIRECT_VOTES.items():
        def direct(conn: duckdb.DuckDBPyConnection, votes: str = votes) -> dict:
            t0 = time.perf_counter()
            conn.execute(DIRECT_SQL.format(votes=votes))
            return checksum(conn, {"seconds": time.perf_counter() - t0})

        conn = duckdb.connect()
        out["direct", name] = with_snapshot(conn, db_path, direct)
        conn.close()
    for name, votes in VOTES.items():
        def staged(conn: duckdb.DuckDBPyConnection, votes: str = votes) -> dict:
            t0 = time.perf_counter()
            stage_snapshot(conn, resume=False)  # the pipeline's one classified scan of the ratings
            t1 = time.perf_counter()
            conn.execute(HISTOGRAM_SQL.format(votes=votes))
            t2 = time.perf_counter()
            return checksum(conn, {"seconds": t2 - t0, "stage_seconds": t1 - t0, "histogram_seconds": t2 - t1})

        conn = duckdb.connect()
        out["staged", name] = with_snapshot(conn, db_path, staged)
        conn.close()
    return {f"{way}:{name}": r for (way, name), r in out.items()}


def run_pandas(db_path: str) -> dict:
    import pandas as pd

    out = {}
    for name, columns in PANDAS_COLUMNS.items():
        con = sqlite3.connect(db_path)
        t0 = time.perf_counter()
        ratings = pd.read_sql(f"SELECT {columns} FROM ratings", con)
        paths = pd.read_sql("SELECT iid, path FROM paths", con)
        ratings = ratings.dropna(subset=["rating"])
        ratings = ratings[ratings["rating"].between(1, 10) & (ratings["rating"] % 1 == 0)]
        ratings = ratings[ratings["iid"].isin(paths.loc[paths["path"].notna(), "iid"])]
        if name == "one_per_rater":
            ratings = ratings.drop_duplicates(["sid", "iid"], keep="first")
        counts = ratings.groupby(["iid", "rating"]).size().unstack(fill_value=0)
        counts = counts.reindex(columns=range(1, 11), fill_value=0)
        seconds = time.perf_counter() - t0
        weighted = (counts.to_numpy() * np.arange(1, 11)).sum(axis=1)
        out[name] = {"seconds": seconds, "images": len(counts),
                     "checksum": int((counts.index.to_numpy(np.int64) * weighted % 1_000_003).sum())}
        con.close()
        del ratings, paths, counts
    return out


def _warehouse_pass(warehouse: str, snapshot: str) -> dict:
    """ingest/sac.ingest_snapshot itself, after hashing the file; every image already has its crop, so no
    image is read and the histograms are stored in the ratings' transaction, as for any ratings-only backfill."""
    from functools import partial

    from ingest.paths import Paths
    from ingest.sac import SacSettings, ingest_snapshot, read_snapshot
    from warehouse.db import connect

    t0 = time.perf_counter()
    snap = read_snapshot(snapshot)  # hashing the file is part of a snapshot's cost
    hashed = time.perf_counter() - t0
    paths = Paths(Path(warehouse).parent, Path(warehouse).parent / "no_images")
    report = ingest_snapshot(paths, partial(connect, warehouse), SacSettings(workers=1), snap)
    seconds = time.perf_counter() - t0
    steps = {"hash file": hashed, **report.step_seconds}
    steps["connect, attach, commit, close"] = seconds - sum(steps.values())
    return {"seconds": seconds, "ratings_read": report.ratings.read, "ratings_new": report.ratings_new,
            "after_rowid": report.ratings_after_rowid, "histograms_written": report.histograms_written,
            "images_added": report.images_added, "steps": {k: round(v, 2) for k, v in steps.items()}}


def run_warehouse_full(warehouse: str, snapshot: str, n_images: int) -> dict:
    from warehouse.db import connect

    with connect(warehouse) as conn:  # untimed set-up: every image already has its crop
        conn.execute(
            "INSERT INTO images SELECT 'sac', CAST(i AS VARCHAR), 'train', NULL, 'images/sac/' || i || '.jpg',"
            " 256, 256, '-', current_timestamp FROM range(1, ?) t(i)",
            [n_images + 1],
        )
    return _warehouse_pass(warehouse, snapshot)


def run_warehouse_incremental(warehouse: str, snapshot: str) -> dict:
    return _warehouse_pass(warehouse, snapshot)


MODES = {
    "duckdb_query": run_duckdb_query,
    "pandas": run_pandas,
    "warehouse_full": run_warehouse_full,
    "warehouse_incremental": run_warehouse_incremental,
}


def child(mode: str, args: list[str]) -> None:
    import duckdb  # noqa: F401  (imports count in the baseline, not in the work)
    import pandas  # noqa: F401

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = MODES[mode](*[int(a) if a.isdigit() else a for a in args])
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["baseline_rss_mb"] = baseline / 1024
    print(json.dumps(result))


def measure(mode: str, *args: object) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, *map(str, args)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratings", type=int, default=10_000_000)
    p.add_argument("--images", type=int, default=1_000_000)
    p.add_argument("--increment", type=float, default=0.01, help="new ratings in the later snapshot, as a fraction")
    p.add_argument("--repeats", type=int, default=3, help="full build + incremental pairs (medians reported)")
    p.add_argument("--workdir", default=None, help="keep the files here (default: a temporary folder)")
    p.add_argument("--reuse", action="store_true", help="with --workdir: keep snapshot files generated before")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1:])
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_sac_"))
    work.mkdir(parents=True, exist_ok=True)
    snap1, snap2 = work / "sac_snapshot_1.sqlite", work / "sac_snapshot_2.sqlite"
    t0 = time.perf_counter()
    if not (args.reuse and snap1.is_file() and snap2.is_file()):
        generate(snap1, args.ratings, args.images)
        add_ratings(snap1, snap2, int(args.ratings * args.increment), args.images)
    print(f"generated {args.ratings:,} ratings over {args.images:,} images "
          f"({snap1.stat().st_size / 1e6:.0f} MB) + {args.increment:.0%} in {time.perf_counter() - t0:.0f}s on "
          f"{os.cpu_count()} cores; load average {_load()}")

    duck = measure("duckdb_query", snap1)
    pand = measure("pandas", snap1)
    print(f"peak RSS: duckdb {duck['peak_rss_mb']:.0f} MB, pandas {pand['peak_rss_mb']:.0f} MB "
          f"(both {duck['baseline_rss_mb']:.0f} MB after imports)")
    for name in VOTES:
        direct, staged, pd_ = duck[f"direct:{name}"], duck[f"staged:{name}"], pand[name]
        for d in (direct, staged):
            assert d["checksum"] == pd_["checksum"] and d["images"] == pd_["images"], (name, d, pd_)
        print(f"histograms ({name:13s}) pandas {pd_['seconds']:6.2f}s; duckdb query {direct['seconds']:5.2f}s"
              f" -> {pd_['seconds'] / direct['seconds']:.1f}x faster (target >= 5x); the pipeline's staged path"
              f" {staged['seconds']:5.2f}s (classified scan {staged['stage_seconds']:.2f}s + histograms"
              f" {staged['histogram_seconds']:.2f}s) -> {pd_['seconds'] / staged['seconds']:.1f}x;"
              f" same {direct['images']:,} histograms")

    fulls, incs = [], []
    for _ in range(args.repeats):  # each pair: a full build into an empty warehouse, then the 1% snapshot on it
        warehouse = work / "warehouse.duckdb"
        for leftover in (warehouse, warehouse.with_name(warehouse.name + ".wal")):
            leftover.unlink(missing_ok=True)
        os.sync()  # the previous step's dirty pages are written back before the clock starts, not during it
        fulls.append(measure("warehouse_full", warehouse, snap1, args.images))
        os.sync()
        incs.append(measure("warehouse_incremental", warehouse, snap2))
    assert all(r["images_added"] == 0 for r in fulls + incs), "no image may be cropped inside the measurement"
    full = sorted(fulls, key=lambda r: r["seconds"])[len(fulls) // 2]
    inc = sorted(incs, key=lambda r: r["seconds"])[len(incs) // 2]
    each = ", ".join(f"{i['seconds']:.2f}/{f['seconds']:.2f} = {i['seconds'] / f['seconds']:.1%}"
                     for f, i in zip(fulls, incs, strict=True))
    print(f"warehouse full build    {full['seconds']:7.2f}s (median of {len(fulls)})  {full['ratings_new']:,} ratings, "
          f"{full['histograms_written']:,} histograms, peak RSS {full['peak_rss_mb']:.0f} MB")
    print(f"incremental +{args.increment:.0%}        {inc['seconds']:7.2f}s (median of {len(incs)})  "
          f"{inc['ratings_new']:,} ratings, {inc['histograms_written']:,} histograms, "
          f"peak RSS {inc['peak_rss_mb']:.0f} MB")
    print(f"  incremental / full = {inc['seconds'] / full['seconds']:.1%} (medians; target < 10%); each pair: {each};"
          f" incremental read {inc['ratings_read']:,} rows after rowid {inc['after_rowid']}")
    print(f"  steps full (median run):        {full['steps']}")
    print(f"  steps incremental (median run): {inc['steps']}")
    print(f"load average at the end {_load()}")
    if not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
