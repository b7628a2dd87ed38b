"""DAGSTER_HOME is prepared once, before any service starts, so the webserver and the daemon never race."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg

from pipelines.instance import prepare_instance

# The SQLite storages of `storage: sqlite` and where Dagster keeps them under base_dir.
STORAGE_DBS = ("history/runs.db", "history/runs/index.db", "schedules/schedules.db")


def _alembic_heads(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]


def test_prepare_instance_creates_every_storage_with_one_alembic_head(tmp_path):
    home = prepare_instance(tmp_path / "dagster")
    assert (home / "dagster.yaml").is_file()
    for name in STORAGE_DBS:
        heads = _alembic_heads(home / name)
        assert len(heads) == 1, f"{name}: {heads}"


def test_prepare_instance_twice_keeps_the_storage_and_the_config(tmp_path):
    home = prepare_instance(tmp_path / "dagster")
    (home / "dagster.yaml").write_text((home / "dagster.yaml").read_text() + "\n# edited by the operator\n")
    before = {name: _alembic_heads(home / name) for name in STORAGE_DBS}
    assert prepare_instance(home) == home
    assert "edited by the operator" in (home / "dagster.yaml").read_text()
    assert {name: _alembic_heads(home / name) for name in STORAGE_DBS} == before


def test_a_prepared_home_opens_as_the_configured_instance(tmp_path):
    home = prepare_instance(tmp_path / "dagster")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs() == []
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
