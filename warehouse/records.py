"""Writes and reads of the images and rejects tables, shared by every dataset stage."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb


@dataclass(frozen=True)
class ImageRow:
    image_id: str
    split: str
    source_path: str | None
    path: str
    width: int
    height: int
    sha256: str


@dataclass(frozen=True)
class Reject:
    item_id: str
    reason: str


def upsert_images(conn: duckdb.DuckDBPyConnection, dataset: str, rows: Sequence[ImageRow]) -> int:
    import pyarrow as pa

    if not rows:
        return 0
    table = pa.table(
        {
            "image_id": [r.image_id for r in rows],
            "split": [r.split for r in rows],
            "source_path": [r.source_path for r in rows],
            "path": [r.path for r in rows],
            "width": pa.array([r.width for r in rows], pa.int32()),
            "height": pa.array([r.height for r in rows], pa.int32()),
            "sha256": [r.sha256 for r in rows],
        }
    )
    conn.register("_images_arrow", table)
    try:
        conn.execute(
            "INSERT OR REPLACE INTO images"
            " (dataset, image_id, split, source_path, path, width, height, sha256, updated_at)"
            " SELECT ?, image_id, split, source_path, path, width, height, sha256, current_timestamp"
            " FROM _images_arrow",
            [dataset],
        )
    finally:
        conn.unregister("_images_arrow")
    return len(rows)


def accepted_ids(conn: duckdb.DuckDBPyConnection, dataset: str) -> set[str]:
    """The image ids a dataset has in `images`."""
    return {r[0] for r in conn.execute("SELECT image_id FROM images WHERE dataset = ?", [dataset]).fetchall()}


def accepted_among(conn: duckdb.DuckDBPyConnection, dataset: str, ids: Iterable[str]) -> set[str]:
    """Those of ids that a dataset has in `images` (for stages too large to load every id)."""
    ids = list(ids)
    if not ids:
        return set()
    rows = conn.execute("SELECT image_id FROM images WHERE dataset = ? AND image_id IN (SELECT unnest(?))",
                        [dataset, ids]).fetchall()
    return {r[0] for r in rows}


def count_images(conn: duckdb.DuckDBPyConnection, dataset: str) -> int:
    return int(conn.execute("SELECT count(*) FROM images WHERE dataset = ?", [dataset]).fetchone()[0])


def record_rejects(
    conn: duckdb.DuckDBPyConnection, dataset: str, stage: str, rejects: Iterable[Reject], batch: str | None
) -> int:
    import pyarrow as pa

    rejects = list(rejects)
    if not rejects:
        return 0
    table = pa.table({"item_id": [r.item_id for r in rejects], "reason": [r.reason for r in rejects]})
    conn.register("_rejects_arrow", table)
    try:
        conn.execute(
            "INSERT OR REPLACE INTO rejects (dataset, item_id, stage, reason, batch, rejected_at)"
            " SELECT ?, item_id, ?, reason, ?, current_timestamp FROM _rejects_arrow",
            [dataset, stage, batch],
        )
    finally:
        conn.unregister("_rejects_arrow")
    return len(rejects)


def clear_rejects(conn: duckdb.DuckDBPyConnection, dataset: str, stage: str, item_ids: Iterable[str]) -> None:
    """Forget earlier rejects of items that have now been accepted (e.g. a fixed file)."""
    ids = list(item_ids)
    if ids:
        conn.execute(
            "DELETE FROM rejects WHERE dataset = ? AND stage = ? AND list_contains(?, item_id)",
            [dataset, stage, ids],
        )


def image_paths(conn: duckdb.DuckDBPyConnection, dataset: str) -> list[str]:
    """The crop path (as stored) of every images row of the dataset."""
    return [row[0] for row in conn.execute("SELECT path FROM images WHERE dataset = ?", [dataset]).fetchall()]


def table_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    names = ["images", "histograms", "rejects", "shards", "models", "eval_reports"]
    return {n: conn.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in names}


def shards_by_split(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    """(dataset, split, tars, samples, bytes) from the shards table."""
    return conn.execute(
        "SELECT dataset, split, count(*), sum(n_samples), sum(bytes) FROM shards GROUP BY ALL ORDER BY ALL"
    ).fetchall()


def evaluation_summary(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    """(model name, version, dataset, split, n, binary accuracy, SRCC, LCC, EMD r=1), oldest first."""
    return conn.execute(
        "SELECT m.name, r.model_version, r.dataset, r.split, r.n, r.binary_accuracy, r.srcc_mean, r.lcc_mean,"
        " r.emd_r1 FROM eval_reports r LEFT JOIN models m ON m.version = r.model_version ORDER BY r.created_at"
    ).fetchall()


def rejects_by_reason(conn: duckdb.DuckDBPyConnection, dataset: str | None = None) -> list[tuple]:
    """(dataset, stage, reason kind, count); the kind is the reason up to its first colon."""
    return conn.execute(
        "SELECT dataset, stage, split_part(reason, ':', 1) AS kind, count(*) AS n FROM rejects"
        " WHERE ? IS NULL OR dataset = ? GROUP BY ALL ORDER BY dataset, stage, n DESC",
        [dataset, dataset],
    ).fetchall()
