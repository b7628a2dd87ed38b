"""Which checkpoint a model reference names: a version from `models`, or an alias from `model_aliases`.

The critic loads "the promoted model" (alias 'production', set by evaluation) or a version the user names. Each
model of the chain also has an alias of its own name naming its current version (set by its training asset): the
one its children fine-tune, its evaluation evaluates and the CLI loads for `--model <name>`, so "the current
model" is read from here by every caller, with or without Dagster. Checkpoint paths in `models` are relative to
$AESTHETIC_HOME unless absolute, so callers pass the home folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from warehouse.models import ModelRow, get_model, set_alias

if TYPE_CHECKING:
    import duckdb

PRODUCTION = "production"


class ModelNotFound(LookupError):
    """The reference names no version or alias in the warehouse; str(exc) says what exists."""


@dataclass(frozen=True)
class ResolvedModel:
    version: str
    name: str
    checkpoint: Path  # absolute
    sha256: str
    alias: str | None  # the alias it was reached through, if any


def _known(conn: duckdb.DuckDBPyConnection) -> str:
    versions = [f"{v} ({n})" for v, n in conn.execute(
        "SELECT version, name FROM models ORDER BY created_at DESC LIMIT 10").fetchall()]
    aliases = [f"{a} -> {v}" for a, v in conn.execute(
        "SELECT alias, version FROM model_aliases ORDER BY alias").fetchall()]
    return (f"known versions: {', '.join(versions) or 'none'}; "
            f"aliases: {', '.join(aliases) or 'none'}")


def promoted_version(conn: duckdb.DuckDBPyConnection, alias: str = PRODUCTION) -> str | None:
    row = conn.execute("SELECT version FROM model_aliases WHERE alias = ?", [alias]).fetchone()
    return row[0] if row else None


def current_model(conn: duckdb.DuckDBPyConnection, name: str) -> ModelRow | None:
    """The current version of model `name` (its alias), or None when none was made current."""
    version = promoted_version(conn, name)
    return get_model(conn, version) if version else None


def make_current(conn: duckdb.DuckDBPyConnection, row: ModelRow) -> None:
    """Point the alias of the row's model name at it: children, evaluation and the CLI use it from now on."""
    set_alias(conn, row.version, row.name)


def resolve_model(conn: duckdb.DuckDBPyConnection, home: str | Path, ref: str | None = None) -> ResolvedModel:
    """The model that `ref` names (an alias first, then a version); None means the 'production' alias."""
    ref = ref or PRODUCTION
    version = promoted_version(conn, ref)
    alias = ref if version is not None else None
    if version is None:
        version = ref
    row = conn.execute(
        "SELECT version, name, checkpoint_path, sha256 FROM models WHERE version = ?", [version]
    ).fetchone()
    if row is None:
        if alias is not None:
            raise ModelNotFound(f"alias {alias!r} points at version {version!r}, which has no `models` row; "
                                + _known(conn))
        if ref == PRODUCTION:
            raise ModelNotFound("no model is promoted yet (no 'production' alias in model_aliases): train and "
                                "evaluate one first (asset groups training and evaluation), or pass a version; "
                                + _known(conn))
        raise ModelNotFound(f"no model version or alias {ref!r}; " + _known(conn))
    version, name, stored, sha = row
    path = Path(stored)
    if not path.is_absolute():
        path = Path(home).resolve() / path
    return ResolvedModel(version=version, name=name, checkpoint=path, sha256=sha, alias=alias)
