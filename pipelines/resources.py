"""Resources bound once for the code location, with settings from the environment (DESIGN.md)."""

from __future__ import annotations

import os
from pathlib import Path

from assets.resources import StorageResource, WarehouseResource


def aesthetic_home() -> Path:
    return Path(os.environ.get("AESTHETIC_HOME") or "./.aesthetic").resolve()


def aesthetic_raw() -> Path:
    raw = os.environ.get("AESTHETIC_RAW")
    return Path(raw).resolve() if raw else aesthetic_home() / "raw"


def build_resources(home: str | Path | None = None, raw: str | Path | None = None) -> dict:
    """The resource dict for Definitions or dg.materialize; tests pass tmp_path folders."""
    home_path = Path(home).resolve() if home else aesthetic_home()
    if raw:
        raw_path = Path(raw).resolve()
    else:
        raw_path = home_path / "raw" if home else aesthetic_raw()
    return {
        "storage": StorageResource(home=str(home_path), raw=str(raw_path)),
        "warehouse": WarehouseResource(path=str(home_path / "warehouse.duckdb")),
    }
