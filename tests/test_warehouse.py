"""The DuckDB warehouse: schema migrations, label math, and many writers at once."""

from __future__ import annotations

import multiprocessing as mp

import dagster as dg
import numpy as np
import pytest

from warehouse.db import connect, migrate, migration_files
from warehouse.labels import upsert_histograms
from warehouse.records import ImageRow, Reject, record_rejects, rejects_by_reason, table_counts, upsert_images

CONTRACT_COLUMNS = {
    "images": {"dataset", "image_id", "split", "source_path", "path", "width", "height", "sha256"},
    "histograms": {"dataset", "image_id", "counts", "n_ratings", "mean", "std", "p_normalized", "p_softmax"},
    "rejects": {"dataset", "item_id", "stage", "reason", "batch", "rejected_at"},
    "shards": {"path", "dataset", "split", "n_samples", "bytes", "sha256"},
    "models": {"version", "name", "parent_version", "checkpoint_path", "sha256", "config", "created_at"},
    "eval_reports": {
        "model_version", "dataset", "split", "n", "binary_accuracy", "exact_accuracy", "lcc_mean", "srcc_mean",
        "lcc_std", "srcc_std", "emd_r1", "emd_r2", "created_at",
    },
}


def _schema(conn) -> list[tuple]:
    return conn.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns ORDER BY ALL"
    ).fetchall()


def test_schema_has_every_contract_table_and_column(tmp_path):
    with connect(tmp_path / "w.duckdb") as conn:
        columns: dict[str, set[str]] = {}
        for table, column, _ in _schema(conn):
            columns.setdefault(table, set()).add(column)
    for table, wanted in CONTRACT_COLUMNS.items():
        assert wanted <= columns[table], f"{table} lacks {wanted - columns[table]}"


def test_migrating_twice_changes_nothing(tmp_path):
    path = tmp_path / "w.duckdb"
    with connect(path) as conn:
        first = _schema(conn)
        applied = conn.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()
        assert [a[0] for a in applied] == [name for name, _ in migration_files()]
        assert migrate(conn) == []
        assert _schema(conn) == first
    with connect(path) as conn:
        assert _schema(conn) == first
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(migration_files())


def test_histogram_labels_match_the_design_formulas(tmp_path):
    counts = np.array([[0, 1, 2, 3, 4, 0, 0, 0, 0, 5], [0, 0, 0, 0, 1, 0, 0, 0, 0, 0], [3, 0, 0, 0, 0, 0, 0, 0, 0, 40]])
    with connect(tmp_path / "w.duckdb") as conn:
        upsert_histograms(conn, "ava", [(str(i), c) for i, c in enumerate(counts)], temperature=2.0)
        rows = conn.execute(
            "SELECT counts, n_ratings, mean, std, p_normalized, p_softmax FROM histograms ORDER BY image_id"
        ).fetchall()
    scores = np.arange(1, 11)
    for c, (got_counts, n, mean, std, p_norm, p_soft) in zip(counts, rows, strict=True):
        p = c / c.sum()
        want_mean = (scores * p).sum()
        soft = np.exp(c / 2.0 - (c / 2.0).max())
        assert list(got_counts) == list(c) and n == c.sum()
        assert mean == pytest.approx(want_mean)
        assert std == pytest.approx(np.sqrt(((scores - want_mean) ** 2 * p).sum()))
        np.testing.assert_allclose(p_norm, p)
        np.testing.assert_allclose(p_soft, soft / soft.sum())


def test_histograms_refuse_rows_without_votes(tmp_path):
    with connect(tmp_path / "w.duckdb") as conn, pytest.raises(ValueError, match="no votes"):
        upsert_histograms(conn, "ava", [("1", [0] * 10)])


def test_upserts_keep_one_row_per_key_and_rejects_group_by_reason_kind(tmp_path):
    row = ImageRow("7", "train", "raw/7.jpg", "images/ava/7.jpg", 256, 256, "ab" * 32)
    with connect(tmp_path / "w.duckdb") as conn:
        upsert_images(conn, "ava", [row])
        upsert_images(conn, "ava", [row])
        record_rejects(conn, "ava", "image", [Reject("8", "corrupt: truncated"), Reject("9", "corrupt: bad")], "b1")
        record_rejects(conn, "ava", "image", [Reject("8", "corrupt: truncated")], "b2")
        assert table_counts(conn)["images"] == 1
        assert rejects_by_reason(conn) == [("ava", "image", "corrupt", 2)]


