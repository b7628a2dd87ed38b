"""Vote histograms and the training targets derived from them (docs/contract.md, "Labels")."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

N_BINS = 10
_HISTOGRAMS_SQL = (resources.files("warehouse") / "histograms.sql").read_text()


def stage_counts(conn: duckdb.DuckDBPyConnection, rows: Iterable[tuple[str, Sequence[int]]]) -> int:
    """Put (image_id, counts) pairs into the temp table staged_counts; returns how many."""
    import pyarrow as pa

    ids, counts = [], []
    for image_id, c in rows:
        if len(c) != N_BINS:
            raise ValueError(f"counts for {image_id!r} have {len(c)} bins, expected {N_BINS}")
        ids.append(str(image_id))
        counts.append([int(x) for x in c])
    table = pa.table(
        {"image_id": pa.array(ids, pa.string()), "counts": pa.array(counts, pa.list_(pa.int32()))}
    )
    conn.register("_counts_arrow", table)
    try:
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE staged_counts AS "
            "SELECT image_id, counts::INTEGER[10] AS counts FROM _counts_arrow"
        )
    finally:
        conn.unregister("_counts_arrow")
    return len(ids)


def merge_staged_histograms(conn: duckdb.DuckDBPyConnection, dataset: str, temperature: float = 1.0) -> int:
    """Upsert histograms (counts, n, mean, std, p_normalized, p_softmax) from staged_counts."""
    if temperature <= 0:
        raise ValueError(f"softmax temperature must be > 0, got {temperature}")
    zero = conn.execute("SELECT count(*) FROM staged_counts WHERE list_sum(counts) <= 0").fetchone()[0]
    if zero:
        raise ValueError(f"{zero} staged histograms have no votes; reject them before merging")
    conn.execute(
        "DELETE FROM histograms WHERE dataset = ? AND image_id IN (SELECT image_id FROM staged_counts)", [dataset]
    )
    conn.execute(_HISTOGRAMS_SQL, [dataset, float(temperature)])
    return conn.execute("SELECT count(*) FROM staged_counts").fetchone()[0]


def upsert_histograms(
    conn: duckdb.DuckDBPyConnection,
    dataset: str,
    rows: Iterable[tuple[str, Sequence[int]]],
    temperature: float = 1.0,
) -> int:
    """stage_counts + merge_staged_histograms for counts computed in Python."""
    stage_counts(conn, rows)
    return merge_staged_histograms(conn, dataset, temperature)
