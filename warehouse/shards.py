"""Queries of the shards stage: labelled images of a dataset/split, and the `shards` table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

TARGETS = ("p_normalized", "p_softmax")


@dataclass(frozen=True)
class LabelledImage:
    """An images row joined to its histogram; counts is None when the image has no histogram row."""

    image_id: str
    split: str
    path: str  # as stored: relative to AESTHETIC_HOME or absolute
    sha256: str
    counts: tuple[int, ...] | None
    target: tuple[float, ...] | None
    mean: float | None
    std: float | None


@dataclass(frozen=True)
class ShardRow:
    path: str
    n_samples: int
    bytes: int
    sha256: str


def labelled_images(
    conn: duckdb.DuckDBPyConnection, dataset: str, split: str, target: str = "p_normalized"
) -> list[LabelledImage]:
    """Every images row of dataset/split with its histogram (left join: unlabelled rows come back too)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    # The column name comes from the fixed TARGETS whitelist above, never from user text.
    rows = conn.execute(
        f"SELECT i.image_id, i.split, i.path, i.sha256, h.counts, h.{target}, h.mean, h.std"
        " FROM images i LEFT JOIN histograms h ON h.dataset = i.dataset AND h.image_id = i.image_id"
        " WHERE i.dataset = ? AND i.split = ? ORDER BY i.image_id",
        [dataset, split],
    ).fetchall()
    return [
        LabelledImage(
            image_id=r[0],
            split=r[1],
            path=r[2],
            sha256=r[3],
            counts=tuple(r[4]) if r[4] is not None else None,
            target=tuple(r[5]) if r[5] is not None else None,
            mean=r[6],
            std=r[7],
        )
        for r in rows
    ]


def replace_shards(conn: duckdb.DuckDBPyConnection, dataset: str, split: str, rows: Sequence[ShardRow]) -> int:
    """Make the shards table hold exactly `rows` for dataset/split; call inside warehouse.db.transaction."""
    import pyarrow as pa

    table = pa.table(
        {
            "path": pa.array([r.path for r in rows], pa.string()),
            "n_samples": pa.array([r.n_samples for r in rows], pa.int32()),
            "bytes": pa.array([r.bytes for r in rows], pa.int64()),
            "sha256": pa.array([r.sha256 for r in rows], pa.string()),
        }
    )
    conn.register("_shards_arrow", table)
    try:
        conn.execute("DELETE FROM shards WHERE dataset = ? AND split = ?", [dataset, split])
        conn.execute(
            "INSERT INTO shards (path, dataset, split, n_samples, bytes, sha256)"
            " SELECT path, ?, ?, n_samples, bytes, sha256 FROM _shards_arrow",
            [dataset, split],
        )
    finally:
        conn.unregister("_shards_arrow")
    return len(rows)


def shard_rows(conn: duckdb.DuckDBPyConnection, dataset: str, split: str | None = None) -> list[tuple]:
    """(path, split, n_samples, bytes, sha256) of a dataset's shards, optionally one split, by path."""
    return conn.execute(
        "SELECT path, split, n_samples, bytes, sha256 FROM shards"
        " WHERE dataset = ? AND (? IS NULL OR split = ?) ORDER BY path",
        [dataset, split, split],
    ).fetchall()
