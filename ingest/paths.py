"""What every stage is given: where the raw drops are read and everything else is written, a connection
factory for the warehouse, and a logger."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import duckdb

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]
Log = Callable[[str], None]


def no_log(_: str) -> None:
    """The logger of a stage called without one."""


@dataclass(frozen=True)
class Paths:
    """AESTHETIC_HOME (everything written) and AESTHETIC_RAW (the raw drops), both resolved once."""

    home: Path
    raw: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).resolve())
        object.__setattr__(self, "raw", Path(self.raw).resolve())

    @classmethod
    def from_env(cls) -> Paths:
        """AESTHETIC_HOME (default ./.aesthetic) and AESTHETIC_RAW (default $AESTHETIC_HOME/raw)."""
        home = Path(os.environ.get("AESTHETIC_HOME") or "./.aesthetic")
        raw = os.environ.get("AESTHETIC_RAW")
        return cls(home, Path(raw) if raw else home / "raw")

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    def images_dir(self, dataset: str) -> Path:
        return self.home / "images" / dataset

    def shards_dir(self, dataset: str | None = None) -> Path:
        return self.home / "shards" / dataset if dataset else self.home / "shards"

    def models_dir(self) -> Path:
        return self.home / "models"

    def reports_dir(self) -> Path:
        return self.home / "reports"

    def downloads_dir(self, dataset: str) -> Path:
        return self.home / "downloads" / dataset

    def to_stored(self, path: str | Path) -> str:
        """The form kept in the warehouse: relative to AESTHETIC_HOME when inside it, else absolute."""
        path = Path(path).resolve()
        return str(path.relative_to(self.home)) if path.is_relative_to(self.home) else str(path)

    def from_stored(self, stored: str) -> Path:
        path = Path(stored)
        return path if path.is_absolute() else self.home / path
