"""HTTP(S) input within bounds: the one client of the downloader (ingest/download.py), the per-image fetcher
(ingest/fetch.py) and the shard reader.

`request` sends one request and follows redirects by hand: a token goes only to the first URL's origin, and https
never redirects to plain http. A `Response` reads its body one receive at a time, waiting at most `timeout_s` for
any byte and never past a `Deadline`. On top of that, what a reader of shards needs: `open_stream` (a shard body
as a stream, at most `max_stream_bytes`) and `read_capped` (a whole small body such as an index.json, refused
past its cap, before it is held). The bounds are `ReadLimits`, settings with defaults, never what the input
declares. `Retry` is the one retry policy: jittered exponential backoff for failures that may pass, within a
number of retries and the caller's deadline.
"""

from __future__ import annotations

import http.client
import random
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

MAX_REDIRECTS = 10
CHUNK = 1 << 20  # the most one read asks for when the caller does not need more
FETCH = 256 * 1024  # the most a stream asks of the network at once


class RemoteError(OSError):
    """Remote input that cannot be read; str() is one line naming the URL. retryable: it may pass if asked again
    (a network failure, a timeout, 5xx, 429)."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self):  # through DataLoader workers and process pools with its flag
        return type(self), (self.args[0], self.retryable)


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on shards and indexes read from http(s) (and `pipe:`) URLs; docs/shards.md, "Remote input"."""

    timeout_s: float = 60.0  # the longest wait for any byte: connecting, the headers, each read
    deadline_s: float = 3600.0  # one shard stream or one index, from the request to its last byte
    max_member_bytes: int = 64 * 2**20  # a tar member held in memory; a larger one is skipped with its reason
    max_index_bytes: int = 16 * 2**20  # an index.json fetched over http(s)
    max_stream_bytes: int = 16 * 2**30  # one shard read as a stream

    def __post_init__(self) -> None:
        if min(self.timeout_s, self.deadline_s) <= 0 or min(self.max_member_bytes, self.max_index_bytes,
                                                              self.max_stream_bytes) < 1:
            raise ValueError(f"bad read limits: {self}")


class Deadline:
    """A point in time `seconds` from now, by the monotonic clock."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def error(self, what: str) -> RemoteError:
        return RemoteError(f"{what}: not done after deadline_s={self.seconds:g} s")


class Retry:
    """When to try again after a failure that may pass (RemoteError.retryable): after a wait of backoff_s, twice
    as long each time (times 0.5..1.5 of jitter), at most `retries` times in a row without progress, and never when
    the wait would pass the deadline. Progress (bytes received) resets the count and the wait, and the next try
    starts at once."""

    def __init__(self, retries: int, backoff_s: float, deadline: Deadline,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.retries, self.backoff_s, self.deadline, self.sleep = retries, backoff_s, deadline, sleep
        self.delay = backoff_s
        self.failures = 0  # in a row, without progress
        self.tries = 1  # requests made so far

    def again(self, progressed: bool = False) -> bool:
        """After a failure: True once the wait before the next try is over, False when there is to be none
        (`spent` says whether the retries ran out; otherwise the deadline is too near)."""
        self.failures = 0 if progressed else self.failures + 1
        wait = 0.0 if progressed else self.delay * (0.5 + random.random())
        if self.spent or wait >= self.deadline.left():
            return False
        if wait:
            self.sleep(wait)
            self.delay *= 2
        else:
            self.delay = self.backoff_s
        self.tries += 1
        return True

    @property
    def spent(self) -> bool:
        return self.failures > self.retries


def public_url(url: str) -> str:
    """The URL without user info, query or fragment: what may be shown and stored."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def is_remote(ref: str) -> bool:
    """Fetched over the network: http(s) only."""
    return urllib.parse.urlsplit(ref).scheme.lower() in ("http", "https")


