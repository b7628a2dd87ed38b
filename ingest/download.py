"""Download one large raw file (an AVA archive, SAC's database or tarball, a Kuler .mat) into $AESTHETIC_RAW.

`download(settings)` is the whole job for one file as a plain function; `download_drop` fetches a dataset's files
into its drop, and the download assets and `aesthetic download` call it.

- Resumable: the body goes to `.<name>.part` beside the destination, and a sidecar `.<name>.download.json` keeps
  the validator (ETag or Last-Modified) it came with. After a dropped connection, a retry or the next run asks
  for the rest with `Range` + `If-Range`; a server that answers 200 instead (it ignores ranges, or the file
  changed) starts the body again, and so does a 206 whose ETag, Last-Modified or total size differs from the
  stored ones (a server that ignores If-Range). Failures that may pass (5xx, 429, resets, timeouts, a short
  body) are retried with jittered exponential backoff; progress resets the count.
- Bounded: the free space is checked before a byte is written and again as bytes arrive (reserve_bytes stays free
  even when no length is declared), a body over `max_bytes` (declared or streamed) is refused, each read waits at
  most `timeout_s`, and the whole call ends by `deadline_s` (the HTTP client is common/remote.py's).
- Verified once: the SHA-256 is computed while the body arrives and checked against the expected one; the
  sidecar records it with the size, the ETag and the file's mtime. A complete file whose sidecar still
  describes it is not fetched again: with an expected checksum the stored one decides, without one a HEAD
  request (ETag and size) does.
- Tokens: read from the environment, sent only to the configured URL's own host, never after a redirect
  leaves it, and never written to a log, an error, the sidecar or metadata.

Only the finished file is renamed into place (common/atomic.py's publish), so the destination is always
either the previous complete file or the new one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from common.atomic import publish, write_atomic
from common.bounds import Range, bounded, bounded_like, check_ranges, help_of, setting
from common.regular_files import NotRegularFile, file_kind, open_regular
from common.remote import Deadline, RemoteError, Response, Retry, public_url, request

Progress = Callable[[int, int | None], None]  # (bytes in the file so far, total or None)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
HF_HOSTS = ("huggingface.co", "hf.co")
BLOCK = 1 << 20
DEFAULT_MAX_BYTES = 64 * 2**30  # the largest public AVA copy is 33 GB
MAX_BYTES_CAP = 2**40


class DownloadError(Exception):
    """A download that cannot complete; str() is one line that names the file and what to do. keep_part: the
    partial body stays for a later resume (a full disk); otherwise it is removed."""

    def __init__(self, message: str, keep_part: bool = False) -> None:
        super().__init__(message)
        self.keep_part = keep_part


def expected_sha256(text: str) -> str:
    """An expected SHA-256 as given (64 hex digits, either case, or empty: nothing to check), lower-cased;
    DownloadError otherwise. The one check the config and `aesthetic download --sha256` share."""
    digest = text.strip().lower()
    if digest and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)):
        raise DownloadError(f"{text[:80]!r} is not a SHA-256 (64 hex digits)")
    return digest


@dataclass(frozen=True)
class DownloadSettings:
    """One file's download. The `*_download` assets' config (assets/downloads.py) is generated from these fields,
    and `aesthetic download` takes its flags' types, defaults and help from them."""

    url: str = setting(MISSING, "https URL of the file (a Hugging Face resolve/ URL works as is)")
    dest_dir: Path = setting(MISSING, "the folder the file goes into")
    filename: str = setting("", "name under the drop folder; empty: the URL's last path part")
    sha256: str = setting("", "expected SHA-256 (hex), checked after the body arrives; empty: computed and recorded")
    size: int = bounded(0, Range(0, MAX_BYTES_CAP, "expected bytes, 0: not known; never above the largest cap"),
                        "expected bytes; 0: not checked")
    max_bytes: int = bounded(DEFAULT_MAX_BYTES, Range(1, MAX_BYTES_CAP, "largest body accepted, per file: 1 TiB is "
                                                                       "thirty times the largest AVA copy"),
                             "largest body accepted, per file")
    token_env: str = setting("", "environment variable with a bearer token; empty: HF_TOKEN for huggingface.co "
                                 "URLs, none elsewhere")
    retries: int = bounded(5, Range(0, 100, "each retry waits twice as long as the one before"),
                           "further tries without progress after a failure that may pass")
    timeout_s: float = bounded(60.0, Range(0.0, 3600.0, "seconds a connection may stall; an hour means it is gone",
                                           lo_open=True),
                               "seconds a connection may stall")
    backoff_s: float = bounded(2.0, Range(0.0, 600.0, "first wait, doubling each retry, with jitter", lo_open=True),
                               "seconds before the first retry")
    reserve_bytes: int = bounded(256 * 2**20, Range(0, 2**50, "left free on the disk beyond the body"),
                                 "bytes left free on the disk beyond the body")
    deadline_s: float = bounded(86400.0, Range(0.0, 30 * 86400.0, "a whole archive at a slow link still ends "
                                                                  "within a month", lo_open=True),
                                "the longest one file's download may take in a run (every try); a part left by it "
                                "is resumed by the next run")

    def __post_init__(self) -> None:
        object.__setattr__(self, "dest_dir", Path(self.dest_dir))
        object.__setattr__(self, "sha256", expected_sha256(self.sha256))
        try:
            check_ranges(self)
        except ValueError as exc:
            raise DownloadError(f"bad download options: {exc}") from None
        if self.size > self.max_bytes:
            raise DownloadError(f"expected size {self.size} bytes is over the cap max_bytes={self.max_bytes}")
        check_url(self.url)
        name = self.filename or file_name(self.url)
        if not _plain_name(name):
            raise DownloadError(f"cannot name the download {name!r}: give a plain file name (no folders)")
        object.__setattr__(self, "filename", name)

    @property
    def dest(self) -> Path:
        return self.dest_dir / self.filename


