"""WebDataset samples straight from tar files and streams, without Python's tarfile module.

webdataset's own expander (tarfile_to_samples) reads each member through tarfile, a cost per sample of the order of
a tenth of decoding a 256x256 JPEG. This unpacks each 512-byte header with one struct call; a local shard is mapped
in memory and each payload is a view of the mapping (no copy at all), any other URL is read as a stream with one
read per payload (benchmarks/bench_loader.py prints both readers' cost per sample; docs/shards.md has the figures):
http(s) through common/remote.py within ReadLimits, never through curl. No payload over max_member_bytes is
read whole, whatever its header declares: it is passed over and its sample says why under `__skipped__`.
It keeps webdataset's conventions:
a sample is the run of consecutive members sharing a key (the path up to the first dot of the file name), each
extension (lower-cased) maps to the member's bytes (a writable memoryview for a mapped file: compare, slice or
bytes() it as bytes), plus `__key__` and `__url__`.

What tar writers put in shards is understood: ustar/POSIX members with a prefix, pax extended headers ('x':
per-member path and size), GNU long names ('L') and base-256 sizes; directories, links and global pax headers are
skipped. Every header checksum is verified, so a damaged or non-tar stream fails with a clear error naming the URL
instead of yielding garbage, and a truncated one fails rather than ending the shard early.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO
from urllib.parse import urlparse
from urllib.request import url2pathname

import webdataset as wds

from common.regular_files import open_regular
from common.remote import BoundedStream, ReadLimits, is_remote, open_stream

BLOCK = 512
DEFAULT_LIMITS = ReadLimits()
_ZERO_BLOCK = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7")  # regular file, old-style regular file, contiguous file
# The fields a reader needs, unpacked in one call: name, size, checksum, type flag, ustar magic, ustar prefix.
_HEADER = struct.Struct("100s24x12s12x8sc100x5s83x155s12x")


class TarFormatError(ValueError):
    """The stream is not a well-formed tar archive (bad checksum, truncated member, malformed pax record)."""


def _read_exact(read: Callable[[int], bytes], size: int) -> bytes:
    data = read(size)
    if len(data) == size or not data:
        return data
    # Sockets and pipes may return short reads before the end: keep reading until size or EOF.
    parts = [data]
    got = len(data)
    while got < size:
        more = read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 (high bit set) for values too big for octal."""
    if field[0] == 0x80:
        return int.from_bytes(field[1:], "big")
    if field[0] == 0xFF:
        raise TarFormatError("negative base-256 number in a tar header")
    try:
        return int(field.rstrip(b"\0 "), 8)  # the usual form: digits, then NULs or spaces
    except ValueError:  # text after a NUL, or an empty field
        text = field.split(b"\0", 1)[0].strip()
        return int(text, 8) if text else 0


def _unsigned_checksum(header: bytes) -> int:
    """The sum of a header's bytes with the checksum field counted as 8 spaces, computed in C rather than by sum():
    Adler-32's low half is 1 + the byte sum modulo 65521, exact for runs of up to 256 bytes (256 * 255 < 65521)."""
    low = 0xFFFF
    return (zlib.adler32(header[:148]) & low) + (zlib.adler32(header[156:412]) & low) + (
        zlib.adler32(header[412:512]) & low) - 3 + 8 * 32


def _checksum_ok(header: bytes, field: bytes) -> bool:
    """Whether `field` (the header's checksum field, bytes 148-156) matches the header's bytes."""
    try:
        stored = _number(field)
    except ValueError:
        return False
    unsigned = _unsigned_checksum(header)
    if stored == unsigned:
        return True
    # Some old writers summed signed chars: every byte above 127 then counts 256 less.
    high = sum(1 for b in header[:148] if b > 127) + sum(1 for b in header[156:] if b > 127)
    return stored == unsigned - 256 * high