def _origin(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


class Response:
    """An open response: its status, headers, the URL it came from, and the connection to close."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, url: str,
                 sock: socket.socket | None) -> None:
        self.conn, self.resp, self.url, self.sock = conn, resp, url, sock
        self.status = resp.status
        self.wait: float | None = None  # the socket's timeout as last set

    def header(self, name: str) -> str:
        return (self.resp.getheader(name) or "").strip()

    def read(self, n: int, timeout_s: float, deadline: Deadline) -> bytes:
        """Up to n body bytes, as soon as any arrive (one receive); b"" at the end of the body. RemoteError when
        nothing comes for timeout_s or the connection fails (retryable), or once the deadline has passed (not)."""
        left = deadline.left()
        if left <= 0:
            raise deadline.error(f"reading {public_url(self.url)}")
        wait = min(timeout_s, left)
        if self.sock is not None and wait != self.wait:  # the body's socket, also after http.client let go of it
            self.sock.settimeout(wait)  # a system call: made only while the deadline is nearer than timeout_s
            self.wait = wait
        try:
            return self.resp.read1(n)
        except TimeoutError:
            if deadline.left() <= 0:
                raise deadline.error(f"reading {public_url(self.url)}") from None
            raise RemoteError(f"network: {public_url(self.url)}: no data for timeout_s={timeout_s:g} s",
                              retryable=True) from None
        except (OSError, http.client.HTTPException) as exc:  # a reset, a chunked body cut short
            raise RemoteError(f"network: {public_url(self.url)}: {type(exc).__name__}: {exc}",
                              retryable=True) from None

    def failure(self, what: str) -> RemoteError:
        """The error for a status the caller cannot use; closes the response."""
        self.close()
        return RemoteError(f"http {self.status} {self.resp.reason}: {what} {public_url(self.url)}",
                           retryable=self.status >= 500 or self.status == 429)

    def close(self) -> None:
        self.resp.close()
        self.conn.close()
        if self.sock is not None:
            self.sock.close()


def _connect(url: str, timeout: float) -> http.client.HTTPConnection:
    scheme, host, port = _origin(url)
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
    return http.client.HTTPConnection(host, port, timeout=timeout)


def request(method: str, url: str, headers: dict[str, str], token: str | None, timeout: float) -> Response:
    """method on url, following redirects by hand: the token goes only to the first URL's origin, and a
    redirect from https to http is refused. RemoteError (retryable for network failures) otherwise."""
    if not is_remote(url):
        raise RemoteError(f"not an http(s) URL: {public_url(url)}")
    first, left = _origin(url), False
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        left = left or _origin(url) != first  # once away from the first host, never again a token
        conn = _connect(url, timeout)
        sent = dict(headers)
        if token and not left:
            sent["Authorization"] = f"Bearer {token}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request(method, target, headers=sent)
            sock = conn.sock
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise RemoteError(f"network: {public_url(url)}: {type(exc).__name__}: {exc}", retryable=True) from None
        if resp.status not in (301, 302, 303, 307, 308):
            return Response(conn, resp, url, sock)
        location = resp.getheader("Location") or ""
        conn.close()
        if not location:
            raise RemoteError(f"http {resp.status} without a Location from {public_url(url)}")
        nxt = urllib.parse.urljoin(url, location)
        if not is_remote(nxt):
            raise RemoteError(f"redirect from {public_url(url)} to a non-HTTP URL refused")
        if parts.scheme == "https" and urllib.parse.urlsplit(nxt).scheme != "https":
            raise RemoteError(f"redirect from https to plain http refused: {public_url(nxt)}")
        url = nxt
    raise RemoteError(f"more than {MAX_REDIRECTS} redirects from {public_url(url)}")


def _get(url: str, limits: ReadLimits, deadline: Deadline) -> Response:
    r = request("GET", url, {"Accept-Encoding": "identity"}, None, min(limits.timeout_s, max(deadline.left(), 0.001)))
    if r.status != 200:
        raise r.failure("GET")
    return r


def read_capped(url: str, limits: ReadLimits, cap: int, cap_name: str) -> bytes:
    """The whole body at url, refused (RemoteError, one line naming the cap) when it declares or sends more than
    cap bytes: never more than cap + 1 bytes are asked for."""
    deadline = Deadline(limits.deadline_s)
    r = _get(url, limits, deadline)
    try:
        declared = r.header("Content-Length")
        if declared.isdigit() and int(declared) > cap:
            raise RemoteError(f"{public_url(url)} declares {declared} bytes, over the cap {cap_name}={cap}")
        parts, got = [], 0
        while block := r.read(min(CHUNK, cap + 1 - got), limits.timeout_s, deadline):
            got += len(block)
            if got > cap:
                raise RemoteError(f"{public_url(url)} sent more than the cap {cap_name}={cap} bytes")
            parts.append(block)
        if declared.isdigit() and got < int(declared):
            raise RemoteError(f"network: {public_url(url)} ended after {got} of {declared} bytes", retryable=True)
        return b"".join(parts)
    finally:
        r.close()


class BoundedStream:
    """A body read as a stream within limits: read(n) returns at most n bytes (fewer as they arrive; b"" at the
    end) and raises RemoteError past max_stream_bytes, past the deadline, or when no byte comes for timeout_s.
    Bytes are fetched FETCH at a time at most (one receive each) and handed out from that block, so a reader of many
    small members makes few system calls and nothing larger than FETCH is held beyond what the caller asks for."""

    def __init__(self, url: str, limits: ReadLimits, response: Response | None = None, raw: BinaryIO | None = None,
                 deadline: Deadline | None = None) -> None:
        self.url, self.limits, self.response, self.raw = url, limits, response, raw
        self.shown = public_url(url) if is_remote(url) else url
        self.deadline = deadline or Deadline(limits.deadline_s)
        self.got = 0  # bytes fetched
        self.block, self.pos = b"", 0

    def read(self, n: int = -1) -> bytes:
        if self.pos >= len(self.block):
            self.block, self.pos = self._fetch(), 0
        n = CHUNK if n < 0 else n
        if self.pos == 0 and n >= len(self.block):
            self.pos = len(self.block)
            return self.block
        out = self.block[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def _fetch(self) -> bytes:
        want = min(FETCH, self.limits.max_stream_bytes + 1 - self.got)
        if self.response is not None:
            block = self.response.read(want, self.limits.timeout_s, self.deadline)
        else:  # a pipe: the operator's own command, which has no read timeout; the deadline is checked per read
            if self.deadline.left() <= 0:
                raise self.deadline.error(f"reading {self.shown}")
            block = self.raw.read(want)
        self.got += len(block)
        if self.got > self.limits.max_stream_bytes:
            raise RemoteError(f"{self.shown} sent more than the cap "
                              f"max_stream_bytes={self.limits.max_stream_bytes}")
        return block

    def close(self) -> None:
        if self.response is not None:
            self.response.close()
        if self.raw is not None:
            self.raw.close()


def open_stream(url: str, limits: ReadLimits) -> BoundedStream:
    """The body of an http(s) URL as a BoundedStream; RemoteError for a status other than 200."""
    deadline = Deadline(limits.deadline_s)
    return BoundedStream(url, limits, response=_get(url, limits, deadline), deadline=deadline)
