"""SAC histograms: DuckDB vs pandas on a 10M-rating SQLite file, and an incremental 1% snapshot vs a full build.

    .venv/bin/python benchmarks/bench_sac_histograms.py                 # the issue's size: 10M ratings, 1M images
    .venv/bin/python benchmarks/bench_sac_histograms.py --ratings 1000000 --images 100000   # quick look

Every measurement runs in its own subprocess, so its peak RSS (ru_maxrss) is its own:
- duckdb_query: per-image counts of ratings 1..10 joined to paths, straight from the SQLite file
  (warehouse/sac_stage.sql's classification, the same SQL family the pipeline runs);
- pandas: pd.read_sql of the ratings and paths + groupby/unstack (the usual notebook way);
- warehouse_full: the pipeline's own path (warehouse/sac.py) on an empty warehouse: stage, insert every
  rating into sac_ratings, rebuild all histograms (crops are out of scope: the images rows are set up
  beforehand, untimed, as if cropped);
- warehouse_incremental: the same code on that warehouse with a snapshot holding 1% more ratings.
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


def checksum(iids, counts) -> int:
    """Order-free fingerprint of (image, histogram) pairs, the same for both engines."""
    total = 0
    for iid, c in zip(iids, counts, strict=True):
        total += int(iid) * sum((k + 1) * int(v) for k, v in enumerate(c)) % 1_000_003
    return total


# ----- the measured work, each run in a child process -----

BINS = ", ".join(f"count(*) FILTER (WHERE r.rating = {k})" for k in range(1, 11))
# Votes 1..10 per image joined to paths (NULL and out-of-range rows are not votes). {votes} is either every
# valid row (the notebook's read_sql + groupby) or one vote per (sid, iid), the first row winning, as the
# pipeline stores them (warehouse/sac_insert_ratings.sql).
HISTOGRAM_SQL = f"""
SELECT r.iid, [{BINS}] AS counts
FROM ({{votes}}) r
JOIN sac_snap_images p ON p.iid = r.iid AND p.path IS NOT NULL
GROUP BY r.iid
"""
VOTES = {
    "plain": "SELECT iid, value::INTEGER AS rating FROM sac_snap_ratings WHERE status = 'ok'",
    "one_per_rater": "SELECT sid, iid, arg_min(value, row_no)::INTEGER AS rating FROM sac_snap_ratings"
                     " WHERE status = 'ok' GROUP BY sid, iid",
}


def run_duckdb_query(db_path: str) -> dict:
    import duckdb

    from warehouse.sac import create_snapshot_views, with_snapshot

    out = {}
    for name, votes in VOTES.items():
        def histograms(conn: duckdb.DuckDBPyConnection, votes: str = votes):
            create_snapshot_views(conn)
            return conn.execute(HISTOGRAM_SQL.format(votes=votes)).fetchnumpy()

        conn = duckdb.connect()
        t0 = time.perf_counter()
        rows = with_snapshot(conn, db_path, histograms)
        out[name] = {"seconds": time.perf_counter() - t0, "images": len(rows["iid"]),
                     "checksum": checksum(rows["iid"], rows["counts"])}
        conn.close()
    return out


def run_pandas(db_path: str) -> dict:
    import pandas as pd

    out = {}
    for name in VOTES:
        con = sqlite3.connect(db_path)
        t0 = time.perf_counter()
        ratings = pd.read_sql("SELECT sid, iid, rating FROM ratings", con)
        paths = pd.read_sql("SELECT iid, path FROM paths", con)
        ratings = ratings.dropna(subset=["rating"])
        ratings = ratings[ratings["rating"].between(1, 10) & (ratings["rating"] % 1 == 0)]
        ratings = ratings[ratings["iid"].isin(paths.loc[paths["path"].notna(), "iid"])]
        if name == "one_per_rater":
            ratings = ratings.drop_duplicates(["sid", "iid"], keep="first")
        counts = ratings.groupby(["iid", "rating"]).size().unstack(fill_value=0)
        counts = counts.reindex(columns=range(1, 11), fill_value=0)
        out[name] = {"seconds": time.perf_counter() - t0, "images": len(counts),
                     "checksum": checksum(counts.index, counts.to_numpy())}
        con.close()
        del ratings, paths, counts
    return out


def _warehouse_pass(warehouse: str, snapshot: str) -> dict:
    from ingest.sac import read_snapshot
    from warehouse.db import connect, transaction
    from warehouse.sac import (
        insert_new_ratings,
        merge_pending_histograms,
        new_ingest_id,
        record_rating_rejects,
        stage_snapshot,
        with_snapshot,
    )

    t0 = time.perf_counter()
    snap = read_snapshot(snapshot)  # hashing the file is part of a snapshot's cost

    def merge(conn):
        with transaction(conn):
            stage_snapshot(conn)
            new = insert_new_ratings(conn, snap.key, new_ingest_id())
            record_rating_rejects(conn, snap.key)
            return new

    with connect(warehouse) as conn:
        new = with_snapshot(conn, snap.path, merge)
    with connect(warehouse) as conn, transaction(conn):
        written = merge_pending_histograms(conn, [])
    return {"seconds": time.perf_counter() - t0, "ratings_new": new, "histograms_written": written}


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratings", type=int, default=10_000_000)
    p.add_argument("--images", type=int, default=1_000_000)
    p.add_argument("--increment", type=float, default=0.01, help="new ratings in the later snapshot, as a fraction")
    p.add_argument("--workdir", default=None, help="keep the files here (default: a temporary folder)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1:])
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_sac_"))
    work.mkdir(parents=True, exist_ok=True)
    snap1, snap2 = work / "sac_snapshot_1.sqlite", work / "sac_snapshot_2.sqlite"
    t0 = time.perf_counter()
    generate(snap1, args.ratings, args.images)
    add_ratings(snap1, snap2, int(args.ratings * args.increment), args.images)
    print(f"generated {args.ratings:,} ratings over {args.images:,} images "
          f"({snap1.stat().st_size / 1e6:.0f} MB) + {args.increment:.0%} in {time.perf_counter() - t0:.0f}s on "
          f"{os.cpu_count()} cores")

    duck = measure("duckdb_query", snap1)
    pand = measure("pandas", snap1)
    print(f"peak RSS: duckdb {duck['peak_rss_mb']:.0f} MB, pandas {pand['peak_rss_mb']:.0f} MB "
          f"(both {duck['baseline_rss_mb']:.0f} MB after imports)")
    for name in VOTES:
        d, pd_ = duck[name], pand[name]
        assert d["checksum"] == pd_["checksum"] and d["images"] == pd_["images"], (name, d, pd_)
        print(f"histograms ({name:13s}) duckdb {d['seconds']:6.2f}s  pandas {pd_['seconds']:6.2f}s  "
              f"-> duckdb {pd_['seconds'] / d['seconds']:.1f}x faster (target >= 5x), same {d['images']:,} histograms")

    warehouse = work / "warehouse.duckdb"
    warehouse.unlink(missing_ok=True)
    full = measure("warehouse_full", warehouse, snap1, args.images)
    inc = measure("warehouse_incremental", warehouse, snap2)
    print(f"warehouse full build    {full['seconds']:7.2f}s  {full['ratings_new']:,} ratings, "
          f"{full['histograms_written']:,} histograms, peak RSS {full['peak_rss_mb']:.0f} MB")
    print(f"incremental +{args.increment:.0%}        {inc['seconds']:7.2f}s  {inc['ratings_new']:,} ratings, "
          f"{inc['histograms_written']:,} histograms, peak RSS {inc['peak_rss_mb']:.0f} MB")
    print(f"  incremental / full = {inc['seconds'] / full['seconds']:.1%} (target < 10%)")
    if not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