def _pax_records(payload: bytes) -> dict[str, str]:
    """Parse 'LEN key=value\\n' records (POSIX.1-2001)."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(payload) and payload[pos : pos + 1] != b"\0":
        space = payload.find(b" ", pos)
        if space < 0:
            raise TarFormatError("malformed pax header")
        length = int(payload[pos:space])
        if length <= space - pos + 1 or pos + length > len(payload):
            # A record must hold its own length field and fit the header; a bad one would loop or run off the end.
            raise TarFormatError(f"malformed pax header: record length {length} at offset {pos}")
        record = payload[space + 1 : pos + length - 1]  # drop the trailing newline
        key, _, value = record.partition(b"=")
        records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class Skipped:
    """In place of a member's bytes: the member was not read, and why (one line naming the member and the cap)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def tar_members(stream: BinaryIO, url: str = "<stream>",
                max_member_bytes: int = DEFAULT_LIMITS.max_member_bytes) -> Iterator[tuple[str, bytes | Skipped]]:
    """(path, bytes) of every regular file in a tar stream, in archive order; a Skipped for a member over
    max_member_bytes, whose bytes are passed over in reads no larger than the cap."""
    read = stream.read
    return _members(lambda size: _read_exact(read, size), url, max_member_bytes)


def mapped_members(path: str | os.PathLike, url: str | None = None,
                   max_member_bytes: int = DEFAULT_LIMITS.max_member_bytes) -> Iterator[tuple[str, Any]]:
    """(path, payload) of every regular file in a local tar, the payloads as views of the file mapped in memory.

    No payload is copied: the bytes stay in the page cache until they are decoded, and the mapping lives as long
    as any view of it. The mapping is private (copy-on-write), so the views are writable, as torch.frombuffer
    wants them, and writing to one never changes the file. The shards writer replaces a tar by renaming a new
    file over it, which leaves a mapped old one intact; truncating a tar in place while it is read is not safe.
    A member over max_member_bytes is a Skipped, as from a stream, so a shard gives the same samples either way.
    """
    url = str(path) if url is None else url
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return iter(())  # an empty stream: no members, as tar_members reads it
        view = memoryview(mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY))
    pos = 0

    def take(n: int) -> memoryview:
        nonlocal pos
        chunk = view[pos : pos + n]
        pos += len(chunk)
        return chunk

    return _members(take, url, max_member_bytes)


def _member_path(name: bytes, magic: bytes, prefix: bytes, pax: dict[str, str], long_name: str | None) -> str:
    path = pax.get("path") or long_name
    if path is None:
        path = name.partition(b"\0")[0].decode("utf-8", "surrogateescape")
        if magic == b"ustar" and prefix[0]:
            path = prefix.partition(b"\0")[0].decode("utf-8", "surrogateescape") + "/" + path
    return path


def _pass_over(take: Callable[[int], bytes | memoryview], size: int, cap: int, url: str, what: str) -> None:
    """Read past a member of `size` bytes (and its padding) in pieces of at most `cap` bytes, holding none."""
    left = size + (-size % BLOCK)
    while left:
        got = len(take(min(left, cap, 1 << 20)))
        if not got:
            seen = min(size, size + (-size % BLOCK) - left)
            raise TarFormatError(f"{url}: truncated member {what} ({seen} of {size} bytes)")
        left -= got


def _members(take: Callable[[int], bytes | memoryview], url: str,
             max_member: int = DEFAULT_LIMITS.max_member_bytes) -> Iterator[tuple[str, Any]]:
    """Members from `take(n)`, which returns the next n bytes of the archive (fewer only at its end). No member
    over max_member is taken whole, whatever its header declares."""
    pax: dict[str, str] = {}
    long_name: str | None = None
    unpack = _HEADER.unpack
    while True:
        header = bytes(take(BLOCK))
        if not header or header == _ZERO_BLOCK:
            return  # end of archive (two zero blocks, or EOF as some writers leave it)
        if len(header) < BLOCK:
            raise TarFormatError(f"{url}: truncated tar header")
        name, size_field, checksum, kind, magic, prefix = unpack(header)
        if not _checksum_ok(header, checksum):
            raise TarFormatError(f"{url}: bad tar header checksum (not a tar file, or damaged)")
        size = int(pax["size"]) if "size" in pax else _number(size_field)
        path = _member_path(name, magic, prefix, pax, long_name) if kind in _REGULAR else ""
        if size > max_member:
            if kind in (b"x", b"L"):
                raise TarFormatError(f"{url}: a {size}-byte extended header, over the cap max_member_bytes="
                                     f"{max_member}")
            _pass_over(take, size, max_member, url, path or "(not a file)")
            if kind in _REGULAR:
                yield path, Skipped(f"too large: member {path} has {size} bytes, over the cap "
                                    f"max_member_bytes={max_member}")
        else:
            payload = take(size)
            if len(payload) < size:
                raise TarFormatError(f"{url}: truncated member {path or '(not a file)'} ({len(payload)} of {size} "
                                     f"bytes)")
            if size % BLOCK:
                padding = BLOCK - size % BLOCK
                if len(take(padding)) < padding:
                    raise TarFormatError(f"{url}: truncated member padding")
            if kind in _REGULAR:
                yield path, payload
            elif kind == b"x":
                pax = _pax_records(bytes(payload))
                continue
            elif kind == b"L":
                long_name = bytes(payload).partition(b"\0")[0].decode("utf-8", "surrogateescape")
                continue
        if pax or long_name is not None:
            pax = {}  # per-member headers apply to the next member only ('g' global headers are ignored)
            long_name = None


