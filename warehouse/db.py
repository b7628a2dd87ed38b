"""Connections to the DuckDB warehouse and its migrations.

DuckDB lets one process at a time open a database file for writing, and while it
is open no other process may open it at all. Dagster's multiprocess executor runs
several assets at once, so every connection here is short (one unit of work) and
opening it retries with backoff while another process holds the file lock.
"""

from __future__ import annotations

import functools
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

# Fragments of the messages DuckDB raises when another process holds the file.
_LOCK_MESSAGES = ("Could not set lock on file", "Conflicting lock is held")
# ... and when the file is not a whole DuckDB database: garbage bytes, a cut-off copy (both when opening), a block
# whose checksum fails (when a query reaches it).
_DAMAGE_MESSAGES = ("not a valid DuckDB database file", "Could not read enough bytes", "Corrupt database file")


class WarehouseUnreadable(Exception):
    """The warehouse file exists but is not a readable DuckDB database; str() is one line that names the file
    and says what to do. Nothing is written to the file once this is known."""

    def __init__(self, path: Path, detail: str) -> None:
        detail = " ".join(detail.split())
        super().__init__(
            f"warehouse {path} is not a readable DuckDB database ({detail}); restore it from a backup, or, for a "
            "demo home, run `make clean` (it removes AESTHETIC_HOME) and materialise again")


def _is_lock_error(exc: Exception) -> bool:
    return any(fragment in str(exc) for fragment in _LOCK_MESSAGES)


def _is_damage(exc: Exception, path: Path) -> bool:
    """DuckDB's own words for a damaged file, about this file: a corrupt SQLite snapshot attached to the same
    connection (SAC) is the stage's to report, not the warehouse's."""
    text = str(exc)
    return any(fragment in text for fragment in _DAMAGE_MESSAGES) and (
        path.name in text or "Corrupt database file" in text)


def _create_whole(path: Path) -> None:
    """Create a missing warehouse under a private name and link it into place, so the path only ever holds a
    whole database. Several steps that open a new warehouse at once would otherwise race DuckDB's own creation:
    one could read the file while another is still writing its header, and fail with "not a valid DuckDB
    database file" (seen under the multiprocess executor)."""
    import duckdb

    if path.exists():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.creating")
    try:
        duckdb.connect(str(tmp)).close()
        os.link(tmp, path)  # atomic, and refuses to replace: the first creator wins, the others use its file
    except FileExistsError:
        pass
    except OSError:  # no hard links on this filesystem: DuckDB creates the file itself, as it would anyway
        pass
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)


def open_connection(
    path: str | Path, read_only: bool = False, timeout_s: float = 300.0
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, waiting (jittered exponential backoff) while another process holds it."""
    import duckdb

    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_whole(path)
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if _is_damage(exc, path):
                raise WarehouseUnreadable(path, str(exc)) from None
            if not _is_lock_error(exc) or time.monotonic() > deadline:
                if _is_lock_error(exc):
                    raise TimeoutError(
                        f"warehouse {path} stayed locked by another process for {timeout_s:.0f}s: {exc}"
                    ) from exc
                raise
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 1.0)


@contextmanager
def connect(
    path: str | Path, read_only: bool = False, timeout_s: float = 300.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection, migrated when writable, always closed. A damaged file, found when opening it or
    by a later query, raises WarehouseUnreadable (one line) instead of DuckDB's error."""
    import duckdb

    conn = open_connection(path, read_only=read_only, timeout_s=timeout_s)
    try:
        if not read_only:
            migrate(conn)
        yield conn
    except duckdb.IOException as exc:
        if _is_damage(exc, Path(path)):
            raise WarehouseUnreadable(Path(path), str(exc)) from None
        raise
    finally:
        conn.close()


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT, or ROLLBACK when the body raises."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def dead_row_fraction(conn: duckdb.DuckDBPyConnection, table: str) -> float:
    """Share of a table's stored rows that are deleted but not yet vacuumed (0 for an empty table)."""
    # pragma_storage_info counts every stored row, deleted ones included, until a vacuum drops them.
    stored = conn.execute(
        "SELECT coalesce(sum(count), 0) FROM pragma_storage_info(?) WHERE column_id = 0 AND segment_type <> 'VALIDITY'",
        [table],
    ).fetchone()[0]
    live = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    return 1 - live / stored if stored > live else 0.0


def checkpoint(conn: duckdb.DuckDBPyConnection, defer_vacuum_of: str | None = None,
               max_dead_fraction: float = 0.25) -> bool:
    """CHECKPOINT now (outside a transaction); returns whether vacuuming was allowed.

    A table that replaces a small part of its rows on every run (SAC backfills delete and re-insert the
    histograms of the images they touch) would be vacuumed at every checkpoint: DuckDB rewrites each row group
    holding a deleted row, which for 10% of 1M histograms was most of the checkpoint's time (docs/sac.md).
    defer_vacuum_of skips that while under max_dead_fraction of the table's stored rows are dead (scans skip
    them), so the rewrite happens once per several runs instead of every run.
    """
    vacuum = defer_vacuum_of is None or dead_row_fraction(conn, defer_vacuum_of) >= max_dead_fraction
    if vacuum:
        conn.execute("CHECKPOINT")
        return True
    conn.execute("SET max_vacuum_tasks = 0")
    try:
        conn.execute("CHECKPOINT")
    finally:
        conn.execute("RESET max_vacuum_tasks")
    return False


@functools.cache
def migration_files() -> tuple[tuple[str, str], ...]:
    """(name, sql) of every numbered migration shipped in warehouse/migrations, in order."""
    folder = resources.files("warehouse") / "migrations"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return tuple((name, (folder / name).read_text()) for name in names)


def migrate(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply the migrations not yet recorded in schema_migrations; return the names applied."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " name VARCHAR PRIMARY KEY, applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations").fetchall()}
    applied = []
    for name, sql in migration_files():
        if name in done:
            continue
        with transaction(conn):
            conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations (name) VALUES (?)", [name])
        applied.append(name)
    return applied
