"""Acquisition of source images: a local folder, a tar archive read as a stream, or HTTP.

Every acquisition yields, per wanted item id, either a `Source` (where the bytes
are, plus a cheap signature: size and mtime) or a `FetchFailure` with a reason
that becomes a `rejects` row with stage 'fetch'. Nothing here decodes pixels;
that is ingest/crops.py's job.

The caller passes `needs_data(source)`: archive members whose signature already
matches what was cropped before are skipped without reading their bytes, which
is what makes a second run over an unchanged archive cheap.
"""

from __future__ import annotations

import os
import posixpath
import re
import string
import tarfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from common.atomic import atomic_path
from common.bounds import Range, bounded, check_ranges
from common.regular_files import open_regular
from common.remote import Deadline, RemoteError, Response, Retry, public_url, request

ID_PLACEHOLDER = "{image_id}"


@dataclass(frozen=True)
class Source:
    """Where one item's encoded bytes are; `data` is set only for archive members that need work."""

    item_id: str
    key: str  # the original location: a file path, a URL, or "<archive>::<member>"
    size: int
    mtime_ns: int
    path: str | None = None  # a local file holding the bytes
    data: bytes | None = None  # bytes already read (archive members)
    # What the crop state compares besides size and mtime_ns, when not `key`: an archive member's name with the
    # format ("zip::images/1.jpg"), so the same member in a new copy of the archive elsewhere still matches.
    signature: str = ""
    ref: Any = None  # an archive member the crop worker reads itself (ingest/archives.py)

    @property
    def state_key(self) -> str:
        return self.signature or self.key


@dataclass(frozen=True)
class FetchFailure:
    item_id: str
    reason: str  # "<kind>: details", e.g. "http 404: ..." or "missing: ..."


Acquired = Source | FetchFailure
NeedsData = Callable[[Source], bool]


def _always(_: Source) -> bool:
    return True


def _plain_name(name: str) -> bool:
    """A single path component that cannot climb: no separators, not '.' or '..', no NUL."""
    return bool(name) and "/" not in name and "\\" not in name and "\0" not in name and name not in (".", "..")


