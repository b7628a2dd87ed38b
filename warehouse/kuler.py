"""Warehouse writes of the Kuler stage: bring dataset 'kuler' in line with one reading of the source.

The sync is a diff, not a delete-and-insert: rows whose content is unchanged keep their updated_at (and
rejects their batch and rejected_at), so a re-run with the same inputs changes nothing. Rows of themes
that left the source, or ratings no longer rejected, are deleted. All of it in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from warehouse.db import transaction
from warehouse.labels import upsert_histograms
from warehouse.records import ImageRow, Reject, record_rejects, upsert_images

if TYPE_CHECKING:
    import duckdb

DATASET = "kuler"


@dataclass(frozen=True)
class KulerTheme:
    """One row of kuler_themes (migration 030)."""

    image_id: str
    theme_id: int
    name: str
    release: str
    colours: list[float]  # 15 values: r,g,b of five colours
    mapping: str
    temperature: float


@dataclass(frozen=True)
class SyncStats:
    images_written: int
    histograms_written: int
    themes_written: int
    rejects_written: int
    rows_removed: int  # accepted themes no longer in the source (or now rejected)
    rejects_cleared: int  # rejects no longer produced by the source


def _existing_images(conn: duckdb.DuckDBPyConnection) -> dict[str, ImageRow]:
    rows = conn.execute(
        "SELECT image_id, split, source_path, path, width, height, sha256 FROM images WHERE dataset = ?", [DATASET]
    ).fetchall()
    return {r[0]: ImageRow(*r) for r in rows}


def _existing_themes(conn: duckdb.DuckDBPyConnection) -> dict[str, KulerTheme]:
    rows = conn.execute(
        "SELECT image_id, theme_id, name, release, colours, mapping, temperature FROM kuler_themes"
    ).fetchall()
    return {r[0]: KulerTheme(r[0], r[1], r[2], r[3], list(r[4]), r[5], r[6]) for r in rows}


def _existing_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, list[int]]:
    rows = conn.execute("SELECT image_id, counts FROM histograms WHERE dataset = ?", [DATASET]).fetchall()
    return {r[0]: list(r[1]) for r in rows}


def existing_rejects(conn: duckdb.DuckDBPyConnection, stage: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT item_id, reason FROM rejects WHERE dataset = ? AND stage = ?", [DATASET, stage]
    ).fetchall()
    return dict(rows)


def upsert_themes(conn: duckdb.DuckDBPyConnection, themes: Sequence[KulerTheme]) -> int:
    import pyarrow as pa

    if not themes:
        return 0
    table = pa.table(
        {
            "image_id": [t.image_id for t in themes],
            "theme_id": pa.array([t.theme_id for t in themes], pa.int64()),
            "name": [t.name for t in themes],
            "release": [t.release for t in themes],
            "colours": pa.array([t.colours for t in themes], pa.list_(pa.float64())),
            "mapping": [t.mapping for t in themes],
            "temperature": pa.array([t.temperature for t in themes], pa.float64()),
        }
    )
    conn.register("_kuler_themes_arrow", table)
    try:
        conn.execute(
            "INSERT OR REPLACE INTO kuler_themes"
            " (image_id, theme_id, name, release, colours, mapping, temperature, updated_at)"
            " SELECT image_id, theme_id, name, release, colours::DOUBLE[15], mapping, temperature, current_timestamp"
            " FROM _kuler_themes_arrow"
        )
    finally:
        conn.unregister("_kuler_themes_arrow")
    return len(themes)


def _delete_ids(conn: duckdb.DuckDBPyConnection, ids: list[str]) -> None:
    conn.execute("DELETE FROM images WHERE dataset = ? AND list_contains(?, image_id)", [DATASET, ids])
    conn.execute("DELETE FROM histograms WHERE dataset = ? AND list_contains(?, image_id)", [DATASET, ids])
    conn.execute("DELETE FROM kuler_themes WHERE list_contains(?, image_id)", [ids])


def sync_kuler(
    conn: duckdb.DuckDBPyConnection,
    images: Sequence[ImageRow],
    counts: Mapping[str, Sequence[int]],
    themes: Sequence[KulerTheme],
    rejects: Sequence[Reject],
    stage: str,
    temperature: float,
    batch: str | None,
) -> SyncStats:
    """Make dataset 'kuler' hold exactly these accepted themes and these `stage` rejects.

    A histogram is rewritten when its counts changed or when it was built with another softmax
    temperature (read from kuler_themes, since histograms does not keep it).
    """
    old_images, old_themes = _existing_images(conn), _existing_themes(conn)
    old_counts, old_rejects = _existing_counts(conn), existing_rejects(conn, stage)
    new_ids = {row.image_id for row in images}
    stale = sorted((set(old_images) | set(old_counts) | set(old_themes)) - new_ids)

    changed_images = [r for r in images if old_images.get(r.image_id) != r]
    changed_counts = [
        (image_id, list(c))
        for image_id, c in counts.items()
        if old_counts.get(image_id) != list(c)
        or image_id not in old_themes
        or old_themes[image_id].temperature != float(temperature)
    ]
    changed_themes = [t for t in themes if old_themes.get(t.image_id) != t]
    new_rejects = {r.item_id: r.reason for r in rejects}
    if len(new_rejects) != len(rejects):
        raise ValueError(f"{len(rejects) - len(new_rejects)} rejects share an item_id; each needs its own")
    gone = sorted(set(old_rejects) - set(new_rejects))
    changed_rejects = [r for r in rejects if old_rejects.get(r.item_id) != r.reason]

    with transaction(conn):
        if stale:
            _delete_ids(conn, stale)
        if gone:
            conn.execute(
                "DELETE FROM rejects WHERE dataset = ? AND stage = ? AND list_contains(?, item_id)",
                [DATASET, stage, gone],
            )
        upsert_images(conn, DATASET, changed_images)
        if changed_counts:
            upsert_histograms(conn, DATASET, changed_counts, temperature)
        upsert_themes(conn, changed_themes)
        record_rejects(conn, DATASET, stage, changed_rejects, batch)
    return SyncStats(
        images_written=len(changed_images),
        histograms_written=len(changed_counts),
        themes_written=len(changed_themes),
        rejects_written=len(changed_rejects),
        rows_removed=len(stale),
        rejects_cleared=len(gone),
    )


def kuler_accounting(conn: duckdb.DuckDBPyConnection, stage: str = "ratings") -> dict[str, int]:
    """Themes and ratings as the warehouse holds them, for the accounting identity
    themes read = accepted + theme rejects, ratings read = sum(n_ratings) + rating rejects (2014 release)."""
    accepted, votes = conn.execute(
        "SELECT count(*), coalesce(sum(n_ratings), 0) FROM histograms WHERE dataset = ?", [DATASET]
    ).fetchone()
    theme_rejects, rating_rejects = conn.execute(
        "SELECT count(*) FILTER (WHERE NOT starts_with(item_id, 'rating:')),"
        " count(*) FILTER (WHERE starts_with(item_id, 'rating:'))"
        " FROM rejects WHERE dataset = ? AND stage = ?",
        [DATASET, stage],
    ).fetchone()
    images = conn.execute("SELECT count(*) FROM images WHERE dataset = ?", [DATASET]).fetchone()[0]
    return {
        "images": int(images),
        "themes_accepted": int(accepted),
        "themes_rejected": int(theme_rejects),
        "ratings_kept": int(votes),
        "ratings_rejected": int(rating_rejects),
    }
