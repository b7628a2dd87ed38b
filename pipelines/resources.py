"""Resources bound once for the code location, with settings from the environment (docs/contract.md, "Environment")."""

from __future__ import annotations

from pathlib import Path

from assets.resources import StorageResource, WarehouseResource
from ingest.paths import Paths


def build_resources(home: str | Path | None = None, raw: str | Path | None = None) -> dict:
    """The resource dict for Definitions or dg.materialize; tests pass tmp_path folders."""
    env = Paths.from_env()
    home_path = Path(home) if home else env.home
    paths = Paths(home_path, Path(raw) if raw else (home_path / "raw" if home else env.raw))
    return {
        "storage": StorageResource(home=str(paths.home), raw=str(paths.raw)),
        "warehouse": WarehouseResource(path=str(paths.warehouse)),
    }