def local_sources(directory: str | Path, ids: Iterable[str], suffix: str = ".jpg") -> Iterator[Acquired]:
    """`<directory>/<id><suffix>` for each id; a missing file is a FetchFailure."""
    # One stat per item and plain string paths: this runs 255k times per materialisation.
    base = str(Path(directory).resolve())
    for item_id in ids:
        name = f"{item_id}{suffix}"
        if not _plain_name(name):
            yield FetchFailure(item_id, f"unsafe path: {name!r} climbs out of {base}")
            continue
        path = os.path.join(base, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            yield FetchFailure(item_id, f"missing: {path} does not exist")
            continue
        except OSError as exc:
            yield FetchFailure(item_id, f"unreadable: {exc}")
            continue
        yield Source(item_id, path, st.st_size, st.st_mtime_ns, path=path)


_MEMBER_NAME = re.compile(r"^(\d+)\.jpe?g$", re.IGNORECASE)


_MEMBER_KINDS = {tarfile.DIRTYPE: "a directory", tarfile.FIFOTYPE: "a FIFO (named pipe)",
                 tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device"}


def _unsafe_member(name: str) -> bool:
    parts = name.split("/")
    return name.startswith("/") or ".." in parts


def tar_sources(
    archive: str | Path,
    ids: Iterable[str],
    needs_data: NeedsData = _always,
    max_bytes: int = 50 * 2**20,
) -> Iterator[Acquired]:
    """Members named `<id>.jpg` (in any folder) of a tar/tar.gz/tar.bz2/tar.xz, read once, front to back.

    The archive (a regular file) is opened in stream mode ("r|*"), so it may be larger than
    memory or disk and is never extracted; only members that need work are read. A member
    that is a link or not a regular file is a FetchFailure saying so. Wanted ids with no
    member, and all ids not reached when the archive turns out to be damaged (or is not
    a regular file), become FetchFailures.
    """
    wanted = set(ids)
    done: set[str] = set()  # ids already answered (a Source or a FetchFailure)
    archive = Path(archive)
    try:
        with open_regular(archive) as raw, tarfile.open(fileobj=raw, mode="r|*") as tf:
            for member in tf:
                match = _MEMBER_NAME.match(posixpath.basename(member.name))
                if not match:
                    continue
                item_id = str(int(match.group(1)))
                if item_id not in wanted or item_id in done:
                    continue  # not ours, or a repeated member: the first one wins
                if _unsafe_member(member.name):
                    result: Acquired = FetchFailure(
                        item_id, f"unsafe path: member {member.name!r} climbs out of the archive"
                    )
                elif member.issym() or member.islnk():  # never followed: it could point anywhere
                    kind = "symbolic" if member.issym() else "hard"
                    result = FetchFailure(item_id, f"link: member {member.name} in {archive} is a {kind} link to "
                                                   f"{member.linkname!r}; links are not followed")
                elif not member.isfile():
                    result = FetchFailure(item_id, f"not a regular file: member {member.name} in {archive} is "
                                                   f"{_MEMBER_KINDS.get(member.type, 'not a file')}")
                elif member.size > max_bytes:
                    result = FetchFailure(item_id, f"too large: member {member.name} has {member.size} bytes")
                else:
                    result = Source(item_id, f"{archive}::{member.name}", member.size, int(member.mtime) * 10**9,
                                    signature=f"tar::{member.name}")
                    if needs_data(result):
                        fh = tf.extractfile(member)
                        result = replace(result, data=fh.read() if fh else b"")
                done.add(item_id)
                yield result
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        for item_id in sorted(wanted - done):
            yield FetchFailure(item_id, f"archive unreadable: {archive} stopped before this item: {exc}")
        return
    for item_id in sorted(wanted - done):
        yield FetchFailure(item_id, f"missing: no member {item_id}.jpg in {archive}")


@dataclass(frozen=True)
class HttpOptions:
    concurrency: int = bounded(8, Range(1, 256, "requests in flight, each a thread: more is a flood on one host"))
    timeout_s: float = bounded(30.0, Range(0.0, 3600.0, "seconds one request may stall; an hour means it is gone",
                                           lo_open=True))
    # Further tries after the first, for errors that may pass (5xx, 429, resets, timeouts).
    retries: int = bounded(3, Range(0, 100, "each retry waits twice as long as the one before"))
    backoff_s: float = bounded(1.0, Range(0.0, 600.0, "first wait, doubling each retry, with jitter", lo_open=True))
    max_bytes: int = bounded(50 * 2**20, Range(1, 2**30, "largest source file accepted from an archive or http: "
                                                         "each is held in memory while it is cropped"))
    # One image, every try together: a body that trickles in still ends.
    deadline_s: float = bounded(300.0, Range(0.0, 3600.0, "one image's fetch, every try together", lo_open=True))

    def __post_init__(self) -> None:
        check_ranges(self)


_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def template_fields(template: str) -> list[str]:
    """The names a URL template uses; raises ValueError for a malformed one or a field that is not a plain name
    (no attribute or index access, no !r/!s conversion)."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"URL template {template!r} is malformed: {exc}") from None
    for _, name, _, conversion in parsed:
        if name is None:
            continue
        if conversion or not _FIELD_NAME.match(name):
            raise ValueError(f"URL template {template!r}: {{{name}}} is not a plain field name")
        names.append(name)
    return names


def url_for(template: str, item_id: str, fields: Mapping[str, object] | None = None) -> str:
    """template with {image_id} and any of `fields` ({challenge_id}, ...; format specs allowed) filled in,
    each value URL-quoted."""
    names = template_fields(template)
    if "image_id" not in names:
        raise ValueError(f"URL template {template!r} lacks {ID_PLACEHOLDER}")
    scheme = urllib.parse.urlsplit(template).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"URL template {template!r} must be http or https")
    values = {**(fields or {}), "image_id": item_id}
    out = []
    for literal, name, spec, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            if name not in values:
                raise ValueError(f"URL template {template!r}: no field {{{name}}} (known: {', '.join(values)})")
            out.append(urllib.parse.quote(format(values[name], spec or ""), safe=""))
    return "".join(out)


def _download(url: str, dest: Path, opts: HttpOptions, deadline: Deadline) -> None:
    """One GET into dest (temporary name, renamed once complete) with common/remote.py's client: each read waits at
    most timeout_s and never past the deadline. Raises RemoteError with the reason the rejects row keeps."""
    shown = public_url(url)
    r = request("GET", url, {"Accept-Encoding": "identity"}, None, min(opts.timeout_s, max(deadline.left(), 1e-3)))
    try:
        if not 200 <= r.status < 300:  # a 404 will not heal by asking again; 5xx and 429 may
            raise RemoteError(f"http {r.status}: {shown} {r.resp.reason}", r.status >= 500 or r.status == 429)
        declared = r.header("Content-Length")
        if declared.isdigit() and int(declared) > opts.max_bytes:
            raise RemoteError(f"too large: {shown} declares {declared} bytes, cap {opts.max_bytes}")
        with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
            received = 0
            while block := _read(r, opts, deadline, received):
                received += len(block)
                if received > opts.max_bytes:
                    raise RemoteError(f"too large: {shown} sent over {opts.max_bytes} bytes")
                fh.write(block)
            if declared.isdigit() and received != int(declared):
                raise RemoteError(f"incomplete: {shown} sent {received} of {declared} bytes", retryable=True)
    finally:
        r.close()


def _read(r: Response, opts: HttpOptions, deadline: Deadline, received: int) -> bytes:
    """The next piece of the body; past the deadline, a reason that says how much came."""
    try:
        return r.read(1 << 16, opts.timeout_s, deadline)
    except RemoteError as exc:
        if exc.retryable or deadline.left() > 0:
            raise
        raise RemoteError(f"too slow: {public_url(r.url)} sent {received} bytes and was not done after "
                          f"deadline_s={opts.deadline_s:g} s") from None


def fetch_one(url: str, dest: Path, opts: HttpOptions, sleep: Callable[[float], None] = time.sleep) -> str | None:
    """Download with common/remote.py's Retry (jittered exponential backoff, within retries and deadline_s); None
    on success, else the reason."""
    retry = Retry(opts.retries, opts.backoff_s, Deadline(opts.deadline_s), sleep)
    while True:
        try:
            _download(url, dest, opts, retry.deadline)
            return None
        except RemoteError as exc:
            if not exc.retryable or not retry.again():
                return str(exc) + (f" (after {retry.tries} tries)" if retry.tries > 1 else "")


def _cached(item_id: str, key: str, path: Path) -> Source:
    st = path.stat()
    return Source(item_id, key, st.st_size, st.st_mtime_ns, path=str(path))


def http_sources(
    url_template: str,
    ids: Iterable[str],
    cache_dir: str | Path,
    opts: HttpOptions = HttpOptions(),
    suffix: str = ".jpg",
    fields: Callable[[str], Mapping[str, object]] | None = None,
) -> Iterator[Acquired]:
    """Fetch `url_template` (with {image_id}, and any of fields(id)'s names) for each id into cache_dir, at most
    opts.concurrency at once.

    Resumable: a file already in cache_dir was renamed there only after its whole
    body arrived, so it is used as is and not fetched again. Results arrive in
    completion order.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    todo: list[tuple[str, str, Path]] = []
    for item_id in ids:
        url = url_for(url_template, item_id, fields(item_id) if fields else None)
        name = f"{item_id}{suffix}"
        if not _plain_name(name):
            yield FetchFailure(item_id, f"unsafe path: {name!r} climbs out of {cache}")
            continue
        dest = cache / name
        if dest.is_file():
            yield _cached(item_id, url, dest)
        else:
            todo.append((item_id, url, dest))
    if not todo:
        return
    # Bounded queue (never a future per item for 255k items), deep enough that downloads keep
    # going while the caller crops a batch instead of pulling the next result.
    window = opts.concurrency * 32
    pending: dict[Future, tuple[str, str, Path]] = {}
    queue = iter(todo)
    pool = ThreadPoolExecutor(max_workers=opts.concurrency, thread_name_prefix="fetch")
    try:
        while True:
            while len(pending) < window and (job := next(queue, None)) is not None:
                pending[pool.submit(fetch_one, job[1], job[2], opts)] = job
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item_id, url, dest = pending.pop(future)
                reason = future.result()
                yield FetchFailure(item_id, reason) if reason else _cached(item_id, url, dest)
    finally:
        # When the caller stops early (an error downstream, a closed generator), queued downloads are
        # dropped rather than awaited: up to `window` of them, each with its retries, would take minutes.
        pool.shutdown(wait=False, cancel_futures=True)
