"""Photos straight from the archives AVA is published as: zip, Parquet shards and 7z (single or split volumes).
Tar archives are read as a stream by ingest/fetch.py; nothing here extracts an archive to disk.

Each acquisition yields, per wanted id, a `Source` or a `FetchFailure`, like those of ingest/fetch.py:

- zip: the central directory is read once; each Source carries a `ZipMember` that the crop worker reads
  itself, opening the archive in its own process (once per process), so members are read and inflated in
  parallel, by name, with no pass over the rest of the archive.
- Parquet (a file, or a folder of shards): the id column is read per row group; row groups without a wanted
  id are never read further. For the others the image bytes are read and checksummed here (the change
  signature), and each Source carries a `ParquetRow` that the worker reads itself, one row group at a time.
- 7z: the header lists every member with its CRC-32 and size; the members that need work are decompressed
  front to back by py7zr in a thread (a solid 7z cannot be read any other way) and handed over as bytes.
  Split volumes (`x.7z.001`, `x.7z.002`, ...) are read as one file, in place.

Each Source's change signature is the member's own: CRC-32 and size for zip and 7z members (from the archive's
directory), the CRC-32 of the bytes and their length for Parquet rows (tar members: size and mtime). Its
`signature` key names the member, not the archive, so a new copy of the archive elsewhere re-crops only the
members whose bytes changed.

Safety: archives and volumes are opened only as regular files (never a FIFO); member names that are absolute or
climb with `..` are `unsafe path` failures, links and other non-files are failures saying so, and members over
`max_bytes` are `too large`. A member is read at most max_bytes + 1 bytes far, whatever its header says.
"""

from __future__ import annotations

import glob
import io
import os
import queue
import re
import stat
import struct
import threading
import zipfile
import zlib
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from common.imaging import RejectedImage
from common.regular_files import open_regular
from ingest.crops import ArchiveMember
from ingest.fetch import _MEMBER_NAME, Acquired, FetchFailure, NeedsData, Source, _always

ARCHIVE_FORMATS = ("zip", "parquet", "7z")
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_VOLUME = re.compile(r"^(?P<base>.+)\.(?P<num>\d{3,})$")
HOW_TO_EXTRACT_7Z = ("or extract it once with 7-Zip (`7z x {first} -o$AESTHETIC_RAW/ava/`) and use acquisition "
                     "'directory' with source pointing at the folder of <id>.jpg")


class ArchiveError(Exception):
    """The archive as a whole cannot be read (missing, not a regular file, not of its format, a column or a
    volume missing); str() is one line. Raised while listing, so an archive that cannot be opened fails the stage
    before any crop is made."""


class ArchiveChanged(ArchiveError):
    """The archive was replaced or rewritten while its members were being cropped: rerun."""


Identity = tuple[int, int, int]  # (size, mtime_ns, inode) of an open archive file


def _identity(fh: BinaryIO) -> Identity:
    st = os.fstat(fh.fileno())
    return st.st_size, st.st_mtime_ns, st.st_ino


def _open_archive(path: Path, what: str) -> BinaryIO:
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise ArchiveError(f"{what} not found: {path}") from None
    except OSError as exc:  # NotRegularFile says what is there; others name the error
        raise ArchiveError(f"{what} unreadable: {exc}" if str(path) in str(exc) else
                           f"{what} unreadable: {path}: {exc.strerror or exc}") from None


def unsafe_name(name: str) -> bool:
    """A member name that could write or point outside a folder it is extracted to: absolute (`/x`, `\\x`,
    `C:x`), climbing (`..` as a component, with either separator), or holding a NUL."""
    parts = re.split(r"[/\\]", name)
    return (name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or ".." in parts
            or "\0" in name)


def member_id(name: str) -> str | None:
    """The AVA id of a member named `<id>.jpg` (or .jpeg, any case) in any folder, else None."""
    match = _MEMBER_NAME.match(re.split(r"[/\\]", name)[-1])
    return str(int(match.group(1))) if match else None