def _key_and_extension(path: str) -> tuple[str | None, str]:
    """webdataset's split: the key runs up to the first dot of the file name, the extension is the rest."""
    slash = path.rfind("/") + 1
    dot = path.find(".", slash)
    if dot <= slash:  # no dot, or a leading dot: not part of any sample
        return None, ""
    return path[:dot], path[dot + 1 :]


def group_samples(members: Iterable[tuple[str, Any]], url: str) -> Iterator[dict[str, Any]]:
    """Consecutive members with the same key become one sample dict, as webdataset's group_by_keys does. A member
    the reader skipped is not in it; its reason is, under `__skipped__` (a list)."""
    current: dict[str, Any] | None = None
    for path, data in members:
        key, extension = _key_and_extension(path)
        if key is None:
            continue
        extension = extension.lower()
        if current is None or current["__key__"] != key:
            if current is not None:
                yield current
            current = {"__key__": key, "__url__": url}
        if isinstance(data, Skipped):
            current.setdefault("__skipped__", []).append(data.reason)
            continue
        if extension in current:
            raise ValueError(f"{url}: duplicate file name {path!r} in sample {key!r}")
        current[extension] = data
    if current is not None:
        yield current


def local_file(url: str) -> str | None:
    """The path of a shard URL that names a local file (a plain path or a file: URL); None for http(s)://,
    pipe: and stdin's "-"."""
    if url.startswith("file:"):
        return url2pathname(urlparse(url).path)
    return None if url == "-" or url.startswith("pipe:") or "://" in url else url


def open_shard_stream(url: str, limits: ReadLimits = DEFAULT_LIMITS) -> BoundedStream:
    """A shard that is not a local file, as a stream within limits: http(s) through common/remote.py (read
    timeout, deadline, stream cap; no subprocess), `pipe:` (allowed by the operator) through webdataset's gopen
    with the stream cap and the deadline checked per read."""
    if is_remote(url):
        return open_stream(url, limits)
    if url.startswith("pipe:") or url == "-":
        return BoundedStream(url, limits, raw=wds.gopen(url, "rb"))
    raise ValueError(f"cannot read shard URL {url!r}: a local path, file:, http(s) or pipe: URL is needed")


def tar_samples(sources: Iterable[dict[str, Any]], limits: ReadLimits = DEFAULT_LIMITS) -> Iterator[dict[str, Any]]:
    """The pipeline stage: dicts with a `url` in (from a shard list), samples out. A local file is mapped in
    memory (if it is a regular file) and its payloads come as memoryviews (mapped_members); anything else is
    opened with open_shard_stream, read as a stream and closed once read, and its payloads are bytes. A member
    over limits.max_member_bytes is left out of its sample, its reason under `__skipped__`."""
    for source in sources:
        url = source["url"]
        if (path := local_file(url)) is not None:
            yield from group_samples(mapped_members(path, url, limits.max_member_bytes), url)
            continue
        stream = open_shard_stream(url, limits)
        try:
            yield from group_samples(tar_members(stream, url, limits.max_member_bytes), url)
        finally:
            stream.close()
