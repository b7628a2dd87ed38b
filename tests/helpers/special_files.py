"""Files that are not regular files, planted where code reads user files: a FIFO, a Unix socket, a device node.

`plant` makes them under real names (`12.jpg`, `themeData.mat`, ...) and removes them afterwards. Code that wrongly
opens a FIFO blocks until a writer comes; the watchdog is that writer: after WATCHDOG_S it opens every planted
FIFO's write end and closes it, so a blocked reader gets end-of-file and the test fails on what it read instead
of hanging the suite. No test asserts on time.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

KINDS = ("fifo", "socket", "device")
WATCHDOG_S = 60.0
# The words NotRegularFile uses for each kind (common/regular_files.py).
KIND_WORDS = {"fifo": "FIFO", "socket": "socket", "device": "character device"}


def _release_fifos(fifos: list[Path], stop: threading.Event) -> None:
    if stop.wait(WATCHDOG_S):
        return
    for fifo in fifos:
        with contextlib.suppress(OSError):  # ENXIO: nobody is reading it, which is what should be the case
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def device_supported(folder: Path) -> str | None:
    """Why a device node cannot be made under `folder` (not root, or a mount that forbids it); None if it can."""
    probe = folder / ".device-probe"
    try:
        os.mknod(probe, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError as exc:
        return f"os.mknod of a character device is not allowed here ({errno.errorcode.get(exc.errno, exc.errno)})"
    probe.unlink()
    return None


@dataclass
class Planted:
    paths: dict[str, Path] = field(default_factory=dict)  # kind -> where it was made
    not_made: dict[str, str] = field(default_factory=dict)  # kind -> why not (a device where mknod is refused)

    def path(self, kind: str) -> Path:
        """Where `kind` was planted; a skip naming the reason where it could not be."""
        if kind not in self.paths:
            pytest.skip(self.not_made[kind])
        return self.paths[kind]


@contextlib.contextmanager
def plant(where: dict[str, Path]) -> Iterator[Planted]:
    """Make each kind ('fifo', 'socket', 'device' (/dev/null's numbers)) at its path. A device is left out, not
    failed, where this process may not make one (Planted.not_made says why)."""
    planted = Planted()
    sockets: list[socket.socket] = []
    stop = threading.Event()
    try:
        for kind, path in where.items():
            if kind == "fifo":
                os.mkfifo(path)
            elif kind == "socket":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sockets.append(sock)
                with contextlib.chdir(path.parent):  # a relative name: AF_UNIX paths are limited to ~108 bytes
                    sock.bind(path.name)
            elif kind == "device":
                if (why := device_supported(path.parent)) is not None:
                    planted.not_made[kind] = why
                    continue
                os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
            else:
                raise ValueError(f"unknown kind {kind!r}")
            planted.paths[kind] = path
        fifos = [p for k, p in planted.paths.items() if k == "fifo"]
        threading.Thread(target=_release_fifos, args=(fifos, stop), daemon=True).start()
        yield planted
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
        for path in planted.paths.values():
            path.unlink(missing_ok=True)