# --- zip ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZipMember(ArchiveMember):
    """One zip member for a crop worker to read from the archive itself (picklable, a few dozen bytes)."""

    archive: str
    identity: Identity
    name: str
    header_offset: int
    max_bytes: int

    def __str__(self) -> str:
        return f"{self.archive}::{self.name}"

    def read(self) -> bytes:
        zf, by_offset = _worker_zip(self.archive, self.identity)
        info = by_offset.get(self.header_offset)
        if info is None:
            raise ArchiveChanged(f"{self.archive} changed during the run (member {self.name} moved); rerun")
        try:
            if info.compress_type == zipfile.ZIP_DEFLATED and _libdeflate() is not None:
                return _inflate_whole(zf, info)
            with zf.open(info) as member:
                data = member.read(self.max_bytes + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
            raise RejectedImage(f"corrupt member: {self}: {exc}") from None
        if len(data) > self.max_bytes:
            raise RejectedImage(f"too large: member {self} inflates to over {self.max_bytes} bytes")
        return data



def _claim(name: str, is_dir: bool, wanted: Collection[str], done: set[str]) -> str | None:
    """The id of a member that is wanted and not yet taken (marked taken now); None to skip the member."""
    item_id = member_id(name)
    if item_id is None or item_id not in wanted or item_id in done or is_dir:
        return None
    done.add(item_id)
    return item_id

def _libdeflate() -> Any:
    try:
        import deflate
    except ImportError:  # zipfile's own inflate reads the member instead
        return None
    return deflate


_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then the name and extra field lengths at 26 and 28


def _inflate_whole(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A deflated member in one libdeflate call: twice as fast as zipfile's streaming inflate here (0.7 against
    1.4 ms for a 137 KB JPEG), a tenth of a crop. The sizes come from the central directory, so the output is
    bounded by the declared size (listed under max_bytes); the local header's name and the CRC-32 are checked
    as zipfile checks them."""
    fd = zf.fp.fileno()
    header = os.pread(fd, _LOCAL_HEADER.size, info.header_offset)
    if len(header) < _LOCAL_HEADER.size:
        raise zipfile.BadZipFile("truncated local header")
    signature, name_len, extra_len = _LOCAL_HEADER.unpack(header)
    if signature != b"PK\x03\x04":
        raise zipfile.BadZipFile("bad local header signature")
    name = os.pread(fd, name_len, info.header_offset + _LOCAL_HEADER.size)
    if name.decode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace") != info.orig_filename:
        raise zipfile.BadZipFile(f"the local header names {name!r}")
    raw = os.pread(fd, info.compress_size, info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
    deflate = _libdeflate()
    try:
        data = deflate.deflate_decompress(raw, info.file_size) if info.file_size else b""
    except deflate.DeflateError as exc:
        raise zipfile.BadZipFile(f"inflate failed: {exc}") from None
    if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
        raise zipfile.BadZipFile(f"Bad CRC-32 or size ({len(data)} of {info.file_size} bytes)")
    return data


_WORKER_ZIPS: dict[str, tuple[Identity, zipfile.ZipFile, dict[int, zipfile.ZipInfo]]] = {}


def _worker_zip(archive: str, identity: Identity) -> tuple[zipfile.ZipFile, dict[int, zipfile.ZipInfo]]:
    """The archive opened once per process (its central directory parsed once), checked to be the listed one."""
    cached = _WORKER_ZIPS.get(archive)
    if cached is not None and cached[0] == identity:
        return cached[1], cached[2]
    if cached is not None:
        cached[1].close()
        del _WORKER_ZIPS[archive]
    fh = _open_archive(Path(archive), "zip archive")
    if _identity(fh) != identity:
        fh.close()
        raise ArchiveChanged(f"{archive} changed during the run; rerun")
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError) as exc:
        fh.close()
        raise ArchiveChanged(f"{archive} is no longer a readable zip: {exc}") from None
    by_offset = {info.header_offset: info for info in zf.infolist()}
    _WORKER_ZIPS[archive] = (identity, zf, by_offset)
    return zf, by_offset


def _zip_problem(info: zipfile.ZipInfo, archive: Path, max_bytes: int) -> str | None:
    mode = info.external_attr >> 16
    if unsafe_name(info.filename):
        return f"unsafe path: member {info.filename!r} climbs out of the archive"
    if info.create_system == 3 and stat.S_ISLNK(mode):
        return f"link: member {info.filename} in {archive} is a symbolic link; links are not followed"
    if info.create_system == 3 and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
        return f"not a regular file: member {info.filename} in {archive} (mode {oct(mode)})"
    if info.flag_bits & 0x1:
        return f"encrypted: member {info.filename} in {archive} is encrypted"
    if info.compress_type not in _ZIP_METHODS:
        return f"unsupported: member {info.filename} in {archive} uses compression method {info.compress_type}"
    if info.file_size > max_bytes:
        return f"too large: member {info.filename} has {info.file_size} bytes"
    return None


def zip_sources(archive: str | Path, ids: Iterable[str], max_bytes: int = 50 * 2**20) -> Iterator[Acquired]:
    """Members named `<id>.jpg` (in any folder) of a zip, in archive order; the first of repeated names wins."""
    archive = Path(archive)
    wanted = set(ids)
    with _open_archive(archive, "zip archive") as fh:
        identity = _identity(fh)
        try:
            infos = zipfile.ZipFile(fh).infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ArchiveError(f"not a readable zip archive: {archive}: {exc}") from None
    done: set[str] = set()
    for info in sorted(infos, key=lambda i: i.header_offset):
        item_id = _claim(info.filename, info.is_dir(), wanted, done)
        if item_id is None:
            continue
        problem = _zip_problem(info, archive, max_bytes)
        if problem:
            yield FetchFailure(item_id, problem)
            continue
        ref = ZipMember(str(archive), identity, info.filename, info.header_offset, max_bytes)
        yield Source(item_id, f"{archive}::{info.filename}", info.file_size, info.CRC,
                     signature=f"zip::{info.filename}", ref=ref)
    for item_id in sorted(wanted - done, key=_id_order):
        yield FetchFailure(item_id, f"missing: no member {item_id}.jpg in {archive}")


def _id_order(item_id: str) -> tuple[int, str]:
    return (int(item_id), item_id) if item_id.isdigit() else (0, item_id)


# --- Parquet --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParquetColumns:
    id: str = "image_id"  # a column (or `struct.field`) holding the AVA id, or a file name like `123.jpg`
    image: str = "image"  # binary column, or a struct with a `bytes` field (Hugging Face's Image feature)


@dataclass(frozen=True)
class ParquetRow(ArchiveMember):
    """One Parquet row for a crop worker to read itself (its row group is read once per worker)."""

    file: str
    identity: Identity
    row_group: int
    row: int
    column: str  # the leaf column holding the bytes, e.g. `image.bytes`

    def __str__(self) -> str:
        return f"{self.file}::row group {self.row_group}, row {self.row}"

    def read(self) -> bytes:
        values = _worker_row_group(self.file, self.identity, self.row_group, self.column)
        data = values[self.row].as_py()
        if data is None:  # listed as present: the file changed under us
            raise ArchiveChanged(f"{self.file} changed during the run; rerun")
        return data


_WORKER_GROUP: dict[str, Any] = {}  # the last row group read in this process: key -> values


def _worker_row_group(file: str, identity: Identity, row_group: int, column: str) -> Any:
    key = (file, identity, row_group, column)
    if _WORKER_GROUP.get("key") != key:
        _WORKER_GROUP.clear()  # one row group in memory per worker
        with _open_archive(Path(file), "Parquet file") as fh:
            if _identity(fh) != identity:
                raise ArchiveChanged(f"{file} changed during the run; rerun")
            _WORKER_GROUP.update(key=key, values=_read_leaf(fh, row_group, column))
    return _WORKER_GROUP["values"]


def _read_leaf(fh: BinaryIO, row_group: int, column: str) -> Any:
    """The one leaf column `column` (dotted for a struct field) of a row group, as a pyarrow array."""
    import pyarrow.parquet as pq

    table = pq.ParquetFile(fh).read_row_group(row_group, columns=[column])
    values = table.column(0).combine_chunks()
    for _ in column.split(".")[1:]:  # a selected struct field comes back as a struct with that one child
        values = values.field(0)
    return values


def parquet_files(source: Path) -> list[Path]:
    """A .parquet file, or every regular *.parquet file under a folder (sorted; hidden names skipped)."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*.parquet")
                       if not any(part.startswith(".") for part in p.relative_to(source).parts))
        if not files:
            raise ArchiveError(f"no *.parquet files under {source}")
        return files
    return [source]


