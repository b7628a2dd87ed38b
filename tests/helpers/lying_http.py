"""HTTP servers on 127.0.0.1 that misbehave, for the bounds on remote input: a body with no end and no length, a body
that trickles, a stall after the headers, and range servers whose file changes under a resume. Start and stop them
with tests.helpers.http.serving."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.helpers.http import RangeServer, _RangeHandler

Route = Callable[[BaseHTTPRequestHandler], None]


class ScriptedServer(ThreadingHTTPServer):
    """Each GET of a path in `routes` runs that route with the request's handler; anything else is a 404.
    `sent[path]` counts the body bytes each route wrote (what reached the socket)."""

    daemon_threads = True

    def __init__(self, routes: dict[str, Route]) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.routes = routes
        self.sent: dict[str, int] = {}
        self.release = threading.Event()  # ends every stall(): set by the test, and by stop()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, path: str, n: int) -> None:
        with self.lock:
            self.sent[path] = self.sent.get(path, 0) + n

    def server_close(self) -> None:
        self.release.set()
        super().server_close()


class _ScriptedHandler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what a bounded reader does


def endless(chunk: bytes = b"\0" * 65536, upto: int = 256 * 2**20, content_type: str = "application/json") -> Route:
    """200 with no Content-Length (the body ends when the connection closes), then `chunk` again and again. `upto`
    is far beyond any cap a test sets; it exists only so that a reader without a cap ends, rather than hangs."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Connection", "close")
        h.end_headers()
        sent = 0
        while sent < upto:
            h.wfile.write(chunk)
            sent += len(chunk)
            h.server.count(h.path, len(chunk))

    return route


def trickle(body: bytes, every_s: float, declare: bool = True) -> Route:
    """200 (with Content-Length unless declare=False), then one byte of body every `every_s` seconds."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        if declare:
            h.send_header("Content-Length", str(len(body)))
        h.send_header("Connection", "close")
        h.end_headers()
        for i in range(len(body)):
            h.wfile.write(body[i : i + 1])
            h.wfile.flush()
            h.server.count(h.path, 1)
            time.sleep(every_s)

    return route


def stall(head: bytes = b"", declared: int = 1 << 20) -> Route:
    """200 declaring `declared` bytes, `head` of them, then nothing until the server's `release` is set."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(declared))
        h.end_headers()
        h.wfile.write(head)
        h.wfile.flush()
        h.server.release.wait(30)

    return route


class IfRangeIgnoringServer(RangeServer):
    """A RangeServer that honours Range but ignores If-Range (as some CDNs and proxies do): after the file changes,
    a resume gets a 206 of the new version. fixed_etag: every version is sent with this one ETag, so only the size
    (Content-Range's total) shows the change."""

    def __init__(self, files: dict[str, bytes], fixed_etag: str = "") -> None:
        super().__init__(files)
        self.RequestHandlerClass = _IfRangeIgnoringHandler
        self.fixed_etag = fixed_etag

    def etag(self, path: str) -> str:
        return self.fixed_etag or super().etag(path)


class _IfRangeIgnoringHandler(_RangeHandler):
    server: IfRangeIgnoringServer

    def _answer(self, head: bool) -> None:
        del self.headers["If-Range"]
        super()._answer(head)
