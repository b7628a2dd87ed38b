"""Resolving the critic's model through the warehouse."""

from __future__ import annotations

from pathlib import Path

import pytest

from critic.scoring import CheckpointMismatch, Critic
from tests.helpers.critic_models import register_model
from warehouse.db import connect
from warehouse.models_lookup import ModelNotFound, promoted_version, resolve_model


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
