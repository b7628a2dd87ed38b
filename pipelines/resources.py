"""Resources bound once for the code location, with settings from the environment (docs/contract.md, "Environment")."""

from __future__ import annotations

import os
from pathlib import Path

from assets.resources import StorageResource, WarehouseResource
from ingest.paths import Paths


def build_resources(home: str | Path | None = None, raw: str | Path | None = None, ledger: bool = False) -> dict:
    """The resource dict for Definitions or dg.materialize; tests pass tmp_path folders. ledger: the training
    location of the two-host shape, whose model rows go to $AESTHETIC_HOME/ledger (warehouse/ledger.py)."""
    env = Paths.from_env()
    home_path = Path(home) if home else env.home
    paths = Paths(home_path, Path(raw) if raw else (home_path / "raw" if home else env.raw))
    ledger_path = str(ledger_folder(paths.home)) if ledger else ""
    return {
        "storage": StorageResource(home=str(paths.home), raw=str(paths.raw)),
        "warehouse": WarehouseResource(path=str(paths.warehouse), ledger=ledger_path),
    }


def ledger_folder(home: Path) -> Path:
    return home / "ledger"


def shared_home() -> tuple[Path, Path]:
    """AESTHETIC_HOME and AESTHETIC_RAW for the two-host shape, which must name the same folders on both hosts:
    absolute paths on the shared volume, never relative to whatever folder a code server was started in."""
    home, raw = os.environ.get("AESTHETIC_HOME", ""), os.environ.get("AESTHETIC_RAW", "")
    for name, value in (("AESTHETIC_HOME", home), ("AESTHETIC_RAW", raw)):
        if (value or name == "AESTHETIC_HOME") and not Path(value).is_absolute():
            raise ValueError(f"the two-host shape needs {name} as an absolute path on the shared volume (both hosts "
                             f"must name the same folder), got {value!r}")
    return Path(home), Path(raw) if raw else Path(home) / "raw"