@dataclass
class DownloadReport:
    url: str  # without query or fragment (signed URLs carry credentials there)
    path: str
    status: str  # "downloaded" or "up to date"
    checked_by: str = ""  # what decided: "stored checksum", "HEAD ETag and size", "SHA-256 of the file", ...
    bytes: int = 0  # size of the file
    bytes_fetched: int = 0  # body bytes received in this call
    seconds: float = 0.0
    resumes: int = 0  # requests that continued a partial body with Range
    retries: int = 0
    restarts: int = 0  # times the server sent the whole body again (range ignored or file changed)
    sha256: str = ""
    etag: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def mb_per_s(self) -> float:
        return self.bytes_fetched / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def as_metadata(self) -> dict:
        return {"url": self.url, "path": self.path, "status": self.status, "checked_by": self.checked_by,
                "bytes": self.bytes, "bytes_fetched": self.bytes_fetched, "seconds": round(self.seconds, 2),
                "mb_per_s": round(self.mb_per_s, 2), "resumes": self.resumes, "retries": self.retries,
                "restarts": self.restarts, "sha256": self.sha256, "etag": self.etag, "notes": list(self.notes)}


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and "\0" not in name and not name.startswith(".")


def check_url(url: str) -> None:
    """https, or http to this machine only (a local mirror); no credentials in the URL itself."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise DownloadError(f"download URL must be https://host/...: {public_url(url)!r}")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        raise DownloadError(f"download URL must be https (plain http only for 127.0.0.1/localhost): "
                            f"{public_url(url)}")
    if parts.username or parts.password:
        raise DownloadError(f"put credentials in an environment variable (token_env), not in the URL: "
                            f"{public_url(url)}")


def file_name(url: str) -> str:
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    if not name:
        raise DownloadError(f"cannot take a file name from {public_url(url)}; set filename")
    return name


def token_for(url: str, token_env: str = "") -> str | None:
    """The bearer token for url: from `token_env` if named, else HF_TOKEN for Hugging Face URLs; None if unset."""
    if not token_env:
        host = urllib.parse.urlsplit(url).hostname or ""
        if not any(host == h or host.endswith("." + h) for h in HF_HOSTS):
            return None
        token_env = "HF_TOKEN"
    return os.environ.get(token_env) or None


class _Retryable(Exception):
    """A failure that may pass if asked again (5xx, 429, a reset, a timeout, a short body)."""


def _request(method: str, url: str, headers: dict[str, str], token: str | None, timeout: float) -> Response:
    """common.remote.request, its errors as this module's: what may pass is retried, the rest stops."""
    try:
        return request(method, url, headers, token, timeout)
    except RemoteError as exc:
        raise (_Retryable(str(exc)) if exc.retryable else DownloadError(str(exc))) from None


