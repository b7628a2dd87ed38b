"""Read a user's file only when it is a regular file, and never block doing so; a file named relative to a folder
only when it is inside that folder (under_root).

open() on a FIFO waits for a writer that may never come, and a device or socket is not data at all: a FIFO named
`<id>.jpg` in a drop would hang a whole stage. Every read of a file a user handed us goes through open_regular:
it opens with O_NONBLOCK (a FIFO then opens at once instead of waiting), checks what the open descriptor is with
fstat (a check of the path beforehand could be answered by one file and the open by another), and refuses
anything but a regular file with NotRegularFile, whose message names the path and what it found there.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

# O_NOCTTY: opening a terminal device must not make it the process's controlling terminal.
_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class NotRegularFile(OSError):
    """A path that names something other than a regular file; str(exc) is 'not a regular file: PATH is KIND'."""

    def __init__(self, path: str | os.PathLike, kind: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file: {path} is {kind}")
        self.path, self.kind = str(path), kind

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self) -> tuple:  # OSError pickles as (errno, strerror): rebuild from our own arguments
        return type(self), (self.path, self.kind)


def file_kind(mode: int) -> str:
    """What a stat mode describes, in words ('a FIFO (named pipe)', 'a directory', ...)."""
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def _kind_after_failed_open(path: str | os.PathLike) -> str | None:
    """What is at `path` when it is not a regular file, None otherwise: only to word the error of an open that
    failed (a socket refuses open(2) with ENXIO, a device on a nodev mount with EACCES); no descriptor exists."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else file_kind(mode)


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """The file at `path` opened for binary reading, if it is a regular file (links followed); else
    NotRegularFile. Missing files and permissions raise the usual OSErrors."""
    try:
        fd = os.open(path, _FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        kind = _kind_after_failed_open(path)
        if kind is None and exc.errno == errno.ENXIO:
            kind = "a socket or a device without a driver"
        if kind is None:
            raise
        raise NotRegularFile(path, kind) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, file_kind(mode))
        os.set_blocking(fd, True)  # a regular file ignores O_NONBLOCK; clear it so nothing downstream sees it
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: str | os.PathLike) -> bytes:
    """All bytes of a regular file (see open_regular)."""
    with open_regular(path) as fh:
        return fh.read()


class OutsideRoot(ValueError):
    """A name from a config or a record that resolves outside the folder it must stay in. str(exc) is one line
    naming the value and the folder: the file itself was never opened, so nothing of it can be echoed."""

    def __init__(self, what: str, name: str, root: str | os.PathLike) -> None:
        super().__init__(f"{what} {name!r} resolves outside {root}".lstrip())
        self.name, self.root = name, str(root)


def under_root(root: str | os.PathLike, name: str, what: str) -> Path:
    """root/name with links resolved, when that stays inside root (links resolved too); else OutsideRoot. An
    absolute name, `..` that climbs out, a link that points out: all refused before anything is opened."""
    base = Path(root).resolve()
    if not name or "\0" in name:
        raise OutsideRoot(what, name, root)
    path = (base / name).resolve()
    if path == base or not path.is_relative_to(base):
        raise OutsideRoot(what, name, root)
    return path
