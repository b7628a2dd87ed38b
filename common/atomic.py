"""Files that appear whole or not at all: written under a temporary name beside the destination, then renamed.

A kill at any moment leaves either the old file or the new one at the destination, never half of one; a write
that fails (a full disk included) removes its temporary file, and what a killed writer left is removed by
remove_stale_temps. With fsync=True the data reaches the disk before the rename and the
rename itself is made durable, for files that must survive a power loss (shards and their indexes), not only a
killed process. This is the one place in the project that renames a temporary file into place.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# What temp_path names look like; the group `pid` is the writer's process id.
TEMP_NAME = re.compile(r"^\..+\.(?P<pid>\d+)\.tmp$")


def temp_path(dest: str | Path) -> Path:
    """The temporary name for dest: hidden, in the same folder (so the rename stays on one file system), and
    unique to this process (two processes writing one file never share a temporary)."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.{os.getpid()}.tmp")


def publish(tmp: str | Path, dest: str | Path, fsync: bool = False) -> None:
    """Move a finished temporary file onto dest in one step; the temporary is removed if that fails (fsync fails
    on a full disk as well), so no caller leaves it behind."""
    dest = Path(dest)
    try:
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(dest)  # a failed write() names no file (a full disk, say): name the one written
        raise


def write_atomic(dest: str | Path, data: bytes, fsync: bool = False) -> None:
    """dest := data, whole or not at all."""
    with atomic_path(dest, fsync) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | Path, pattern: re.Pattern[str] = TEMP_NAME) -> list[str]:
    """Delete the temporaries in folder whose writer no longer runs (a killed run), and this process's own
    (left by a write that died with it); keep those of live writers. pattern must name the group `pid`."""
    folder = Path(folder)
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    with os.scandir(folder) as entries:
        temps = [(e, m) for e in entries if e.name[0] == "." and (m := pattern.match(e.name))]
    for entry, m in sorted(temps, key=lambda t: t[0].name):
        if entry.is_file(follow_symlinks=False) and (
                int(m.group("pid")) == os.getpid() or not pid_alive(int(m.group("pid")))):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(entry.name)
    return removed