def _leaf(schema: Any, column: str) -> Any:
    """The pyarrow type at a dotted column path, or None."""
    import pyarrow as pa

    names = column.split(".")
    if names[0] not in schema.names:
        return None
    kind = schema.field(names[0]).type
    for name in names[1:]:
        if not pa.types.is_struct(kind) or kind.get_field_index(name) < 0:
            return None
        kind = kind.field(name).type
    return kind


def _id_type_ok(kind: Any) -> bool:
    """Integers (ids) and strings (ids or file names) only. A float column is refused even when its values are
    whole: its cells never match an id, so every photo would turn into a `missing` reject (and a previously
    accepted one lose its crop); a list or any other type likewise."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return (pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_string_view(kind))


def _resolve_columns(schema: Any, columns: ParquetColumns, file: Path) -> tuple[str, str]:
    import pyarrow as pa

    available = ", ".join(schema.names)
    id_kind = _leaf(schema, columns.id)
    if id_kind is None:
        raise ArchiveError(f"{file} has no id column {columns.id!r} (columns: {available}); set parquet_id_column")
    if not _id_type_ok(id_kind):
        raise ArchiveError(f"{file}: id column {columns.id!r} has Arrow type {id_kind}; it must hold integers or "
                           f"strings (123, or a file name such as 123.jpg): cast it, or set parquet_id_column")
    image, kind = columns.image, _leaf(schema, columns.image)
    if kind is not None and pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
        image, kind = f"{image}.bytes", kind.field("bytes").type  # Hugging Face's Image: struct<bytes, path>
    if kind is None or not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        found = "no such column" if kind is None else f"type {kind}"
        raise ArchiveError(f"{file}: image column {columns.image!r} must hold the encoded bytes ({found}; "
                           f"columns: {available}); set parquet_image_column")
    return columns.id, image


def _row_id(value: Any) -> str | None:
    """An id cell: an integer, digits, or a file name such as `images/123.jpg`."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value) if value >= 0 else None
    if isinstance(value, str):
        text = value.strip()
        return str(int(text)) if text.isascii() and text.isdigit() else member_id(text)
    return None


