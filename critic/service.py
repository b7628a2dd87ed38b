"""HTTP scoring service: the critic loaded once, behind the standard library's ThreadingHTTPServer.

    POST /score   one image as the raw body (any Content-Type but multipart), or several
                  as multipart/form-data (one file per part) -> 200 JSON
                  {"model": ..., "results": [{"name", "mean", "std", "histogram"}]}
    GET  /healthz -> 200 {"status": "ok", "model": ..., "limits": {...}}

Bad input is answered with a 4xx and {"error": kind, "message": ...}: 411 no
Content-Length, 413 body over `max_bytes` (the body is not read), 413 more than
`max_images` parts, 413 a decompression bomb (more than `max_pixels`), 400 not an
image / corrupt / empty, 404 unknown path. Anything else that fails (the model, a decoder bug) is logged
and answered 500 {"error": "internal", "detail": ...}; the server and, when the
request body was read, the connection stay usable. Handler threads decode in parallel;
one scoring thread runs the critic on whatever images are waiting, so concurrent
requests share a forward pass instead of queueing for one each.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from critic.scoring import Critic, Score, UnreadableImage, decode_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20 * 1024 * 1024
    max_images: int = 32
    max_pixels: int = 40_000_000


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


_PARAM = re.compile(rb';\s*([\w*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')


def _params(header_value: bytes) -> dict[str, str]:
    return {m.group(1).decode().lower(): (m.group(2) if m.group(2) is not None else m.group(3)).decode(
        "utf-8", "replace") for m in _PARAM.finditer(header_value)}


def split_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of each part of a multipart/form-data body; exact bytes, no re-encoding."""
    boundary = _params(content_type.encode("latin-1")).get("boundary")
    if not boundary:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "bad multipart", "multipart body without a boundary parameter")
    delimiter = b"--" + boundary.encode("latin-1")
    sections = body.split(delimiter)
    if len(sections) < 3 or not sections[-1].startswith(b"--"):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "bad multipart", "multipart body is not closed by its boundary")
    parts = []
    for i, section in enumerate(sections[1:-1]):
        if section.startswith(b"\r\n"):
            section = section[2:]
        head, sep, data = section.partition(b"\r\n\r\n")
        if not sep:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "bad multipart", f"part {i} has no header/body separator")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        name = f"part{i}"
        for line in head.split(b"\r\n"):
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"content-disposition":
                params = _params(value)
                name = params.get("filename") or params.get("name") or name
        parts.append((name, data))
    return parts


class MicroBatcher:
    """Runs the critic on one thread; each forward takes every request waiting (up to max_batch images).

    It never waits for more work: under no load a request goes alone, and under load
    requests that arrive during a forward share the next one.
    """

    def __init__(self, critic: Critic, max_batch: int = 32) -> None:
        self.critic, self.max_batch = critic, max_batch
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="critic-batcher", daemon=True)
        self._thread.start()

    def score(self, images: list) -> list[Score]:
        done: Future = Future()
        self._queue.put((images, done))
        return done.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            jobs, n, stop = [job], len(job[0]), False
            while n < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.append(more)
                n += len(more[0])
            try:
                scores = self.critic.score_images([img for images, _ in jobs for img in images]).scores()
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request, which re-raises it
                for _, done in jobs:
                    done.set_exception(exc)
            else:
                for images, done in jobs:
                    done.set_result(scores[: len(images)])
                    scores = scores[len(images):]
            if stop:
                return


class ScoringServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], critic: Critic, limits: Limits) -> None:
        self.critic, self.limits = critic, limits
        self.batcher = MicroBatcher(critic, max_batch=max(critic.batch_size, limits.max_images))
        super().__init__(address, ScoringHandler)

    def server_close(self) -> None:
        super().server_close()
        self.batcher.close()

    def score(self, parts: list[tuple[str, bytes]]) -> dict:
        if not parts:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "no images", "the request holds no image")
        if len(parts) > self.limits.max_images:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too many images",
                             f"{len(parts)} images in one request, limit {self.limits.max_images}")
        images = []
        for name, data in parts:
            try:
                images.append(decode_image(data, name, self.limits.max_pixels))
            except UnreadableImage as exc:
                status = (HTTPStatus.REQUEST_ENTITY_TOO_LARGE if exc.kind == "decompression bomb"
                          else HTTPStatus.BAD_REQUEST)
                raise BadRequest(status, exc.kind, f"{name}: {exc}") from exc
        scores = self.batcher.score(images)
        return {"model": self.critic.version,
                "results": [{"name": name, **s.as_dict()} for (name, _), s in zip(parts, scores, strict=True)]}


class ScoringHandler(BaseHTTPRequestHandler):
    server: ScoringServer
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    timeout = 30  # seconds a client may stall mid-request before its thread gives up
    server_version = "aesthetic-critic/1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        pass  # one line per request to stderr drowns the terminal under load; errors still go out as JSON

    def _send(self, status: HTTPStatus, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self._responded = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, exc: BadRequest) -> None:
        self._send(exc.status, {"error": exc.kind, "message": exc.message})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.split("?")[0] != "/healthz":
            self._error(BadRequest(HTTPStatus.NOT_FOUND, "not found", f"no route GET {self.path}"))
            return
        critic = self.server.critic
        self._send(HTTPStatus.OK, {"status": "ok", "model": critic.version, "limits": asdict(self.server.limits),
                                   "input": {"image_size": critic.image_size, "resize": critic.resize}})

    def do_POST(self) -> None:  # noqa: N802
        self._responded, self._body_read = False, False
        try:
            if self.path.split("?")[0] != "/score":
                raise BadRequest(HTTPStatus.NOT_FOUND, "not found", f"no route POST {self.path}")
            body = self._read_body()
            content_type = self.headers.get("Content-Type", "")
            if content_type.lower().startswith("multipart/"):
                parts = split_multipart(body, content_type)
            else:
                parts = [("body", body)] if body else []
            self._send(HTTPStatus.OK, self.server.score(parts))
        except BadRequest as exc:
            if not self._body_read:  # e.g. a 404 before reading: the unread body must not pose as a request
                self.close_connection = True
            self._error(exc)
        except Exception as exc:  # noqa: BLE001 - any fault gets an answer; the traceback goes to the log
            self._internal_error(exc)

    def _internal_error(self, exc: Exception) -> None:
        log.exception("POST %s failed", self.path)
        # An unread body would be parsed as the next request, and a half-sent response cannot be amended.
        if not self._body_read or self._responded:
            self.close_connection = True
        if self._responded:
            return
        try:
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR,
                       {"error": "internal", "detail": f"{type(exc).__name__}: {exc}"})
        except OSError:  # the client went away; nothing left to tell it
            self.close_connection = True

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "length required", "send a Content-Length header")
        try:
            n = int(length)
            if n < 0:
                raise ValueError(n)
        except ValueError:
            self.close_connection = True
            raise BadRequest(HTTPStatus.BAD_REQUEST, "bad length", f"Content-Length {length!r}") from None
        if n > self.server.limits.max_bytes:
            # The body stays unread, so the connection cannot be reused.
            self.close_connection = True
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too large",
                             f"body of {n} bytes, limit {self.server.limits.max_bytes}")
        body = self.rfile.read(n)
        self._body_read = len(body) == n
        return body


def make_server(
    critic: Critic, host: str = "127.0.0.1", port: int = 8080, limits: Limits | None = None
) -> ScoringServer:
    """A bound server (port 0 picks a free one: see server.server_address); call serve_forever()."""
    return ScoringServer((host, port), critic, limits or Limits())
