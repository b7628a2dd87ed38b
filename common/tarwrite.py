"""Deterministic WebDataset tars: sample keys without dots or slashes, fixed member headers, a hashing writer.

Shared by the dataset shards writer (ingest/shard_writer.py) and corpus curation (critic/curate.py): the same
input gives byte-identical tars, so shards can be compared and skipped by content.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile

# Any fixed value makes the headers reproducible; 2000-01-01 rather than 0 so tools don't show 1970.
FIXED_MTIME = 946_684_800
# Characters kept as they are in a key; everything else (the dot above all, and '/') is %XX-escaped, which
# keeps keys injective: WebDataset splits a member name at its first dot, so no key may contain one.
_KEY_SAFE = re.compile(r"[A-Za-z0-9_\-]")
_RAW_BYTES = "surrogateescape"  # how a non-UTF-8 name read from a tar holds its bytes


def escape_key(text: str) -> str:
    """text with every character outside [A-Za-z0-9_-] %XX-escaped (UTF-8): no dots, no slashes, injective.

    A name read from a tar that is not UTF-8 (its bytes decoded with surrogateescape) has those bytes escaped.
    """
    return "".join(ch if _KEY_SAFE.fullmatch(ch) else "".join(f"%{b:02X}" for b in ch.encode("utf-8", _RAW_BYTES))
                   for ch in str(text))


class HashingWriter:
    """File wrapper that hashes and counts the bytes as tarfile streams them out."""

    def __init__(self, fh: io.BufferedWriter) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.n = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.n += len(data)
        return self.fh.write(data)


def tar_member_info(name: str, size: int) -> tarfile.TarInfo:
    """A regular-file tar header with fixed owner, mode and mtime: the same bytes on every run."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = FIXED_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info
