"""Resolving the critic's model through the warehouse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from critic.scoring import CheckpointMismatch, Critic
from tests.helpers.critic_models import picture, register_model
from warehouse.db import connect
from warehouse.models import get_model
from warehouse.models_lookup import ModelNotFound, current_model, make_current, promoted_version, resolve_model


def test_production_alias_resolves_to_the_promoted_checkpoint_under_home(home: Path) -> None:
    old = register_model(home, "nima_sac", seed=1, alias=None)
    new = register_model(home, "nima_color", seed=2)
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        found = resolve_model(conn, home)
        by_version = resolve_model(conn, home, old)
        assert promoted_version(conn) == new
    assert (found.version, found.name, found.alias) == (new, "nima_color", "production")
    assert found.checkpoint == home / "models" / "nima_color" / new / "model.pt"
    assert (by_version.version, by_version.name, by_version.alias) == (old, "nima_sac", None)
    critic = Critic.from_checkpoint(found.checkpoint, expected_sha256=found.sha256, version=found.version)
    assert critic.version == new


def test_no_promoted_model_says_so_and_lists_what_exists(home: Path) -> None:
    version = register_model(home, alias=None)
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        with pytest.raises(ModelNotFound, match="no model is promoted yet") as exc:
            resolve_model(conn, home)
        assert version in str(exc.value)
        with pytest.raises(ModelNotFound, match="no model version or alias 'nope'"):
            resolve_model(conn, home, "nope")


def test_alias_pointing_at_a_missing_version_is_reported(home: Path) -> None:
    with connect(home / "warehouse.duckdb") as conn:
        conn.execute("INSERT INTO model_aliases (alias, version) VALUES ('production', 'deadbeef0000')")
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        with pytest.raises(ModelNotFound, match="points at version 'deadbeef0000'"):
            resolve_model(conn, home)


def test_a_checkpoint_changed_after_registration_is_refused(home: Path) -> None:
    register_model(home)
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        found = resolve_model(conn, home)
    with open(found.checkpoint, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(CheckpointMismatch, match="changed since it was registered"):
        Critic.from_checkpoint(found.checkpoint, expected_sha256=found.sha256)


def _make_current(home: Path, version: str) -> None:
    with connect(home / "warehouse.duckdb") as conn:
        make_current(conn, get_model(conn, version))


def test_a_models_name_names_its_current_version_for_the_cli_as_for_the_assets(home, tmp_path, capsys,
                                                                               monkeypatch) -> None:
    """`--model nima_sac` on the command line (no Dagster instance) loads the version the warehouse made current,
    the one the assets fine-tune from and evaluate, not the newest row of the name."""
    older = register_model(home, "nima_sac", seed=1, alias=None)
    newer = register_model(home, "nima_sac", seed=2, alias=None)
    with connect(home / "warehouse.duckdb") as conn:
        conn.execute("UPDATE models SET created_at = created_at + INTERVAL 1 HOUR WHERE version = ?", [newer])
    _make_current(home, older)
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        assert current_model(conn, "nima_sac").version == older
        assert resolve_model(conn, home, "nima_sac").version == older
    picture(0).save(tmp_path / "p.png")
    monkeypatch.setenv("AESTHETIC_HOME", str(home))
    assert main(["score", str(tmp_path / "p.png"), "--model", "nima_sac", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == older


def test_a_warehouse_from_before_current_aliases_starts_with_the_newest_row_of_each_name_current(home) -> None:
    old_sac = register_model(home, "nima_sac", seed=1, alias=None)
    new_sac = register_model(home, "nima_sac", seed=2, alias=None)
    color = register_model(home, "nima_color", seed=3)
    with connect(home / "warehouse.duckdb") as conn:
        conn.execute("UPDATE models SET created_at = created_at + INTERVAL 1 HOUR WHERE version = ?", [new_sac])
        # As the warehouse stood before migration 050: no alias of a model's own name.
        conn.execute("DELETE FROM model_aliases WHERE alias <> 'production'")
        conn.execute("DELETE FROM schema_migrations WHERE name LIKE '050_%'")
    with connect(home / "warehouse.duckdb") as conn:  # a writable connection migrates
        assert current_model(conn, "nima_sac").version == new_sac != old_sac
        assert current_model(conn, "nima_color").version == color == promoted_version(conn)
