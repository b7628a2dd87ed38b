"""Typed Dagster resources the assets take as parameters; bound once in pipelines/resources.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from warehouse.db import connect


class StorageResource(dg.ConfigurableResource):
    """Where raw drops are read (AESTHETIC_RAW) and everything is written (AESTHETIC_HOME)."""

    home: str
    raw: str

    @property
    def home_path(self) -> Path:
        return Path(self.home).resolve()

    @property
    def raw_path(self) -> Path:
        return Path(self.raw).resolve()

    def images_dir(self, dataset: str) -> Path:
        return self.home_path / "images" / dataset

    def shards_dir(self, dataset: str | None = None) -> Path:
        base = self.home_path / "shards"
        return base / dataset if dataset else base

    def models_dir(self) -> Path:
        return self.home_path / "models"

    def reports_dir(self) -> Path:
        return self.home_path / "reports"

    def to_stored(self, path: str | Path) -> str:
        """The form kept in the warehouse: relative to AESTHETIC_HOME when inside it, else absolute."""
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.home_path))
        except ValueError:
            return str(path)

    def from_stored(self, stored: str) -> Path:
        path = Path(stored)
        return path if path.is_absolute() else self.home_path / path


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse; every connection is short and waits out other writers' locks."""

    path: str
    lock_timeout_s: float = 300.0

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with connect(self.path, read_only=read_only, timeout_s=self.lock_timeout_s) as conn:
            yield conn
