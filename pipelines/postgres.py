"""A PostgreSQL cluster of its own for the two-host shape's Dagster storage, run from the machine's PostgreSQL on
127.0.0.1: what `make split` and the split test start (docs/operating.md, "Two hosts"). A deployment points
DAGSTER_PG_URL at its own server instead.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user that Debian's package
creates (its folder is handed to that user, and every tool runs through runuser).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

USER = "dagster"  # the cluster's superuser, trusted on 127.0.0.1 only
DATABASE = "dagster"


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries here; str() is one line saying what to install."""


def pg_tool(name: str) -> str:
    """A server binary (initdb, pg_ctl): Debian keeps them in /usr/lib/postgresql/<version>/bin, off the PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    path = found[-1] if found else shutil.which(name)
    if not path:
        raise PostgresMissing(f"no PostgreSQL {name} on this machine: install the server (as root: apt-get install "
                              "postgresql; `make test` does it) or set DAGSTER_PG_URL to a server of your own")
    return path


def url(port: int) -> str:
    return f"postgresql+psycopg2://{USER}@127.0.0.1:{port}/{DATABASE}"


def _as_owner(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _run(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(_as_owner(args), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}")
    return done


def start(data: Path, port: int) -> str:
    """Create the cluster in `data` when it has none, start it on 127.0.0.1:port unless it runs, create the
    database; return its URL (what DAGSTER_PG_URL is set to)."""
    data = Path(data).resolve()
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(data, owner.pw_uid, owner.pw_gid)
        _run([pg_tool("initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"])
    running = subprocess.run(_as_owner([pg_tool("pg_ctl"), "status", "-D", str(data)]), capture_output=True)
    if running.returncode != 0:
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data}"
        _run([pg_tool("pg_ctl"), "start", "-D", str(data), "-w", "-t", "60", "-l", str(data / "server.log"),
              "-o", options])
    _create_database(port)
    return url(port)


def _create_database(port: int) -> None:
    import psycopg2  # comes with dagster-postgres

    conn = psycopg2.connect(host="127.0.0.1", port=port, user=USER, dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE])
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        conn.close()


def stop(data: Path) -> None:
    """Stop the cluster in `data` (fast shutdown: open sessions are ended), if it runs."""
    running = subprocess.run(_as_owner([pg_tool("pg_ctl"), "status", "-D", str(data)]), capture_output=True)
    if running.returncode == 0:
        _run([pg_tool("pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w", "-t", "60"])


@contextmanager
def running(data: Path, port: int) -> Iterator[str]:
    """A cluster started for the block and stopped after it; yields its URL."""
    try:
        yield start(data, port)
    finally:
        stop(data)


if __name__ == "__main__":
    # python -m pipelines.postgres start DIR PORT  (prints the URL) | stop DIR
    verb, folder = sys.argv[1], Path(sys.argv[2])
    print(start(folder, int(sys.argv[3])) if verb == "start" else stop(folder))