def parquet_sources(source: str | Path, ids: Iterable[str], columns: ParquetColumns = ParquetColumns(),
                    max_bytes: int = 50 * 2**20) -> Iterator[Acquired]:
    """Rows of a Parquet file (or folder of shards) whose id column names a wanted id; the first row wins."""
    wanted = set(ids)
    done: set[str] = set()
    files = parquet_files(Path(source))
    for file in files:  # every shard's columns, before the first row is answered and any crop is made
        with _open_archive(file, "Parquet file") as fh:
            _parquet_file(fh, file, columns)
    for file in files:
        with _open_archive(file, "Parquet file") as fh:
            identity = _identity(fh)
            pf, id_column, image_column = _parquet_file(fh, file, columns)
            for group in range(pf.metadata.num_row_groups):
                try:
                    yield from _row_group_sources(fh, file, identity, group, id_column, image_column, wanted, done,
                                                  max_bytes)
                except ArchiveError:
                    raise
                except Exception as exc:  # a damaged row group: its ids and the rest are answered below
                    raise ArchiveError(f"Parquet file damaged: {file}, row group {group}: {exc}") from None
    for item_id in sorted(wanted - done, key=_id_order):
        yield FetchFailure(item_id, f"missing: no row with {columns.id} = {item_id} in {source}")


