"""What every stage is given: where the raw drops are read and everything else is written, a connection
factory for the warehouse, and a logger."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

Connect = Callable[[], AbstractContextManager["duckdb.DuckDBPyConnection"]]
Log = Callable[[str], None]


def no_log(_: str) -> None:
    """The logger of a stage called without one."""


# DuckDB and Arrow report a full disk in their own exception types; the OS's words are in the message.
_FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_DISK_WORDS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))


def is_full_disk(exc: BaseException) -> bool:
    """Whether exc, or an exception it was raised from, says the disk (or the quota) is full."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_DISK_ERRNOS:
            return True
        if any(words in str(exc) for words in _FULL_DISK_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class NoSpaceLeft(OSError):
    """The disk under AESTHETIC_HOME filled up during a stage; str(exc) is one line for the user."""

    @classmethod
    def under(cls, home: Path, cause: BaseException) -> NoSpaceLeft:
        detail = " ".join(str(cause).split()) or type(cause).__name__
        return cls(errno.ENOSPC, f"no space left on AESTHETIC_HOME ({home}): {detail}; "
                                 "free some space there and run again")

    def __str__(self) -> str:
        return str(self.strerror)


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

    @contextmanager
    def full_disk_as_error(self) -> Iterator[None]:
        """A full disk anywhere in the block raises NoSpaceLeft naming AESTHETIC_HOME, not whatever the writer
        (the OS, DuckDB, Arrow, a worker process) raised; other errors pass unchanged."""
        try:
            yield
        except NoSpaceLeft:
            raise
        except Exception as exc:
            if is_full_disk(exc):
                raise NoSpaceLeft.under(self.home, exc) from exc
            raise
