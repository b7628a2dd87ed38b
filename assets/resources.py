"""Typed Dagster resources the assets take as parameters; bound once in pipelines/resources.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from common.bounds import Range, ranged_field
from ingest.paths import NoSpaceLeft, Paths
from warehouse.db import WarehouseUnreadable, connect
from warehouse.ledger import ledger_connection
from warehouse.models_lookup import ModelNotFound, ResolvedModel

if TYPE_CHECKING:
    import duckdb


class StorageResource(dg.ConfigurableResource):
    """Where raw drops are read (AESTHETIC_RAW) and everything is written (AESTHETIC_HOME)."""

    home: str
    raw: str

    def paths(self) -> Paths:
        """The plain object the stages take (ingest/paths.py)."""
        return Paths(Path(self.home), Path(self.raw))

    @property
    def home_path(self) -> Path:
        return self.paths().home

    @property
    def raw_path(self) -> Path:
        return self.paths().raw

    def images_dir(self, dataset: str) -> Path:
        return self.paths().images_dir(dataset)

    def shards_dir(self, dataset: str | None = None) -> Path:
        return self.paths().shards_dir(dataset)

    def models_dir(self) -> Path:
        return self.paths().models_dir()

    def reports_dir(self) -> Path:
        return self.paths().reports_dir()

    def to_stored(self, path: str | Path) -> str:
        return self.paths().to_stored(path)

    def from_stored(self, stored: str) -> Path:
        return self.paths().from_stored(stored)

    @contextmanager
    def full_disk_as_failure(self) -> Iterator[None]:
        """A full disk in the block fails the step with the one-line NoSpaceLeft message as its description
        (a dg.Failure), rather than with whatever the writer raised."""
        try:
            with self.paths().full_disk_as_error():
                yield
        except NoSpaceLeft as exc:
            raise dg.Failure(description=str(exc)) from exc


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse; every connection is short and waits out other writers' locks. With `ledger` set (the
    training location of the two-host shape) connections open the model ledger instead (warehouse/ledger.py): the
    model rows as that folder holds them, and what a step writes becomes a ledger event, never a warehouse row."""

    path: str
    lock_timeout_s: float = ranged_field(300.0, Range(0.0, 86400.0, "0 tries once; a lock held for a day is stuck"),
                                         "seconds a connection waits for another writer's lock")
    ledger: str = ""

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short connection (warehouse/db.py); a damaged warehouse fails the step with db.py's one line."""
        if self.ledger:
            with ledger_connection(self.ledger, read_only=read_only, timeout_s=self.lock_timeout_s) as conn:
                yield conn
            return
        try:
            with connect(self.path, read_only=read_only, timeout_s=self.lock_timeout_s) as conn:
                yield conn
        except WarehouseUnreadable as exc:
            raise dg.Failure(description=str(exc)) from None

    def critic_for(self, home: Path, ref: str | None, who: str, **kwargs: Any) -> tuple[Any, ResolvedModel]:
        """The verified critic `ref` names (an alias or a version; None: production) for the step `who`, and its
        model (critic/models.py); a dg.Failure that says what to do when there is no warehouse or no such model."""
        if not Path(self.path).exists():
            raise dg.Failure(description=f"no warehouse at {self.path}: nothing has been trained yet")
        from critic.backends import BackendUnavailable  # torch: in the step, never when the code location loads
        from critic.models import load_critic

        try:
            return load_critic(lambda: self.connect(read_only=True), home, ref, **kwargs)
        except ModelNotFound as exc:
            raise dg.Failure(description=f"{who} has no model to run: {exc}") from exc
        except BackendUnavailable as exc:
            raise dg.Failure(description=f"{who} cannot score with the backend asked: {exc}") from exc
