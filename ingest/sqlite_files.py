"""Is this file a whole SQLite database? Checked from its 100-byte header before DuckDB's sqlite extension opens it.

DuckDB answers a text file or a cut-off copy with a bare "file is not a database" or "database disk image is
malformed" that names no file, and only once a query runs. The header says enough to answer first, by name: it
starts with the magic string, gives the page size, and (when valid) the number of pages the file must hold.
See "The Database Header" in SQLite's file format documentation.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.regular_files import open_regular

MAGIC = b"SQLite format 3\0"
HEADER_BYTES = 100


class SqliteFileError(ValueError):
    """A file that is not a readable SQLite database; str(exc) names the file and why."""


def _page_size(header: bytes) -> int:
    raw = int.from_bytes(header[16:18], "big")
    return 65536 if raw == 1 else raw  # 1 stands for 65536, which does not fit the 2-byte field


def declared_size(header: bytes) -> int | None:
    """Page count x page size from a 100-byte header, or None when the header does not vouch for its page count."""
    pages = int.from_bytes(header[28:32], "big")
    # The page count is valid only when nonzero and written by the same version that last changed the file
    # (change counter == version-valid-for); otherwise SQLite goes by the file size, which must be whole pages.
    if len(header) < HEADER_BYTES or not header.startswith(MAGIC) or not pages or header[24:28] != header[92:96]:
        return None
    return pages * _page_size(header)


def whole_by_header(path: str | Path) -> bool:
    """Whether a regular file is exactly as long as its SQLite header says: a copy still being written is shorter
    (its header, copied first, already has the final page count). False when the header cannot tell."""
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            return declared_size(fh.read(HEADER_BYTES)) == size
    except OSError:
        return False


def check_sqlite_file(path: str | Path) -> None:
    """SqliteFileError unless `path` is a regular file that starts like a SQLite database and is as long as its
    header says ('not a SQLite database' or 'truncated'); NotRegularFile for a FIFO, socket, device or folder."""
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        header = fh.read(HEADER_BYTES)
    if not header:
        raise SqliteFileError(f"{path}: not a SQLite database (the file is empty)")
    if not header.startswith(MAGIC[: len(header)]):
        raise SqliteFileError(f"{path}: not a SQLite database (it does not start with {MAGIC[:-1].decode()!r})")
    if len(header) < HEADER_BYTES:
        raise SqliteFileError(f"{path}: truncated SQLite database ({size} bytes, shorter than its "
                              f"{HEADER_BYTES}-byte header)")
    page_size = _page_size(header)
    if page_size < 512 or page_size & (page_size - 1):
        raise SqliteFileError(f"{path}: not a SQLite database (page size {page_size} in its header)")
    declared = declared_size(header)
    if declared is not None:
        if size < declared:
            raise SqliteFileError(f"{path}: truncated SQLite database ({size} bytes; its header says "
                                  f"{declared // page_size} pages of {page_size} bytes, {declared} bytes)")
    elif size % page_size:
        raise SqliteFileError(f"{path}: truncated SQLite database ({size} bytes is not a whole number of "
                              f"{page_size}-byte pages)")