def _parquet_file(fh: BinaryIO, file: Path, columns: ParquetColumns) -> tuple[Any, str, str]:
    """(the pyarrow ParquetFile, id column, image leaf column); ArchiveError for a file that is not Parquet or
    whose columns are missing or of the wrong type."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(fh)
        return (pf, *_resolve_columns(pf.schema_arrow, columns, file))
    except ArchiveError:
        raise
    except Exception as exc:  # pyarrow's errors (ArrowInvalid, OSError) for a file that is not Parquet
        raise ArchiveError(f"not a readable Parquet file: {file}: {exc}") from None


def _row_group_sources(fh: BinaryIO, file: Path, identity: Identity, group: int, id_column: str,
                       image_column: str, wanted: set[str], done: set[str], max_bytes: int) -> Iterator[Acquired]:
    rows: list[tuple[int, str]] = []
    for row, value in enumerate(_read_leaf(fh, group, id_column).to_pylist()):
        item_id = _row_id(value)
        if item_id is not None and item_id in wanted and item_id not in done:
            done.add(item_id)
            rows.append((row, item_id))
    if not rows:
        return  # not one wanted id: the image bytes of this row group are never read
    values = _read_leaf(fh, group, image_column)
    for row, item_id in rows:
        cell = values[row]
        if not cell.is_valid:
            yield FetchFailure(item_id, f"missing: row {row} of row group {group} in {file} has no image bytes")
            continue
        data = cell.as_buffer()
        if data.size > max_bytes:
            yield FetchFailure(item_id, f"too large: row {row} of row group {group} in {file} has {data.size} bytes")
            continue
        ref = ParquetRow(str(file), identity, group, row, image_column)
        # CRC-32 of the bytes, as a zip stores for its members: 2 GB/s here, where a cryptographic hash would take
        # a tenth of a crop's time in this (listing) process.
        yield Source(item_id, f"{file}::row group {group}, row {row}", data.size, zlib.crc32(memoryview(data)),
                     signature=f"parquet::{item_id}", ref=ref)


# --- 7z -------------------------------------------------------------------------------------------------------


def volumes(source: Path) -> list[Path]:
    """The files of a 7z archive: the file itself, or its split volumes `x.7z.001`, `x.7z.002`, ... in order
    (given as `x.7z` or any volume), with none missing."""
    match = _VOLUME.match(source.name)
    if match is None and os.path.lexists(source):
        return [source]
    base = source.with_name(match.group("base")) if match else source
    width = len(match.group("num")) if match else 3
    numbered = {}
    for path in base.parent.glob(f"{glob.escape(base.name)}.*"):
        m = _VOLUME.match(path.name)
        if m and m.group("base") == base.name and len(m.group("num")) == width:
            numbered[int(m.group("num"))] = path
    if not numbered:
        raise ArchiveError(f"7z archive not found: {source} (nor split volumes {base.name}.001, ...)")
    missing = [n for n in range(1, max(numbered) + 1) if n not in numbered]
    if missing:
        raise ArchiveError(f"7z volume {base.name}.{missing[0]:0{width}d} is missing ({len(numbered)} volumes "
                           f"found, up to .{max(numbered):0{width}d})")
    return [numbered[n] for n in sorted(numbered)]


class _Volumes(io.RawIOBase):
    """Split volumes read as one seekable file, each opened as a regular file."""

    def __init__(self, paths: list[Path]) -> None:
        self.files: list[BinaryIO] = []
        try:
            for path in paths:
                self.files.append(_open_archive(path, "7z volume"))
        except BaseException:
            self.close()
            raise
        self.starts = [0]
        for fh in self.files:
            self.starts.append(self.starts[-1] + os.fstat(fh.fileno()).st_size)
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.starts[-1]}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        got = 0
        while got < len(view) and self.pos < self.starts[-1]:
            k = next(i for i in range(len(self.files)) if self.starts[i] <= self.pos < self.starts[i + 1])
            fh = self.files[k]
            fh.seek(self.pos - self.starts[k])
            n = fh.readinto(view[got : got + min(len(view) - got, self.starts[k + 1] - self.pos)])
            if not n:
                break
            got += n
            self.pos += n
        return got

    def close(self) -> None:
        for fh in self.files:
            fh.close()
        super().close()


def _py7zr() -> Any:
    try:
        import py7zr
    except ImportError:
        return None
    return py7zr


class _Stop(Exception):
    """Raised inside py7zr's extraction to end it early (the consumer went away)."""


