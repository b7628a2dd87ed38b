"""The model ledger: how a training host that writes no warehouse rows hands its models to the data host.

In the two-host shape (docs/operating.md, "Two hosts") the warehouse file has one writer, the data host: DuckDB
admits one writing process per file, and its lock is only as good as the shared filesystem's locks, which NFS
and most network filesystems do not give across hosts. The training host writes files instead, each once:

- the checkpoint and its model card under models/ (nima_train/runs.py), as on one machine;
- one JSON event per unit of work under <ledger>/events/, numbered 1, 2, 3, ... without gaps: the rows of
  `models`, `model_aliases` and `eval_reports` that the unit inserted or replaced. An event is written under a
  temporary name and hard-linked to its number, which fails if the number exists: two writers never share one.

A training host reads its own model state by replaying every event into an in-memory DuckDB database with the
warehouse's schema, so the training, evaluation and promotion code runs unchanged against it (ledger_connection).
The data host copies new events into the warehouse in order, each in one transaction with its `ledger_events`
row (record_ledger), and stops at the first number not yet visible, so a late NFS listing never reorders them.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warehouse.db import migrate, transaction

if TYPE_CHECKING:
    import duckdb

# Each table the ledger carries, and the columns that identify one of its rows.
LEDGER_TABLES: dict[str, tuple[str, ...]] = {
    "models": ("version",),
    "model_aliases": ("alias",),
    "eval_reports": ("model_version", "dataset", "split"),
}
EVENTS = "events"
_WIDTH = 10  # digits of an event's number: 0000000001.json


class LedgerError(RuntimeError):
    """A unit of work the ledger cannot carry, or an event the warehouse cannot take; str() is one line."""


def event_path(folder: Path, seq: int) -> Path:
    return folder / EVENTS / f"{seq:0{_WIDTH}d}.json"


def event_numbers(folder: Path) -> list[int]:
    """The numbers of the events present, in order."""
    names = os.listdir(folder / EVENTS) if (folder / EVENTS).is_dir() else []
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())


def read_events(folder: Path, after: int = 0) -> list[dict[str, Any]]:
    """The events numbered after `after`, in order, up to the first gap (a number not yet visible here)."""
    events, expected = [], after + 1
    for seq in event_numbers(folder):
        if seq < expected:
            continue
        if seq != expected:
            break
        events.append(json.loads(event_path(folder, seq).read_text()))
        expected += 1
    return events


@contextmanager
def ledger_lock(folder: Path, timeout_s: float = 300.0) -> Iterator[None]:
    """One unit of work at a time on the training host (an flock on <ledger>/lock, waited for with a deadline)."""
    folder.mkdir(parents=True, exist_ok=True)
    deadline, delay = time.monotonic() + timeout_s, 0.02
    with open(folder / "lock", "a+b") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"model ledger {folder} stayed locked for {timeout_s:.0f}s") from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def ledger_connection(folder: str | Path, read_only: bool = False,
                      timeout_s: float = 300.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory warehouse holding every model row the ledger carries; when the block ends without an error,
    the rows it inserted or replaced become the next event. Another table written, or a row deleted, is refused
    (LedgerError): the data host would never see it."""
    folder = Path(folder)
    with ledger_lock(folder, timeout_s):
        import duckdb

        conn = duckdb.connect(":memory:")
        try:
            migrate(conn)
            events = read_events(folder)
            for event in events:
                apply_event(conn, event)
            before = _rows(conn)
            yield conn
            changed = _changes(conn, before)
            if changed and read_only:
                raise LedgerError(f"a read-only connection to the model ledger {folder} changed rows")
            if changed:
                _write_event(folder, len(events) + 1, changed)
        finally:
            conn.close()


def record_ledger(conn: duckdb.DuckDBPyConnection, folder: str | Path) -> list[int]:
    """Copy the events not yet recorded into the warehouse, in order, one transaction each (with its
    `ledger_events` row, so each is recorded once); return their numbers."""
    folder = Path(folder)
    done = conn.execute("SELECT coalesce(max(seq), 0) FROM ledger_events").fetchone()[0]
    recorded = []
    for event in read_events(folder, after=done):
        with transaction(conn):
            apply_event(conn, event)
            conn.execute("INSERT INTO ledger_events (seq, host, written_at) VALUES (?, ?, ?)",
                         [event["seq"], event.get("host"), event.get("written_at")])
        recorded.append(event["seq"])
    return recorded


def apply_event(conn: duckdb.DuckDBPyConnection, event: dict[str, Any]) -> None:
    """Insert or replace the event's rows (the caller holds the transaction)."""
    for table, rows in event["tables"].items():
        if table not in LEDGER_TABLES:
            raise LedgerError(f"ledger event {event['seq']} carries table {table!r}, which the ledger does not")
        known = {r[0] for r in conn.execute(f"DESCRIBE {table}").fetchall()}
        keys = LEDGER_TABLES[table]
        for row in rows:
            unknown = sorted(set(row) - known)
            if unknown:
                raise LedgerError(f"ledger event {event['seq']} has {table} columns {unknown} this warehouse lacks: "
                                  "update the data host's code (its migrations) first")
            conn.execute(f"DELETE FROM {table} WHERE {' AND '.join(f'{k} = ?' for k in keys)}",
                         [row[k] for k in keys])
            conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                         list(row.values()))


def _rows(conn: duckdb.DuckDBPyConnection) -> dict[str, dict[tuple, dict[str, Any]]]:
    """Every row of the ledger's tables, by table and key, as JSON-able values."""
    out = {}
    for table, keys in LEDGER_TABLES.items():
        cursor = conn.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, map(_plain, r), strict=True)) for r in cursor.fetchall()]
        out[table] = {tuple(r[k] for k in keys): r for r in rows}
    return out


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime | date) else value


def _changes(conn: duckdb.DuckDBPyConnection, before: dict[str, dict[tuple, dict[str, Any]]]) -> dict[str, list]:
    """The rows inserted or replaced since `before`; LedgerError for a deleted row or another table written."""
    others = [t for (t,) in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()
              if t not in LEDGER_TABLES and t != "schema_migrations"
              and conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]]
    if others:
        raise LedgerError(f"the training host wrote {', '.join(sorted(others))}: only models, model_aliases and "
                          "eval_reports travel through the model ledger")
    after, changed = _rows(conn), {}
    for table, rows in after.items():
        gone = set(before[table]) - set(rows)
        if gone:
            raise LedgerError(f"the model ledger records inserts and replacements only; {table} lost {sorted(gone)}")
        new = [r for k, r in rows.items() if before[table].get(k) != r]
        if new:
            changed[table] = new
    return changed


def _write_event(folder: Path, seq: int, tables: dict[str, list]) -> None:
    """Event `seq`, whole or not at all, never over an existing one."""
    event = {"seq": seq, "host": socket.gethostname(), "pid": os.getpid(),
             "written_at": datetime.now(UTC).replace(tzinfo=None).isoformat(), "tables": tables}
    dest = event_path(folder, seq)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:  # on the disk (and the NFS server) before it has a number
            fh.write(json.dumps(event, sort_keys=True).encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, dest)  # atomic, and refuses an existing number: a second writer fails instead of overwriting
    except FileExistsError:
        raise LedgerError(f"model ledger event {dest} already exists: another host writes this ledger; only the "
                          "training host may") from None
    finally:
        tmp.unlink(missing_ok=True)
