"""Files that appear whole or not at all: written under a temporary name beside the destination, then renamed.

A kill at any moment leaves either the old file or the new one at the destination, never half of one; a write
that fails removes its temporary file. With fsync=True the data reaches the disk before the rename and the
rename itself is made durable, for files that must survive a power loss (shards and their indexes), not only a
killed process. This is the one place in the project that renames a temporary file into place.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_path(dest: str | Path) -> Path:
    """The temporary name for dest: hidden, in the same folder (so the rename stays on one file system), and
    unique to this process (two processes writing one file never share a temporary)."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.{os.getpid()}.tmp")


def publish(tmp: str | Path, dest: str | Path, fsync: bool = False) -> None:
    """Move a finished temporary file onto dest in one step."""
    dest = Path(dest)
    if fsync:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(tmp, dest)
    if fsync:
        try:
            dir_fd = os.open(dest.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextmanager
def atomic_path(dest: str | Path, fsync: bool = False) -> Iterator[Path]:
    """A temporary path to write dest's content to; renamed onto dest when the block ends, removed if it raises."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dest)
    try:
        yield tmp
        publish(tmp, dest, fsync)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(dest: str | Path, data: bytes, fsync: bool = False) -> None:
    """dest := data, whole or not at all."""
    with atomic_path(dest, fsync) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