class _Handover:
    """Members py7zr decompresses, handed to the consumer through a bounded queue (one member at a time in
    memory per slot), each capped at max_bytes."""

    def __init__(self, max_bytes: int, slots: int = 16) -> None:
        self.max_bytes = max_bytes
        self.queue: queue.Queue = queue.Queue(slots)
        self.stop = threading.Event()

    def put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Stop


def _writer_factory(handover: _Handover) -> Any:
    from py7zr.io import Py7zIO, WriterFactory

    class Member(Py7zIO):
        def __init__(self, name: str) -> None:
            self.name, self.data, self.over = name, bytearray(), False

        def write(self, s: bytes | bytearray) -> int:
            if handover.stop.is_set():
                raise _Stop
            if len(self.data) + len(s) > handover.max_bytes:
                self.over = True  # keep passing over the bytes (a solid block goes on), but hold none of them
            if not self.over:
                self.data += s
            return len(s)

        def read(self, size: int | None = None) -> bytes:
            return bytes(self.data)

        def seek(self, offset: int, whence: int = 0) -> int:
            return 0

        def flush(self) -> None:
            pass

        def size(self) -> int:
            return len(self.data)

        def close(self) -> None:
            handover.put((self.name, None if self.over else bytes(self.data)))
            self.data = bytearray()

    class Factory(WriterFactory):
        def create(self, filename: str) -> Py7zIO:
            return Member(filename)

    return Factory()


def seven_zip_sources(archive: str | Path, ids: Iterable[str], needs_data: NeedsData = _always,
                      max_bytes: int = 50 * 2**20) -> Iterator[Acquired]:
    """Members named `<id>.jpg` of a 7z archive (single file or split volumes), read in place through py7zr;
    only members that need work are handed over, in archive order."""
    archive = Path(archive)
    paths = volumes(archive)
    py7zr = _py7zr()
    if py7zr is None:
        raise ArchiveError("reading 7z archives needs the py7zr package (pip install py7zr), "
                           + HOW_TO_EXTRACT_7Z.format(first=paths[0]))
    wanted = set(ids)
    done: set[str] = set()
    reader = _Volumes(paths)
    try:
        try:
            sz = py7zr.SevenZipFile(reader, "r")
        except Exception as exc:  # py7zr's Bad7zFile and friends, for a file that is not a 7z archive
            raise ArchiveError(f"not a readable 7z archive: {paths[0]}: {exc}") from None
        with sz:
            if sz.needs_password():
                raise ArchiveError(f"7z archive {paths[0]} is encrypted; extract it with its password first")
            targets: dict[str, tuple[str, Source]] = {}
            for f in sz.files:
                item_id = _claim(f.filename, f.is_directory, wanted, done)
                if item_id is None:
                    continue
                problem = _seven_zip_problem(f, archive, max_bytes)
                if problem:
                    yield FetchFailure(item_id, problem)
                    continue
                src = Source(item_id, f"{archive}::{f.filename}", f.uncompressed, f.crc32 or 0,
                             signature=f"7z::{f.filename}")
                if needs_data(src):
                    targets[f.filename] = (item_id, src)
                else:
                    yield src
            if targets:
                yield from _extract(sz, targets, archive, max_bytes)
    finally:
        reader.close()
    for item_id in sorted(wanted - done, key=_id_order):
        yield FetchFailure(item_id, f"missing: no member {item_id}.jpg in {archive}")


