"""SAC (Simulacra Aesthetic Captions) queries: the SQLite snapshot read through DuckDB, ratings merged
by (sid, iid), and histograms rebuilt only for the images whose ratings changed.

The snapshot is ATTACHed to the warehouse connection as `sac_src` (read-only); the SQL lives in
warehouse/sac_*.sql. Call order for one snapshot (ingest/sac.py does this):
stage_snapshot -> insert_new_ratings -> record_rating_rejects -> remember_boundary -> crop_candidates
-> image_boundary (then crop, without a connection) -> merge_pending_histograms -> remember_image_boundary.

stage_snapshot scans the ratings once into a temp table; a snapshot that only appends rows to an
earlier one's file is read from that one's last rowid on (resume_rowid).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from warehouse.labels import merge_staged_histograms
from warehouse.records import Reject, record_rejects

if TYPE_CHECKING:
    import duckdb

DATASET = "sac"
SOURCE_ALIAS = "sac_src"
T = TypeVar("T")
PIP_FIX = "pip install duckdb-extension-sqlite-scanner==1.5.5 duckdb-extensions==1.5.5"


def _sql(name: str) -> str:
    return (resources.files("warehouse") / name).read_text()


class SqliteExtensionUnavailable(RuntimeError):
    """DuckDB's sqlite extension could not be loaded offline."""


def load_sqlite_extension(conn: duckdb.DuckDBPyConnection, extension: str = "sqlite_scanner") -> None:
    """Load DuckDB's sqlite extension from the pinned PyPI wheel (no network; `INSTALL sqlite` needs one)."""
    import duckdb

    try:
        from duckdb_extensions import import_extension

        import_extension(extension, con=conn)
        conn.execute(f"LOAD {extension}")
    except (ImportError, duckdb.Error) as exc:
        raise SqliteExtensionUnavailable(
            f"DuckDB's sqlite extension ({extension}) could not be loaded offline: {exc}. "
            f"Fix: {PIP_FIX} (versions must match duckdb {duckdb.__version__})."
        ) from exc


def _sql_string(text: str) -> str:
    # ATTACH takes no bound parameters (DuckDB's parser wants a literal), so quote the path here.
    return "'" + text.replace("'", "''") + "'"