def _http_failure(r: Response, what: str) -> Exception:
    reason = f"http {r.status} {r.resp.reason}: {what} {public_url(r.url)}"
    r.close()
    if r.status >= 500 or r.status == 429:
        return _Retryable(reason)
    if r.status in (401, 403):
        return DownloadError(reason + " (a gated or private source: set the token's environment variable, "
                                      "e.g. HF_TOKEN, or token_env)")
    return DownloadError(reason)


# --- the sidecar --------------------------------------------------------------------------------------------


def sidecar_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.download.json")


def part_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.part")


def read_sidecar(dest: Path) -> dict:
    try:
        with open_regular(sidecar_path(dest)) as fh:
            data = json.loads(fh.read())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # none, or unreadable: decided afresh (a HEAD, or the file's checksum)


def _write_sidecar(dest: Path, record: dict) -> None:
    write_atomic(sidecar_path(dest), (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())


def _regular_stat(path: Path) -> os.stat_result | None:
    """stat of path if it exists; a non-regular file there is an error (never read, never replaced)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise DownloadError(str(NotRegularFile(path, file_kind(st.st_mode))))
    return st


def sha256_of(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    done = 0
    with open_regular(path) as fh:
        while block := fh.read(BLOCK * 8):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, None)
    return digest.hexdigest()


# --- deciding whether to fetch ------------------------------------------------------------------------------


def _head(s: DownloadSettings, token: str | None) -> tuple[str, int | None]:
    """(ETag, size) the server reports now; raises _Retryable/DownloadError."""
    r = _request("HEAD", s.url, {"Accept-Encoding": "identity"}, token, s.timeout_s)
    try:
        if r.status != 200:
            raise _http_failure(r, "HEAD")
        length = r.header("Content-Length")
        return r.header("ETag"), int(length) if length.isdigit() else None
    finally:
        r.close()


def _up_to_date(s: DownloadSettings, token: str | None, report: DownloadReport,
                progress: Progress | None) -> bool:
    """Whether the complete file at s.dest stands; fills report when it does."""
    st = _regular_stat(s.dest)
    if st is None:
        return False
    rec = read_sidecar(s.dest)
    described = (rec.get("complete") and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns
                 and isinstance(rec.get("sha256"), str))
    if s.size and st.st_size != s.size:
        report.notes.append(f"the file has {st.st_size} bytes, expected {s.size}: fetched again")
        return False
    if described and rec.get("url") != public_url(s.url):
        report.notes.append(f"the file came from {rec.get('url')}: fetched from the configured URL")
        return False
    if described and s.sha256:
        if rec["sha256"] == s.sha256:
            report.checked_by, report.sha256, report.etag = "stored checksum", rec["sha256"], rec.get("etag", "")
            return True
        report.notes.append("the stored checksum differs from the expected one: fetched again")
        return False
    if described:
        try:
            etag, size = _head(s, token)
        except (_Retryable, DownloadError) as exc:
            # The file was verified when it arrived; a server that cannot be asked now is no reason to refetch.
            report.checked_by = f"stored record (HEAD failed: {exc})"
            report.sha256, report.etag = rec["sha256"], rec.get("etag", "")
            return True
        if size == st.st_size and (etag == rec.get("etag") or not etag):
            report.checked_by = "HEAD ETag and size" if etag else "HEAD size (no ETag)"
            report.sha256, report.etag = rec["sha256"], etag
            return True
        report.notes.append(f"the server's copy changed (ETag {etag or '-'}, {size} bytes): fetched again")
        return False
    # A file placed by hand (or a sidecar lost): its checksum, or the server's size, decides.
    if s.sha256:
        digest = sha256_of(s.dest, progress)
        if digest != s.sha256:
            report.notes.append("the file there does not have the expected checksum: fetched again")
            return False
        report.checked_by, report.sha256 = "SHA-256 of the file", digest
    else:
        try:
            etag, size = _head(s, token)
        except _Retryable as exc:
            raise DownloadError(f"cannot check {s.dest} against the server: {exc}") from None
        if size != st.st_size:
            report.notes.append(f"the file has {st.st_size} bytes, the server {size}: fetched again")
            return False
        report.checked_by, report.sha256, report.etag = "HEAD size, then SHA-256 of the file", \
            sha256_of(s.dest, progress), etag
    st = os.stat(s.dest)
    _write_sidecar(s.dest, {"complete": True, "url": public_url(s.url), "etag": report.etag, "size": st.st_size,
                            "mtime_ns": st.st_mtime_ns, "sha256": report.sha256})
    return True


# --- fetching -------------------------------------------------------------------------------------------------


def _check_space(s: DownloadSettings, need: int) -> None:
    free = shutil.disk_usage(s.dest_dir).free
    if need + s.reserve_bytes > free:
        raise DownloadError(f"not enough free space for {s.filename}: {need / 1e9:.2f} GB still to download "
                            f"(+{s.reserve_bytes / 1e9:.2f} GB kept free), {free / 1e9:.2f} GB free on {s.dest_dir}")


def _range_start(r: Response) -> int | None:
    """a of a 206's `Content-Range: bytes a-b/total`."""
    spec = r.header("Content-Range").removeprefix("bytes ").partition("-")[0]
    return int(spec) if spec.isdigit() else None


def _total_from(r: Response) -> int | None:
    """The whole body's size from a 200 (Content-Length) or a 206 (Content-Range: bytes a-b/total)."""
    if r.status == 206:
        total = r.header("Content-Range").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = r.header("Content-Length")
    return int(length) if length.isdigit() else None


class _Body:
    """The partial file and the running checksum of what it holds."""

    def __init__(self, part: Path) -> None:
        self.part = part
        self.digest = hashlib.sha256()
        self.size = 0

    def reopen(self, keep: bool) -> None:
        """Start again from zero, or (keep) from what the partial file already holds, re-hashing it."""
        self.digest, self.size = hashlib.sha256(), 0
        if not keep:
            self.part.unlink(missing_ok=True)
            return
        if _regular_stat(self.part) is None:
            return
        with open_regular(self.part) as fh:
            while block := fh.read(BLOCK * 8):
                self.digest.update(block)
                self.size += len(block)


def _range_headers(body: _Body, validator: dict) -> dict[str, str]:
    headers = {"Accept-Encoding": "identity"}
    if body.size:
        headers["Range"] = f"bytes={body.size}-"
        strong = validator.get("etag", "")
        if strong and not strong.startswith("W/"):
            headers["If-Range"] = strong
        elif validator.get("last_modified"):
            headers["If-Range"] = validator["last_modified"]
    return headers


def _changed(validator: dict, r: Response) -> str:
    """Why a 206 is not the rest of the body held (its ETag, Last-Modified or total differs from the stored one,
    as when a server ignores If-Range); "" when it is."""
    for key, name in (("etag", "ETag"), ("last_modified", "Last-Modified")):
        if validator.get(key) and r.header(name) != validator[key]:
            return f"{name} {validator[key]} is now {r.header(name) or 'absent'}"
    if validator.get("total") is not None and _total_from(r) != validator["total"]:
        return f"size {validator['total']} is now {_total_from(r)}"
    return ""


def _restart(body: _Body, validator: dict, report: DownloadReport) -> None:
    report.restarts += 1
    body.reopen(keep=False)
    validator.clear()


def _accept(s: DownloadSettings, r: Response, body: _Body, validator: dict, report: DownloadReport) -> int | None:
    """Check a GET's answer against the body held (restarting it when the answer cannot continue it) and the caps;
    the whole body's size, None when not declared. Raises _Retryable for what may pass."""
    if r.status not in (200, 206):
        raise _http_failure(r, "GET")
    if r.status == 206 and _range_start(r) != body.size:
        _restart(body, validator, report)
        raise _Retryable(f"the server answered a range that does not start at {body.size}: starting again")
    if r.status == 206 and body.size:
        if changed := _changed(validator, r):
            _restart(body, validator, report)
            raise _Retryable(f"{public_url(s.url)} changed under the resume ({changed}): starting again")
        report.resumes += 1
    elif body.size:  # a 200 to a Range request: the server ignores ranges, or the file changed
        _restart(body, validator, report)
    total = _total_from(r)
    validator.update({"etag": r.header("ETag"), "last_modified": r.header("Last-Modified"), "total": total})
    if total is not None and total > s.max_bytes:
        raise DownloadError(f"too large: {public_url(s.url)} has {total} bytes, over the cap "
                            f"max_bytes={s.max_bytes}")
    if total is not None and s.size and total != s.size:
        raise DownloadError(f"size mismatch: {public_url(s.url)} has {total} bytes, expected {s.size}")
    if total is not None:
        _check_space(s, total - body.size)
    return total


def _keep_floor(s: DownloadSettings, body: _Body, n: int) -> None:
    """Stop before n more bytes take the free space below reserve_bytes: checked as bytes arrive, as no declared
    size bounds a body without a Content-Length (and other writers share the disk)."""
    free = shutil.disk_usage(s.dest_dir).free
    if free - n < s.reserve_bytes:
        raise DownloadError(f"free space on {s.dest_dir} would fall below reserve_bytes={s.reserve_bytes} while "
                            f"downloading {s.filename}: {body.size} bytes kept in {body.part.name}; free space and "
                            f"rerun to resume", keep_part=True)


def _receive(s: DownloadSettings, r: Response, body: _Body, total: int | None, report: DownloadReport,
             progress: Progress | None, deadline: Deadline) -> None:
    """Append the response's body to the partial file, within max_bytes, the free-space floor and the deadline."""
    try:
        with open(body.part, "ab") as fh:
            if fh.tell() != body.size:  # someone else wrote to it: start clean rather than guess
                raise DownloadError(f"{body.part} changed during the download; delete it and rerun")
            while block := r.read(BLOCK, s.timeout_s, deadline):
                if body.size + len(block) > s.max_bytes:
                    raise DownloadError(f"too large: {public_url(s.url)} sent over max_bytes={s.max_bytes}")
                _keep_floor(s, body, len(block))
                fh.write(block)
                body.digest.update(block)
                body.size += len(block)
                report.bytes_fetched += len(block)
                if progress:
                    progress(body.size, total)
    except RemoteError as exc:  # a reset or a timeout may pass; the deadline has passed
        if exc.retryable:
            raise _Retryable(str(exc)) from None
        raise DownloadError(f"{exc}; {body.size} bytes kept in {body.part.name}, rerun to resume",
                            keep_part=True) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(f"disk full while downloading {s.filename}: {body.size / 1e9:.2f} GB kept in "
                                f"{body.part.name} to resume; free space on {s.dest_dir} and rerun",
                                keep_part=True) from None
        raise DownloadError(f"cannot write {body.part}: {exc.strerror or exc}") from None


def _fetch_once(s: DownloadSettings, token: str | None, body: _Body, validator: dict, report: DownloadReport,
                progress: Progress | None, deadline: Deadline) -> bool:
    """One GET from body.size on; True when the body is complete. Raises _Retryable for what may pass."""
    r = _request("GET", s.url, _range_headers(body, validator), token, min(s.timeout_s, max(deadline.left(), 1e-3)))
    try:
        if r.status == 416 and body.size:  # nothing after what we hold: complete already, or a stale part
            if _total_from(r) == body.size:
                return True
            _restart(body, validator, report)
            raise _Retryable(f"range not satisfiable at {body.size} bytes: starting again")
        total = _accept(s, r, body, validator, report)
        _write_sidecar(s.dest, {"complete": False, "url": public_url(s.url), **validator})
        _receive(s, r, body, total, report, progress, deadline)
        if total is not None and body.size < total:
            raise _Retryable(f"connection dropped at {body.size} of {total} bytes")
        return True
    finally:
        r.close()


def download(settings: DownloadSettings, progress: Progress | None = None,
             sleep: Callable[[float], None] = time.sleep) -> DownloadReport:
    """Make settings.dest the complete, verified file at settings.url; see the module docstring. Raises
    DownloadError (one line) for anything that stops it."""
    try:
        return _download(settings, progress, sleep)
    except DownloadError:
        raise
    except OSError as exc:  # the sidecar, the rename, a read of the partial file: named, not a traceback
        where = exc.filename or settings.dest_dir
        if exc.errno == errno.ENOSPC:
            raise DownloadError(f"disk full while downloading {settings.filename} ({where}); free space on "
                                f"{settings.dest_dir} and rerun to resume") from None
        raise DownloadError(f"cannot download {settings.filename}: {where}: {exc.strerror or exc}") from None


def _download(settings: DownloadSettings, progress: Progress | None,
              sleep: Callable[[float], None]) -> DownloadReport:
    s = settings
    token = token_for(s.url, s.token_env)
    report = DownloadReport(url=public_url(s.url), path=str(s.dest), status="up to date")
    try:
        s.dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {s.dest_dir}: {exc.strerror or exc}") from None
    started = time.perf_counter()
    try:
        if _up_to_date(s, token, report, progress):
            report.bytes = os.stat(s.dest).st_size
            return report
    except _Retryable as exc:
        raise DownloadError(f"cannot check {s.dest} against the server: {exc}") from None
    report.status = "downloaded"
    body = _Body(part_path(s.dest))
    rec = read_sidecar(s.dest)
    keep = not rec.get("complete") and rec.get("url") == public_url(s.url)
    validator = {k: rec[k] for k in ("etag", "last_modified", "total") if keep and rec.get(k)}
    body.reopen(keep=keep)
    if s.size:
        _check_space(s, s.size - body.size)
    _fetch_all(s, token, body, validator, report, progress, sleep)
    report.sha256 = body.digest.hexdigest()
    report.etag = validator.get("etag", "")
    report.seconds = time.perf_counter() - started
    if s.size and body.size != s.size:
        _discard(s.dest, body.part)
        raise DownloadError(f"size mismatch: {public_url(s.url)} sent {body.size} bytes, expected {s.size}")
    if s.sha256 and report.sha256 != s.sha256:
        _discard(s.dest, body.part)
        raise DownloadError(f"checksum mismatch: {public_url(s.url)} has SHA-256 {report.sha256}, "
                            f"expected {s.sha256}; the download was removed")
    publish(body.part, s.dest)
    st = os.stat(s.dest)
    _write_sidecar(s.dest, {"complete": True, "url": public_url(s.url), "etag": report.etag, "size": st.st_size,
                            "mtime_ns": st.st_mtime_ns, "sha256": report.sha256})
    report.bytes = st.st_size
    report.checked_by = "expected checksum" if s.sha256 else "SHA-256 computed on arrival"
    return report


def _fetch_all(s: DownloadSettings, token: str | None, body: _Body, validator: dict, report: DownloadReport,
               progress: Progress | None, sleep: Callable[[float], None]) -> None:
    """GETs until the body is complete: failures that may pass are retried with backoff while the retries without
    progress last, and all of it within deadline_s. A DownloadError removes the part unless it says to keep it."""
    deadline = Deadline(s.deadline_s)
    retry = Retry(s.retries, s.backoff_s, deadline, sleep)
    while True:
        before = body.size
        try:
            if _fetch_once(s, token, body, validator, report, progress, deadline):
                return
        except _Retryable as exc:
            if not retry.again(progressed=body.size > before):
                why = (f"after {s.retries} retries without progress" if retry.spent
                       else f"the next try would pass deadline_s={s.deadline_s:g} s")
                raise DownloadError(f"{exc} ({why}; {body.size} bytes kept in {body.part.name}, rerun to resume)",
                                    keep_part=True) from None
            report.retries += 1
        except DownloadError as exc:
            if not exc.keep_part:
                _discard(s.dest, body.part)
            raise


def _discard(dest: Path, part: Path) -> None:
    """Remove a partial body that must not be resumed, and the sidecar that describes it (not a complete file's)."""
    part.unlink(missing_ok=True)
    if not read_sidecar(dest).get("complete"):
        sidecar_path(dest).unlink(missing_ok=True)


# --- the raw drops --------------------------------------------------------------------------------------------

DATASETS = ("ava", "sac", "kuler")
# The public copy `aesthetic download ava` fetches when no URL is given (the "where people get it").
DEFAULT_URLS = {"ava": "https://huggingface.co/datasets/Iceclear/AVA/resolve/main/AVA_dataset.zip"}


def check_drop_name(dataset: str, name: str) -> None:
    """A downloaded file must be one its stage reads where it lands (docs/contract.md, "Raw layouts"): SAC's own
    `sac/*.sqlite` or tarball (never the inbox), Kuler's .mat files by their release names; AVA's archive or
    text files under any name."""
    if dataset not in DATASETS:
        raise DownloadError(f"unknown dataset {dataset!r}: one of {', '.join(DATASETS)}")
    if dataset == "sac":
        from ingest.sac import TAR_SUFFIXES

        if not name.endswith((".sqlite", *TAR_SUFFIXES)):
            raise DownloadError(f"SAC download {name!r} is neither the .sqlite database nor the tarball "
                                f"({', '.join(TAR_SUFFIXES)}): set filename")
    if dataset == "kuler":
        from ingest.kuler import FILES_2011, FILES_2014

        if name not in FILES_2014 + FILES_2011:
            raise DownloadError(f"Kuler download {name!r} must be named one of {', '.join(FILES_2014 + FILES_2011)}"
                                f" (set filename)")


@dataclass(frozen=True)
class DropFile:
    """One file of a drop: its URL and what is known of it (empty or 0: not checked, or the URL's name); the
    fields are DownloadSettings' own."""

    url: str = setting(MISSING, help_of(DownloadSettings, "url"))
    filename: str = setting(DownloadSettings.filename, help_of(DownloadSettings, "filename"))
    sha256: str = setting(DownloadSettings.sha256, help_of(DownloadSettings, "sha256"))
    size: int = bounded_like(DownloadSettings, "size", help_of(DownloadSettings, "size"))


# The options download_drop hands to every file's DownloadSettings: its fields but the file's own and where it goes.
DROP_OPTIONS = tuple(f.name for f in fields(DownloadSettings) if f.name not in {*DropFile.__dataclass_fields__,
                                                                                   "dest_dir"})


@dataclass
class DropDownload:
    settings: DownloadSettings
    report: DownloadReport
    placed: list[str]  # AVA's ratings and lists copied out of a zip into the drop
    kept: list[str]  # the same, already in the drop and left as they were


Watch = Callable[[DownloadSettings], AbstractContextManager[Progress | None]]


@contextmanager
def _unwatched(_: DownloadSettings) -> Iterator[Progress | None]:
    yield None


def download_drop(dataset: str, files: Sequence[DropFile], raw_dir: Path, watch: Watch = _unwatched,
                  **options: Any) -> Iterator[DropDownload]:
    """Download a dataset's files into raw_dir/<dataset>/, one after another, each named as its stage reads it
    (check_drop_name); AVA's texts are placed out of a downloaded zip. options go to DownloadSettings (max_bytes,
    token_env, retries, timeout_s, deadline_s); watch(settings) is entered around each download and gives its
    progress callback. Yields each file's outcome as it completes; raises DownloadError or ArchiveError."""
    from ingest.archives import place_ava_texts

    for f in files:
        settings = DownloadSettings(url=f.url, dest_dir=Path(raw_dir) / dataset, filename=f.filename,
                                    sha256=f.sha256, size=f.size, **options)
        check_drop_name(dataset, settings.filename)
        with watch(settings) as progress:
            report = download(settings, progress)
        placed: tuple[list[str], list[str]] = ([], [])
        if dataset == "ava" and settings.filename.lower().endswith(".zip"):
            placed = place_ava_texts(settings.dest, settings.dest_dir)
        yield DropDownload(settings, report, *placed)
