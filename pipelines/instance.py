"""The Dagster instance folder (DAGSTER_HOME) and its dagster.yaml."""

from __future__ import annotations

from pathlib import Path

# SQLite storage under DAGSTER_HOME; pools of one for the GPU (one training per worker) and the
# DuckDB writer. Move storage to Postgres by replacing the storage block (README, "Operating it").
SQLITE_STORAGE = """\
storage:
  sqlite:
    base_dir: {home}
"""
# The two-host shape: run storage both hosts reach (a run process opens the instance of the side that launched
# it). The URL comes from the environment of each process: webserver, daemon and both code servers.
POSTGRES_STORAGE = """\
storage:
  postgres:
    postgres_url: {{env: DAGSTER_PG_URL}}
"""
DAGSTER_YAML = """\
{storage}
concurrency:
  pools:
    default_limit: 1
  runs:
    max_concurrent_runs: 4

run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator

telemetry:
  enabled: false
"""


def ensure_dagster_home(path: str | Path, postgres: bool = False) -> Path:
    """Create DAGSTER_HOME with its dagster.yaml if missing (SQLite storage, or Postgres at $DAGSTER_PG_URL); an
    existing dagster.yaml is left alone."""
    home = Path(path).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        storage = POSTGRES_STORAGE.format() if postgres else SQLITE_STORAGE.format(home=home)
        config.write_text(DAGSTER_YAML.format(storage=storage))
    return home


def prepare_instance(path: str | Path, postgres: bool = False) -> Path:
    """ensure_dagster_home, then create the instance's storage once, in this process.

    Run it before starting the webserver and the daemon on a new DAGSTER_HOME: each of them would
    otherwise create the SQLite run storage at the same moment, and two processes stamping its alembic
    version table at once leave it with two heads ("more than one head present"), after which no code
    location loads. Dagster retries that race for the event log, not for the run storage.
    """
    import dagster as dg

    home = ensure_dagster_home(path, postgres)
    with dg.DagsterInstance.from_config(str(home)):
        pass  # opening the instance creates and stamps runs.db, the event log index and schedules.db
    return home


if __name__ == "__main__":
    import os
    import sys

    args = [a for a in sys.argv[1:] if a != "--postgres"]
    print(prepare_instance(args[0] if args else os.environ["DAGSTER_HOME"], postgres="--postgres" in sys.argv))
