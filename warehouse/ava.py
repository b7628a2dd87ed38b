"""AVA stage queries: crop state for incremental runs, and writes that touch only rows that changed.

A second run over unchanged inputs must leave the warehouse as it was (updated_at
included), so every write here first compares with what is stored and writes
only the difference.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING

from warehouse import records
from warehouse.db import transaction
from warehouse.labels import merge_staged_histograms, stage_counts
from warehouse.records import ImageRow, upsert_images

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

DATASET = "ava"
# The rejects stages this stage owns and keeps in step with the current drop; later stages own theirs.
NAMES_STAGE = "names"  # tags.txt / challenges.txt lines: item `<file>:line:<n>`, not AVA.txt items
STAGES = ("parse", "ratings", "split", "fetch", "image", NAMES_STAGE)


@dataclass(frozen=True)
class CropState:
    image_id: str
    source_key: str
    source_size: int
    source_mtime_ns: int
    spec: str
    outcome: str  # 'ok' or 'rejected'
    reason: str | None = None
    crop_path: str | None = None
    crop_size: int | None = None
    crop_mtime_ns: int | None = None


_STATE_COLUMNS = (
    "image_id, source_key, source_size, source_mtime_ns, spec, outcome, reason, crop_path, crop_size, crop_mtime_ns"
)


@functools.cache
def _state_types() -> dict[str, pa.DataType]:
    """Built on first use, so importing this module (the code location does) does not import pyarrow."""
    import pyarrow as pa

    return {
        "image_id": pa.string(), "source_key": pa.string(), "source_size": pa.int64(), "source_mtime_ns": pa.int64(),
        "spec": pa.string(), "outcome": pa.string(), "reason": pa.string(), "crop_path": pa.string(),
        "crop_size": pa.int64(), "crop_mtime_ns": pa.int64(),
    }


_META_INTS = ("line", "tag1", "tag2", "challenge_id")


def load_crop_state(conn: duckdb.DuckDBPyConnection) -> dict[str, CropState]:
    rows = conn.execute(f"SELECT {_STATE_COLUMNS} FROM ava_crop_state").fetchall()
    return {r[0]: CropState(*r) for r in rows}


def accepted_ids(conn: duckdb.DuckDBPyConnection) -> set[str]:
    return records.accepted_ids(conn, DATASET)


@contextmanager
def _registered(conn: duckdb.DuckDBPyConnection, name: str, columns: dict[str, pa.Array]) -> Iterator[None]:
    """An Arrow table visible to SQL as `name` for the block: joins, not per-row list scans."""
    import pyarrow as pa

    conn.register(name, pa.table(columns))
    try:
        yield
    finally:
        conn.unregister(name)


def _ids(ids: Iterable[str]) -> dict[str, pa.Array]:
    import pyarrow as pa

    return {"image_id": pa.array(list(ids), pa.string())}


def sync_names(conn: duckdb.DuckDBPyConnection, table: str, rows: Sequence[tuple[int, str]]) -> bool:
    """Make ava_tags or ava_challenges hold exactly rows; True when anything changed."""
    id_column = {"ava_tags": "tag_id", "ava_challenges": "challenge_id"}[table]  # never a caller's string
    current = set(conn.execute(f"SELECT {id_column}, name FROM {table}").fetchall())
    if current == set(rows):
        return False
    with transaction(conn):
        conn.execute(f"DELETE FROM {table}")
        if rows:
            conn.executemany(f"INSERT INTO {table} ({id_column}, name) VALUES (?, ?)", [list(r) for r in rows])
    return True


def sync_image_meta(conn: duckdb.DuckDBPyConnection, rows: Sequence[tuple[str, int, int, int, int]]) -> int:
    """ava_image_meta := rows of (image_id, line, tag1, tag2, challenge_id); returns rows written or deleted."""
    import pyarrow as pa

    columns = {
        "image_id": pa.array([r[0] for r in rows], pa.string()),
        **{name: pa.array([r[k] for r in rows], pa.int32()) for k, name in enumerate(_META_INTS, start=1)},
    }
    with _registered(conn, "_meta_arrow", columns), transaction(conn):
        gone = conn.execute(
            "DELETE FROM ava_image_meta WHERE image_id NOT IN (SELECT image_id FROM _meta_arrow)"
        ).fetchone()[0]
        changed = conn.execute(
            "INSERT OR REPLACE INTO ava_image_meta SELECT n.* FROM _meta_arrow n"
            " LEFT JOIN ava_image_meta o USING (image_id)"
            " WHERE o.image_id IS NULL OR (o.line, o.tag1, o.tag2, o.challenge_id)"
            " IS DISTINCT FROM (n.line, n.tag1, n.tag2, n.challenge_id)"
        ).fetchone()[0]
    return int(gone) + int(changed)


def _changed_images(conn: duckdb.DuckDBPyConnection, rows: Sequence[ImageRow]) -> list[ImageRow]:
    with _registered(conn, "_batch_ids", _ids(r.image_id for r in rows)):
        stored = conn.execute(
            "SELECT image_id, split, source_path, path, width, height, sha256 FROM images"
            " WHERE dataset = ? AND image_id IN (SELECT image_id FROM _batch_ids)",
            [DATASET],
        ).fetchall()
    current = {r[0]: tuple(r) for r in stored}
    return [r for r in rows if current.get(r.image_id) != astuple(r)]


def _merge_changed_histograms(conn: duckdb.DuckDBPyConnection, counts: Iterable[tuple[str, Sequence[int]]]) -> int:
    """Upsert histograms only for ids whose counts differ from the stored ones."""
    if not stage_counts(conn, counts):
        return 0
    conn.execute(
        "DELETE FROM staged_counts WHERE image_id IN (SELECT h.image_id FROM histograms h"
        " JOIN staged_counts s ON h.image_id = s.image_id WHERE h.dataset = ? AND h.counts = s.counts)",
        [DATASET],
    )
    if conn.execute("SELECT count(*) FROM staged_counts").fetchone()[0] == 0:
        return 0
    return merge_staged_histograms(conn, DATASET)


def _delete_items(conn: duckdb.DuckDBPyConnection, arrow_name: str, keep: bool) -> list[str]:
    """Delete images/histograms rows whose id is (keep=False) or is not (keep=True) in arrow_name;
    returns the crop paths the deleted images rows pointed at."""
    where = f"dataset = ? AND image_id {'NOT IN' if keep else 'IN'} (SELECT image_id FROM {arrow_name})"
    paths = [r[0] for r in conn.execute(f"SELECT path FROM images WHERE {where}", [DATASET]).fetchall()]
    for table in ("images", "histograms"):
        conn.execute(f"DELETE FROM {table} WHERE {where}", [DATASET])
    return paths


def write_crop_batch(
    conn: duckdb.DuckDBPyConnection,
    images: Sequence[ImageRow],
    counts: Sequence[tuple[str, Sequence[int]]],
    states: Sequence[CropState],
    dropped: Sequence[str],
) -> int:
    """One batch of crop outcomes, all or nothing: images + histograms of the accepted, the crop
    state of every item worked on, and no images/histograms rows left for items now rejected.
    Returns how many images rows were written."""
    import pyarrow as pa

    with transaction(conn):
        changed = _changed_images(conn, images) if images else []
        upsert_images(conn, DATASET, changed)
        _merge_changed_histograms(conn, counts)
        if dropped:
            with _registered(conn, "_dropped_ids", _ids(dropped)):
                _delete_items(conn, "_dropped_ids", keep=False)
        if states:
            rows = [astuple(s) for s in states]
            columns = {
                name: pa.array([r[k] for r in rows], kind)
                for k, (name, kind) in enumerate(_state_types().items())
            }
            with _registered(conn, "_state_arrow", columns):
                conn.execute(
                    f"INSERT OR REPLACE INTO ava_crop_state ({_STATE_COLUMNS}, checked_at)"
                    f" SELECT {_STATE_COLUMNS}, current_timestamp FROM _state_arrow"
                )
    return len(changed)


@dataclass(frozen=True)
class SyncReport:
    splits_changed: int
    histograms_changed: int
    pruned_paths: list[str]


def sync_accepted(conn: duckdb.DuckDBPyConnection, accepted: dict[str, tuple[str, Sequence[int]]]) -> SyncReport:
    """After all batches: splits and counts of images not re-cropped follow AVA.txt and the lists;
    images/histograms of items no longer accepted are removed (their crop paths returned), and so
    is the crop state of items no longer in the drop at all."""
    import pyarrow as pa

    ids = list(accepted)
    columns = {**_ids(ids), "split": pa.array([accepted[i][0] for i in ids], pa.string())}
    with _registered(conn, "_accepted_arrow", columns), transaction(conn):
        splits = conn.execute(
            "UPDATE images SET split = n.split, updated_at = current_timestamp FROM _accepted_arrow n"
            " WHERE images.dataset = ? AND images.image_id = n.image_id AND images.split <> n.split",
            [DATASET],
        ).fetchone()[0]
        hist = _merge_changed_histograms(conn, ((i, accepted[i][1]) for i in ids))
        pruned = _delete_items(conn, "_accepted_arrow", keep=True)
    return SyncReport(int(splits), int(hist), pruned)


def forget_crop_state(conn: duckdb.DuckDBPyConnection, keep: Iterable[str]) -> int:
    """Drop the crop state of ids that are no longer in the drop."""
    with _registered(conn, "_keep_arrow", _ids(keep)):
        return int(
            conn.execute("DELETE FROM ava_crop_state WHERE image_id NOT IN (SELECT image_id FROM _keep_arrow)")
            .fetchone()[0]
        )


@dataclass(frozen=True)
class RejectRow:
    item_id: str
    stage: str
    reason: str


def sync_rejects(conn: duckdb.DuckDBPyConnection, rejects: Sequence[RejectRow], batch: str | None) -> tuple[int, int]:
    """The AVA rejects of this stage's stages := rejects. Rows whose reason is unchanged keep their
    rejected_at and batch; returns (written, deleted)."""
    import pyarrow as pa

    bad = [r.stage for r in rejects if r.stage not in STAGES]
    if bad:
        raise ValueError(f"stages {sorted(set(bad))} are not AVA ingest stages {STAGES}")
    columns = {
        "item_id": pa.array([r.item_id for r in rejects], pa.string()),
        "stage": pa.array([r.stage for r in rejects], pa.string()),
        "reason": pa.array([r.reason for r in rejects], pa.string()),
    }
    with _registered(conn, "_rejects_want", columns), transaction(conn):
        deleted = conn.execute(
            "DELETE FROM rejects WHERE dataset = ? AND list_contains(?, stage) AND NOT EXISTS"
            " (SELECT 1 FROM _rejects_want w WHERE w.item_id = rejects.item_id AND w.stage = rejects.stage)",
            [DATASET, list(STAGES)],
        ).fetchone()[0]
        written = conn.execute(
            "INSERT OR REPLACE INTO rejects (dataset, item_id, stage, reason, batch, rejected_at)"
            " SELECT ?, w.item_id, w.stage, w.reason, ?, current_timestamp FROM _rejects_want w"
            " LEFT JOIN rejects r ON r.dataset = ? AND r.item_id = w.item_id AND r.stage = w.stage"
            " WHERE r.item_id IS NULL OR r.reason <> w.reason",
            [DATASET, batch, DATASET],
        ).fetchone()[0]
    return int(written), int(deleted)


def preview_rows(conn: duckdb.DuckDBPyConnection, n: int) -> list[tuple[str, str, float]]:
    """(image_id, crop path, mean score) for n accepted images spread evenly from the lowest to the highest mean."""
    return conn.execute(
        "WITH ranked AS (SELECT i.image_id, i.path, h.mean, row_number() OVER (ORDER BY h.mean, i.image_id) - 1 AS r,"
        " count(*) OVER () AS total FROM images i JOIN histograms h USING (dataset, image_id) WHERE i.dataset = ?)"
        " SELECT image_id, path, mean FROM ranked"
        " WHERE total <= ? OR r IN (SELECT CAST(round(k * (total - 1) / (? - 1)) AS BIGINT)"
        "   FROM range(?) t(k))"
        " ORDER BY mean, image_id",
        [DATASET, n, max(n, 2), n],
    ).fetchall()