@contextmanager
def attach_snapshot(conn: duckdb.DuckDBPyConnection, path: str | Path, all_varchar: bool = False) -> Iterator[str]:
    """ATTACH a SAC SQLite file read-only as `sac_src` (all_varchar: every column as text); DETACH afterwards."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"SAC snapshot {path} does not exist")
    load_sqlite_extension(conn)
    conn.execute(f"SET sqlite_all_varchar = {'true' if all_varchar else 'false'}")
    conn.execute(f"ATTACH {_sql_string(str(path))} AS {SOURCE_ALIAS} (TYPE sqlite, READ_ONLY)")
    try:
        missing = {"images", "paths", "ratings"} - {
            r[0] for r in conn.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [SOURCE_ALIAS]
            ).fetchall()
        }
        if missing:
            raise ValueError(f"{path} is not a SAC database: no table(s) {', '.join(sorted(missing))}")
        yield SOURCE_ALIAS
    finally:
        conn.execute(f"DETACH {SOURCE_ALIAS}")
        conn.execute("RESET sqlite_all_varchar")


def with_snapshot(
    conn: duckdb.DuckDBPyConnection, path: str | Path, work: Callable[[duckdb.DuckDBPyConnection], T]
) -> T:
    """work(conn) with the snapshot attached. Typed columns scan twice as fast as text, but SQLite is
    dynamically typed and one 'seven' in an INTEGER column aborts a typed scan: then work runs again
    (it must roll back its own transaction on error) with every column read as text, where such
    values become rejects."""
    import duckdb

    try:
        with attach_snapshot(conn, path, all_varchar=False):
            return work(conn)
    except duckdb.TypeMismatchException:
        with attach_snapshot(conn, path, all_varchar=True):
            return work(conn)


@dataclass(frozen=True)
class RatingCounts:
    """Ratings rows of one snapshot by class (see sac_stage_ratings.sql)."""

    by_status: dict[str, int]

    @property
    def read(self) -> int:
        return sum(self.by_status.values())

    @property
    def ignored(self) -> int:
        return self.by_status.get("null", 0)

    @property
    def valid(self) -> int:
        return self.by_status.get("ok", 0)

    @property
    def rejected(self) -> int:
        return self.read - self.ignored - self.valid


def create_snapshot_views(conn: duckdb.DuckDBPyConnection, after_rowid: int | None = None) -> None:
    """Temp table sac_snap_images (the snapshot's image ids) over the attached `sac_src` (sac_stage.sql): all
    of them, or with after_rowid only the images past it (an ingested snapshot's images boundary)."""
    if after_rowid is None:
        conn.execute(f"CREATE OR REPLACE TEMP VIEW sac_snap_images_src AS SELECT id FROM {SOURCE_ALIAS}.images")
    else:
        # SQLite seeks to the rowid; the scanner would read the whole table.
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE sac_snap_images_tail AS SELECT * FROM sqlite_query("
            f"'{SOURCE_ALIAS}', 'SELECT id FROM images WHERE rowid > ?', params := {{'after': ?::BIGINT}})",
            [after_rowid],
        )
        conn.execute("CREATE OR REPLACE TEMP VIEW sac_snap_images_src AS SELECT * FROM sac_snap_images_tail")
    conn.execute(_sql("sac_stage.sql"))


def max_rowid(conn: duckdb.DuckDBPyConnection, table: str) -> int | None:
    """The largest rowid of an attached snapshot table (None: empty, or a table without rowids)."""
    import duckdb

    assert table in _SPREAD_COLUMNS
    try:
        row = conn.execute(f"SELECT * FROM sqlite_query('{SOURCE_ALIAS}', 'SELECT max(rowid) FROM {table}')").fetchone()
    except duckdb.Error:  # e.g. a WITHOUT ROWID table: read it whole
        return None
    return int(row[0]) if row and row[0] is not None else None


# What a fingerprint reads of each table, as (a, b, c) beside the rowid (sac_fingerprint.sql).
_SPREAD_COLUMNS = {"ratings": "r.sid AS a, r.iid AS b, r.rating AS c", "images": "r.id AS a, r.gid AS b, '' AS c"}


def _spread_rows(table: str) -> str:
    """The SQLite query for the rows of `table` at 17 rowids spread over 1..?1, ?1 included."""
    return (
        "WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n < 16)"
        f" SELECT r.rowid AS rowid, {_SPREAD_COLUMNS[table]}"
        f" FROM k JOIN {table} r ON r.rowid = max(1, (?1 * k.n) / 16)"
    )


def fingerprint(conn: duckdb.DuckDBPyConnection, table: str, max_rowid: int) -> str:
    """sha256 of an attached table's rows at 17 rowids spread over 1..max_rowid (sac_fingerprint.sql)."""
    return conn.execute(_sql("sac_fingerprint.sql"), [max_rowid, _spread_rows(table)]).fetchone()[0]


def count_images(conn: duckdb.DuckDBPyConnection, up_to_rowid: int | None = None) -> int:
    """Rows of the attached images table (with up_to_rowid: those at or below it; SQLite counts a rowid range)."""
    if up_to_rowid is None:
        sql, params = f"SELECT * FROM sqlite_query('{SOURCE_ALIAS}', 'SELECT count(*) FROM images')", []
    else:
        sql = (f"SELECT * FROM sqlite_query('{SOURCE_ALIAS}', 'SELECT count(*) FROM images WHERE rowid <= ?',"
               " params := {'up_to': ?::BIGINT})")
        params = [up_to_rowid]
    return int(conn.execute(sql, params).fetchone()[0])


def resume_images_rowid(conn: duckdb.DuckDBPyConnection, max_images_rowid: int | None) -> int | None:
    """The images rowid after which the attached snapshot holds only images no ingested snapshot had, or None.

    As for ratings (resume_rowid), trusted when an ingested snapshot's images boundary (sac_image_boundaries)
    still has as many rows at or below it and the rows at 17 spread rowids match its fingerprint. Images ids
    are explicit, so a new image may also fill a gap below the boundary: the row count catches that.
    """
    if max_images_rowid is None:
        return None
    stored = conn.execute(
        "SELECT DISTINCT max_rowid, n_rows, fingerprint FROM sac_image_boundaries WHERE max_rowid <= ?"
        " ORDER BY max_rowid DESC",
        [max_images_rowid],
    ).fetchall()
    for boundary, n_rows, stored_fingerprint in stored:
        # SQLite counts a whole table faster than a rowid range
        rows = count_images(conn, None if boundary == max_images_rowid else boundary)
        if rows == n_rows and fingerprint(conn, "images", boundary) == stored_fingerprint:
            return boundary
    return None


def resume_rowid(conn: duckdb.DuckDBPyConnection, max_rowid: int | None) -> int | None:
    """The rowid after which the attached snapshot holds only rows no earlier snapshot had, or None (read it whole).

    SQLite appends rows with rowid max+1, so a later copy of the same database repeats an earlier
    snapshot's rows 1..its max_rowid. That is trusted when the rows at 17 spread rowids, the boundary
    row included, match the earlier snapshot's fingerprint (sac_rating_boundaries); a rewritten file
    fails it and is read whole. Also read whole while an earlier row rejected as 'unknown image' points
    at an image this snapshot has: that row is a vote now. Needs sac_snap_images (create_snapshot_views).
    """
    if max_rowid is None:
        return None
    stored = conn.execute(
        "SELECT DISTINCT max_rowid, fingerprint FROM sac_rating_boundaries WHERE max_rowid <= ?"
        " ORDER BY max_rowid DESC",
        [max_rowid],
    ).fetchall()
    for boundary, stored_fingerprint in stored:
        if fingerprint(conn, "ratings", boundary) == stored_fingerprint:
            return boundary if not conn.execute(_sql("sac_resume_blocked.sql")).fetchone()[0] else None
    return None


@dataclass(frozen=True)
class StagedSnapshot:
    """What stage_snapshot read: images, ratings rows by class, and which ratings and images rows."""

    images: int
    ratings: RatingCounts
    max_rowid: int | None  # the snapshot's largest ratings rowid (its boundary for later snapshots)
    after_rowid: int | None  # only rows past this rowid were read (an earlier snapshot had the rest); None: all
    images_max_rowid: int | None = None  # the largest images rowid (the images boundary for later snapshots)
    images_after_rowid: int | None = None  # only images past this rowid were staged; None: all of them

    @property
    def tail_only(self) -> bool:
        return self.after_rowid is not None


def stage_snapshot(conn: duckdb.DuckDBPyConnection, resume: bool = True) -> StagedSnapshot:
    """Stage the attached snapshot: sac_snap_images, then its ratings rows (all of them, or with resume
    only those past resume_rowid) scanned once into the classified temp table sac_snap_ratings.

    With resume, a snapshot whose ratings and images both continue an ingested snapshot's stages only the
    images past that one's images boundary (resume_images_rowid): the ratings then check their images
    against those and the ones the warehouse already accounts for (sac_rated_known_images.sql)."""
    images_max = max_rowid(conn, "images")
    images_after = resume_images_rowid(conn, images_max) if resume else None
    create_snapshot_views(conn, images_after)
    ratings_max = max_rowid(conn, "ratings")
    # resume_rowid's check for earlier 'unknown image' votes needs only the new images: an ingested
    # snapshot's images were there when its own ratings were classified.
    after = resume_rowid(conn, ratings_max) if resume else None
    if after is None and images_after is not None:
        images_after = None  # every rating is read, so every image is needed to check them
        create_snapshot_views(conn)
    if after is None:
        conn.execute(
            f"CREATE OR REPLACE TEMP VIEW sac_snap_ratings_src AS"
            f" SELECT rowid AS row_no, sid, iid, rating FROM {SOURCE_ALIAS}.ratings"
        )
        conn.execute(
            "CREATE OR REPLACE TEMP VIEW sac_snap_rated_images AS"
            " SELECT DISTINCT iid FROM sac_snap_images WHERE iid IS NOT NULL"
        )
    else:
        # SQLite reads only the tail (a rowid range seek); the scanner would read the whole table.
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE sac_snap_ratings_tail AS SELECT * FROM sqlite_query("
            f"'{SOURCE_ALIAS}', 'SELECT rowid AS row_no, sid, iid, rating FROM ratings WHERE rowid > ?',"
            " params := {'after': ?::BIGINT})",
            [after],
        )
        conn.execute("CREATE OR REPLACE TEMP VIEW sac_snap_ratings_src AS SELECT * FROM sac_snap_ratings_tail")
        if images_after is None:
            # Only the images the tail rates: the image check then joins a small table, not all 1M ids (the
            # whole-file path cannot do this: it would read the SQLite ratings twice).
            conn.execute(
                "CREATE OR REPLACE TEMP VIEW sac_snap_rated_images AS"
                " SELECT DISTINCT iid FROM sac_snap_images"
                " WHERE iid IN (SELECT TRY_CAST(iid AS BIGINT) FROM sac_snap_ratings_tail)"
            )
        else:
            conn.execute(_sql("sac_rated_known_images.sql"), [images_after])
    conn.execute(_sql("sac_stage_ratings.sql"))
    counts = dict(conn.execute(_sql("sac_rating_summary.sql")).fetchall())
    images = count_images(conn) if images_after is not None else conn.execute(
        "SELECT count(*) FROM sac_snap_images").fetchone()[0]
    return StagedSnapshot(images, RatingCounts(counts), ratings_max, after, images_max, images_after)


def remember_boundary(conn: duckdb.DuckDBPyConnection, snapshot: str, staged: StagedSnapshot) -> None:
    """Store where this snapshot's ratings end (call in the transaction that stores its ratings)."""
    if staged.max_rowid is not None:
        conn.execute(
            "INSERT OR REPLACE INTO sac_rating_boundaries (snapshot, max_rowid, fingerprint) VALUES (?, ?, ?)",
            [snapshot, staged.max_rowid, fingerprint(conn, "ratings", staged.max_rowid)],
        )


def image_boundary(conn: duckdb.DuckDBPyConnection, staged: StagedSnapshot) -> tuple[int, int, str] | None:
    """(max_rowid, rows, fingerprint) of the attached snapshot's images, for remember_image_boundary."""
    if staged.images_max_rowid is None:
        return None
    boundary = staged.images_max_rowid  # the largest rowid: every images row is at or below it
    return boundary, staged.images, fingerprint(conn, "images", boundary)


def remember_image_boundary(
    conn: duckdb.DuckDBPyConnection, snapshot: str, boundary: tuple[int, int, str] | None
) -> None:
    """Store where this snapshot's images end; call in the transaction that stores the results of its crops
    (every image up to there is then cropped or rejected, which resume_images_rowid relies on)."""
    if boundary is not None:
        conn.execute(
            "INSERT OR REPLACE INTO sac_image_boundaries (snapshot, max_rowid, n_rows, fingerprint)"
            " VALUES (?, ?, ?, ?)",
            [snapshot, *boundary],
        )


def new_ingest_id() -> str:
    return uuid.uuid4().hex


def insert_new_ratings(
    conn: duckdb.DuckDBPyConnection, snapshot: str, ingest_id: str, tail_only: bool = False
) -> int:
    """Store the staged valid, unseen ratings and queue their histogram work; returns how many.

    A snapshot adding fewer ratings than are stored (a backfill) queues its votes in sac_pending_votes, to be
    added to the stored histograms; a larger one (a first build) queues its images in sac_pending_histograms,
    to be counted from all their ratings. Either way is correct for any image (merge_pending_histograms counts
    queued votes of an image without a histogram from all its ratings); this picks the cheaper one.

    tail_only: only the snapshot's new rows were staged; a rating reject stored for an earlier row of the
    same pair then still stands (the whole-file path clears it and record_rating_rejects re-adds it)."""
    stored = conn.execute("SELECT count(*) FROM sac_ratings").fetchone()[0]
    inserted = int(conn.execute(_sql("sac_insert_ratings.sql"), [snapshot, ingest_id]).fetchone()[0])
    if inserted:
        # ingest_id = ? reads only the row groups this ingest appended (the others' min/max rule them out).
        if inserted < stored:
            conn.execute(
                "INSERT INTO sac_pending_votes (iid, rating) SELECT iid, rating FROM sac_ratings WHERE ingest_id = ?",
                [ingest_id],
            )
        else:
            conn.execute(
                "INSERT OR IGNORE INTO sac_pending_histograms (iid)"
                " SELECT DISTINCT iid FROM sac_ratings WHERE ingest_id = ?",
                [ingest_id],
            )
        if not tail_only:
            conn.execute(_sql("sac_clear_rating_rejects.sql"), [ingest_id])
    return inserted


def record_rating_rejects(conn: duckdb.DuckDBPyConnection, batch: str, tail_only: bool = False) -> int:
    """Bad ratings rows -> rejects (stage 'ratings', item rating:<sid>:<iid>); returns how many are new."""
    return int(conn.execute(_sql("sac_rating_rejects.sql"), [batch, tail_only]).fetchone()[0])


@dataclass(frozen=True)
class Candidate:
    """An image of the snapshot that has no crop yet."""

    iid: int | None  # None when images.id is not an integer
    raw_id: str
    gid: int | None
    path: str | None
    has_votes: bool


def crop_candidates(conn: duckdb.DuckDBPyConnection, staged: StagedSnapshot) -> list[Candidate]:
    """The snapshot's images that have no crop yet (sac_crop_todo.sql, then sac_crop_candidates.sql)."""
    conn.execute(_sql("sac_crop_todo.sql"), [staged.images_after_rowid is not None])
    # Without candidates the snapshot's generations and paths are not read at all.
    if not conn.execute("SELECT count(*) FROM sac_crop_todo").fetchone()[0]:
        return []
    return [Candidate(*row) for row in conn.execute(_sql("sac_crop_candidates.sql")).fetchall()]


def merge_pending_histograms(
    conn: duckdb.DuckDBPyConnection, newly_accepted: Sequence[str], temperature: float = 1.0
) -> int:
    """Update the histograms of images with queued votes and rebuild those of stale and newly cropped
    images (sac_touched.sql); returns how many were written. Empties both queues."""
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE sac_cropped_now AS SELECT CAST(unnest(?::VARCHAR[]) AS BIGINT) AS iid",
        [list(newly_accepted)],
    )
    conn.execute(_sql("sac_touched.sql"))
    conn.execute(_sql("sac_stage_counts.sql"))
    written = merge_staged_histograms(conn, DATASET, temperature)
    # Stale images without a crop are dropped from the queue: once cropped they count as newly accepted.
    conn.execute("DELETE FROM sac_pending_histograms WHERE iid IN (SELECT iid FROM sac_touched)")
    # Every queued vote is now in a histogram: added (sac_added) or counted with all ratings (sac_touched).
    conn.execute("DELETE FROM sac_pending_votes")
    return written


def log_snapshot(
    conn: duckdb.DuckDBPyConnection, snapshot: str, file: str, sha256: str, counts: RatingCounts,
    ratings_new: int, images_read: int,
) -> None:
    """Remember the snapshot; a re-run keeps the first row (its ingested_at and ratings_new)."""
    conn.execute(
        "INSERT OR IGNORE INTO sac_snapshots (snapshot, file, sha256, ratings_read, ratings_new, images_read)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [snapshot, file, sha256, counts.read, ratings_new, images_read],
    )


def record_new_rejects(conn: duckdb.DuckDBPyConnection, stage: str, rejects: Sequence[Reject], batch: str) -> int:
    """records.record_rejects for the rejects not already stored with the same reason (re-runs change nothing)."""
    if not rejects:
        return 0
    stored = dict(
        conn.execute(
            "SELECT item_id, reason FROM rejects WHERE dataset = ? AND stage = ? AND list_contains(?, item_id)",
            [DATASET, stage, [r.item_id for r in rejects]],
        ).fetchall()
    )
    fresh = [r for r in rejects if stored.get(r.item_id) != r.reason]
    return record_rejects(conn, DATASET, stage, fresh, batch)


def mean_scores(conn: duckdb.DuckDBPyConnection) -> list[float]:
    return [r[0] for r in conn.execute("SELECT mean FROM histograms WHERE dataset = 'sac'").fetchall()]