def _hammer(path: str, worker: int, n: int) -> None:
    for i in range(n):
        with connect(path) as conn:
            conn.execute(
                "INSERT INTO rejects (dataset, item_id, stage, reason) VALUES ('sac', ?, 'test', 'test: row')",
                [f"{worker}-{i}"],
            )


def test_processes_writing_at_once_wait_for_the_lock_instead_of_failing(tmp_path):
    path = str(tmp_path / "w.duckdb")
    with connect(path):
        pass
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with connect(path, read_only=True) as conn:
        assert conn.execute("SELECT count(DISTINCT item_id) FROM rejects").fetchone()[0] == 100


def _open_new_warehouses(paths: list[str], barrier, failures) -> None:
    for path in paths:
        barrier.wait()  # every process opens the same missing file at once
        try:
            with connect(path) as conn:
                conn.execute("SELECT count(*) FROM images").fetchone()
        except Exception as exc:  # noqa: BLE001 - what failed is the finding
            failures.put(f"{type(exc).__name__}: {exc}"[:300])


def test_processes_creating_the_same_new_warehouse_at_once_all_open_a_whole_database(tmp_path):
    # CI saw one of four steps fail with "not a valid DuckDB database file" while another created the file.
    paths = [str(tmp_path / f"w{i}.duckdb") for i in range(10)]
    ctx = mp.get_context("spawn")
    barrier, failures = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open_new_warehouses, args=(paths, barrier, failures)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    found = []
    while not failures.empty():
        found.append(failures.get())
    assert not found and [p.exitcode for p in procs] == [0] * 4, found
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"w{i}.duckdb" for i in range(10))  # no temporaries


def test_several_writing_assets_run_at_once_under_the_multiprocess_executor(tmp_path, monkeypatch):
    from tests.helpers import writer_assets

    path = tmp_path / "w.duckdb"
    monkeypatch.setenv("WRITER_TEST_WAREHOUSE", str(path))
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        with dg.execute_job(dg.reconstructable(writer_assets.writers_job), instance=instance) as result:
            assert result.success
            starts = [e for e in result.all_events if e.event_type_value == "STEP_START"]
            assert len(starts) == 4
    with connect(path, read_only=True) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT batch) FROM rejects").fetchone()
    assert rows[0] == 4 * writer_assets.ROWS_PER_WRITER
    assert rows[1] == 4, "each asset ran in its own process"


def test_merging_histograms_again_replaces_rows_instead_of_duplicating_them(tmp_path):
    with connect(tmp_path / "w.duckdb") as conn:
        upsert_histograms(conn, "sac", [("1", [1] * 10), ("2", [0, 1] * 5)])
        upsert_histograms(conn, "sac", [("1", [0] * 9 + [4])])
        upsert_histograms(conn, "ava", [("1", [2] * 10)])
        rows = conn.execute("SELECT dataset, image_id, n_ratings, mean FROM histograms ORDER BY ALL").fetchall()
    assert rows == [("ava", "1", 20, 5.5), ("sac", "1", 4, 10.0), ("sac", "2", 5, 6.0)]


def test_checkpoint_defers_vacuuming_a_few_dead_rows_and_compacts_many(tmp_path):
    from warehouse.db import checkpoint, dead_row_fraction

    with connect(tmp_path / "w.duckdb") as conn:
        # Several row groups (DuckDB stores 122,880 rows per group), so a vacuum has groups to merge.
        conn.execute("CREATE TABLE t AS SELECT range AS k, range * 2 AS v FROM range(600000)")
        conn.execute("CHECKPOINT")
        assert dead_row_fraction(conn, "t") == 0.0
        conn.execute("DELETE FROM t WHERE k % 10 = 0")  # 10% dead: a backfill replacing a few rows
        assert checkpoint(conn, defer_vacuum_of="t") is False
        assert dead_row_fraction(conn, "t") == pytest.approx(0.1, abs=1e-3)  # kept, scans skip them
        assert conn.execute("SELECT count(*), sum(v) FROM t WHERE k % 10 = 0").fetchone() == (0, None)
        conn.execute("DELETE FROM t WHERE k % 10 IN (1, 2, 3, 4)")  # now half the stored rows are dead
        assert checkpoint(conn, defer_vacuum_of="t") is True
        assert dead_row_fraction(conn, "t") < 0.25  # vacuumed: row groups merged
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 300000
        assert conn.execute("SELECT current_setting('max_vacuum_tasks')").fetchone()[0] == 100  # reset
