"""Real HTTP servers on 127.0.0.1 for tests: started in a thread, always shut down and closed."""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import BaseServer
from typing import TypeVar

S = TypeVar("S", bound=BaseServer)


@contextmanager
def serving(server: S) -> Iterator[S]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def quiet_file_server(directory: Path) -> ThreadingHTTPServer:
    """A static file server for `directory` on a free loopback port, without per-request log lines."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    return server


class RangeServer(ThreadingHTTPServer):
    """Files from memory on a free loopback port, as a CDN serves large downloads: HEAD, GET with Range and
    If-Range (206 with Content-Range, 416 past the end), a strong ETag per file; and the faults a long
    download meets, as a plan per path for its next GETs: an int n stops after n body bytes and closes the
    connection, 503 answers 503, None serves normally; `redirects` answer 302 to a URL. Every request is
    recorded as (method, path, headers) in `requests`."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.files = dict(files)
        self.plan: dict[str, list[int | None]] = {}
        self.redirects: dict[str, str] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def etag(self, path: str) -> str:
        return '"' + hashlib.sha256(self.files[path]).hexdigest()[:16] + '"'

    def gets(self, path: str) -> list[dict[str, str]]:
        """The headers of every GET of path so far."""
        with self.lock:
            return [h for m, p, h in self.requests if m == "GET" and p == path]


class _RangeHandler(SimpleHTTPRequestHandler):
    server: RangeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
        self._answer(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        srv = self.server
        path = self.path.split("?", 1)[0]
        with srv.lock:
            srv.requests.append(("HEAD" if head else "GET", path, dict(self.headers.items())))
            step = srv.plan[path].pop(0) if not head and srv.plan.get(path) else None
        fail, drop = step == 503, step if step != 503 else None
        if path in srv.redirects:
            self.send_response(302)
            self.send_header("Location", srv.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fail:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = srv.files.get(path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag, start = srv.etag(path), 0
        wanted = self.headers.get("Range", "")
        if_range = self.headers.get("If-Range")
        if wanted.startswith("bytes=") and not srv.ignore_range and (if_range is None or if_range == etag):
            start = int(wanted[6:].split("-", 1)[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if head:
            return
        payload = body[start:] if drop is None else body[start : start + drop]
        self.wfile.write(payload)
        if drop is not None:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # mid-body: the client sees the connection end before Content-Length
