"""Connections to the DuckDB warehouse and its migrations.

DuckDB lets one process at a time open a database file for writing, and while it
is open no other process may open it at all. Dagster's multiprocess executor runs
several assets at once, so every connection here is short (one unit of work) and
opening it retries with backoff while another process holds the file lock.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import duckdb

# Fragments of the messages DuckDB raises when another process holds the file.
_LOCK_MESSAGES = ("Could not set lock on file", "Conflicting lock is held")


def _is_lock_error(exc: Exception) -> bool:
    return any(fragment in str(exc) for fragment in _LOCK_MESSAGES)


def open_connection(
    path: str | Path, read_only: bool = False, timeout_s: float = 300.0
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, waiting (jittered exponential backoff) while another process holds it."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
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
    """A short-lived connection, migrated when writable, always closed."""
    conn = open_connection(path, read_only=read_only, timeout_s=timeout_s)
    try:
        if not read_only:
            migrate(conn)
        yield conn
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


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every numbered migration shipped in warehouse/migrations, in order."""
    folder = resources.files("warehouse") / "migrations"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name, (folder / name).read_text()) for name in names]


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