def _seven_zip_problem(f: Any, archive: Path, max_bytes: int) -> str | None:
    if unsafe_name(f.filename):
        return f"unsafe path: member {f.filename!r} climbs out of the archive"
    if f.is_symlink:
        return f"link: member {f.filename} in {archive} is a symbolic link; links are not followed"
    if getattr(f, "is_junction", False) or getattr(f, "is_socket", False):
        return f"not a regular file: member {f.filename} in {archive}"
    if f.uncompressed > max_bytes:
        return f"too large: member {f.filename} has {f.uncompressed} bytes"
    return None


def _extract(sz: Any, targets: dict[str, tuple[str, Source]], archive: Path,
             max_bytes: int) -> Iterator[Acquired]:
    """Decompress the targets in a thread and yield each as it completes; if the archive breaks, the targets
    not reached are failures naming the error."""
    handover = _Handover(max_bytes)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            sz.extract(targets=list(targets), factory=_writer_factory(handover))
        except _Stop:
            return
        except BaseException as exc:  # reported to the consumer below, as failures of the items not reached
            failure.append(exc)
        try:
            handover.put(None)
        except _Stop:
            pass

    thread = threading.Thread(target=run, name="7z-extract", daemon=True)
    thread.start()
    answered: set[str] = set()
    try:
        while (item := handover.queue.get()) is not None:
            name, data = item
            if name not in targets or name in answered:
                continue
            answered.add(name)
            item_id, src = targets[name]
            if data is None:
                yield FetchFailure(item_id, f"too large: member {name} inflates to over {max_bytes} bytes")
            else:
                yield Source(src.item_id, src.key, src.size, src.mtime_ns, signature=src.signature, data=data)
    finally:
        handover.stop.set()
        thread.join(30)
    detail = f"{type(failure[0]).__name__}: {failure[0]}" if failure else "extraction ended early"
    for name in targets:
        if name not in answered:
            yield FetchFailure(targets[name][0], f"archive unreadable: {archive} stopped before this item: {detail}")


# --- the ratings and lists that come with the photos ----------------------------------------------------------

AVA_TEXTS = ("AVA.txt", "tags.txt", "challenges.txt")
LISTS_DIR = "aesthetics_image_lists"


def _ava_text_target(name: str) -> str | None:
    """Where a member of AVA_dataset.zip goes in the drop: `AVA.txt`, `tags.txt`, `challenges.txt` and
    `aesthetics_image_lists/<list>.jpgl`, found in any folder; None for anything else."""
    parts = re.split(r"[/\\]", name)
    if parts[-1] in AVA_TEXTS:
        return parts[-1]
    if len(parts) >= 2 and parts[-2] == LISTS_DIR and parts[-1].endswith(".jpgl") and not parts[-1].startswith("."):
        return f"{LISTS_DIR}/{parts[-1]}"
    return None


def place_ava_texts(archive: str | Path, ava_dir: str | Path, max_bytes: int = 64 * 2**20) -> tuple[list[str],
                                                                                                      list[str]]:
    """Copy the ratings and lists a zip holds beside its photos (AVA_dataset.zip does) into the drop, so the stage
    finds them where it reads them; a file already in the drop is kept as it is. Returns (placed, kept)."""
    from common.atomic import write_atomic

    archive, ava_dir = Path(archive), Path(ava_dir)
    placed, kept = [], []
    with _open_archive(archive, "zip archive") as fh:
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ArchiveError(f"not a readable zip archive: {archive}: {exc}") from None
        seen: set[str] = set()
        for info in zf.infolist():
            target = _ava_text_target(info.filename)
            if target is None or target in seen or info.is_dir() or _zip_problem(info, archive, max_bytes):
                continue
            seen.add(target)
            dest = ava_dir / target
            if os.path.lexists(dest):
                kept.append(target)
                continue
            try:
                with zf.open(info) as member:
                    data = member.read(max_bytes + 1)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise ArchiveError(f"corrupt member: {archive}::{info.filename}: {exc}") from None
            try:
                write_atomic(dest, data)
            except OSError as exc:  # a full disk, a read-only drop: named, and no temporary file left
                raise ArchiveError(f"cannot write {dest}: {exc.strerror or exc}") from None
            placed.append(target)
    return sorted(placed), sorted(kept)
