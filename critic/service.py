"""HTTP scoring service: the critic loaded once, behind uvicorn (h11) and Starlette.

    POST /score        one image as the raw body (any Content-Type but multipart), or several
                       as multipart/form-data (one file per part) -> 200 JSON
                       {"model": ..., "results": [{"name", **Score.as_dict()}]}
    GET  /healthz      -> 200 {"status": "ok", "model": ..., "limits": {...}, "input": {...}}
    GET  /openapi.json -> the OpenAPI description of these routes

Hostile clients are bounded at three levels (defaults in Limits):
- connections (uvicorn + _GuardedH11): at most max_connections open (more get uvicorn's 503), a request head
  of at most 16 KiB that must arrive within the deadline (JSON 408 after it), idle connections closed after 5 s;
- requests (ScoringApp.score): one total deadline from the request's first byte to its answer (JSON 408);
  Content-Length is checked before the body is read, so a body over max_bytes gets its 413 before any
  `100 Continue`; a body that ends short of its Content-Length gets 400;
- work: at most max_in_flight requests decode or score at once (JSON 503 + Retry-After beyond), decoding runs
  on a pool of decode_workers threads, and a request's total decoded pixels (read from the image headers before
  any decoding; a JPEG counts at its draft size) must stay within max_request_pixels (JSON 413).

Every answer the application gives is JSON {"error": kind, "message": ...}; an unexpected failure (the model,
a decoder bug) is logged with its traceback and answered 500 {"error": "internal", "detail": ...}. One scoring
thread runs the critic on whatever images are waiting, so concurrent requests share a forward pass.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import queue
import re
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from http import HTTPStatus
from typing import Any

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from critic.scoring import Critic, Score, UnreadableImage, decode_image, probe_image
from critic.settings import SERVE_HOST, SERVE_PORT

log = logging.getLogger(__name__)

HEAD_MAX_BYTES = 16 * 1024  # request line + headers; h11 refuses more (answered 431)
KEEP_ALIVE_S = 5  # an idle connection (before its first byte, or between requests) is closed after this
BACKLOG = 128  # connections the kernel queues before the server accepts them
RETRY_AFTER_S = 1
HEAD_STARTED = "aesthetic.head_started"  # scope extension: loop time of the request's first byte


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20 * 1024 * 1024  # request body
    max_images: int = 32  # images in one request
    max_pixels: int = 40_000_000  # pixels of one image, from its header
    max_request_pixels: int = 80_000_000  # pixels decoded for one request, its images together
    deadline_s: float = 30.0  # from a request's first byte to its answer
    max_in_flight: int = 16  # requests decoding or scoring at once
    decode_workers: int = 2  # threads decoding images
    max_connections: int = 64  # open connections (uvicorn's limit_concurrency)

    def __post_init__(self) -> None:
        for f in fields(self):
            if not getattr(self, f.name) > 0:
                raise ValueError(f"{f.name} must be positive, got {getattr(self, f.name)}")


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}

    def response(self, close: bool) -> JSONResponse:
        return json_response(self.status, {"error": self.kind, "message": self.message}, close, self.headers)


def json_response(status: int, payload: dict, close: bool = False,
                  headers: dict[str, str] | None = None) -> JSONResponse:
    """close: an answer given before the request body was read must end the connection (the body is not drained)."""
    return JSONResponse(payload, status_code=int(status), headers={**(headers or {}), **({"Connection": "close"}
                                                                                          if close else {})})


def _raw_json(status: HTTPStatus, kind: str, message: str) -> bytes:
    """A whole JSON response for the protocol to write just before closing, when no request reached the app."""
    body = json.dumps({"error": kind, "message": message}).encode()
    return (f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode("latin-1") + body


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
    requests that arrive during a forward share the next one. A request cancelled while
    it waited (its deadline passed) is left out of the forward.
    """

    def __init__(self, critic: Critic, max_batch: int = 32) -> None:
        self.critic, self.max_batch = critic, max_batch
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="critic-batcher", daemon=True)
        self._thread.start()

    def submit(self, images: list) -> Future:
        """A future of the images' scores, in order."""
        done: Future = Future()
        self._queue.put((images, done))
        return done

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
            jobs = [(images, done) for images, done in jobs if done.set_running_or_notify_cancel()]
            try:
                if jobs:
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


def _unreadable(name: str, exc: UnreadableImage) -> BadRequest:
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE if exc.kind == "decompression bomb" else HTTPStatus.BAD_REQUEST
    return BadRequest(status, exc.kind, f"{name}: {exc}")


async def read_body(request: Request, length: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    if len(body) != length:  # h11 frames by Content-Length, so only a half-closed connection ends early
        raise BadRequest(HTTPStatus.BAD_REQUEST, "short body",
                         f"the body ended after {len(body)} of the {length} bytes its Content-Length announced")
    return bytes(body)


async def refused_large_head(scope, receive, send) -> bool:
    """Answer 431 (and True) for a request head over HEAD_MAX_BYTES. h11 bounds a head that arrives in pieces;
    one that arrives whole in a single read is measured here."""
    if scope["type"] == "http" and len(scope["raw_path"]) + len(scope["query_string"]) + sum(
            len(k) + len(v) + 4 for k, v in scope["headers"]) > HEAD_MAX_BYTES:
        answer = json_response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, {
            "error": "head too large", "message": f"request line and headers over {HEAD_MAX_BYTES} bytes"}, True)
        await answer(scope, receive, send)
        return True
    return False


def declared_length(request: Request, max_bytes: int) -> int:
    """The body's Content-Length, checked against max_bytes before a byte of the body is read."""
    value = request.headers.get("content-length")
    if value is None or "transfer-encoding" in request.headers:  # the size must be known before reading
        raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "length required",
                         "send a Content-Length header and no Transfer-Encoding")
    try:
        n = int(value)
        if n < 0:
            raise ValueError(n)
    except ValueError:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "bad length", f"Content-Length {value!r}") from None
    if n > max_bytes:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too large", f"body of {n} bytes, limit {max_bytes}")
    return n


def check_capacity(in_flight: int, limits: Limits) -> None:
    if in_flight >= limits.max_in_flight:
        raise BadRequest(HTTPStatus.SERVICE_UNAVAILABLE, "busy",
                         f"{in_flight} requests are being worked on, limit {limits.max_in_flight}; "
                         "retry shortly", {"Retry-After": str(RETRY_AFTER_S)})


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == HTTPStatus.NOT_FOUND:
        kind, message = "not found", f"no route {request.method} {request.url.path}"
    elif exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        kind = "method not allowed"
        message = f"{request.method} {request.url.path} not allowed; use {(exc.headers or {}).get('Allow')}"
    else:
        kind, message = HTTPStatus(exc.status_code).phrase.lower(), str(exc.detail)
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    return json_response(exc.status_code, {"error": kind, "message": message}, has_body, exc.headers)


async def _crash(request: Request, exc: Exception) -> JSONResponse:
    return json_response(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal",
                                                    "detail": f"{type(exc).__name__}: {exc}"}, True)


# Starlette's exception handlers of every app on this stack: every answer is JSON.
EXCEPTION_HANDLERS = {HTTPException: _http_error, Exception: _crash}


class ScoringApp:
    """The ASGI app: Starlette routes over the critic, a micro-batcher, a decode pool and an in-flight count."""

    def __init__(self, critic: Critic, limits: Limits) -> None:
        self.critic, self.limits = critic, limits
        self.batcher = MicroBatcher(critic, max_batch=max(critic.batch_size, limits.max_images))
        self.pool = ThreadPoolExecutor(limits.decode_workers, thread_name_prefix="critic-decode")
        self.in_flight = 0  # read and written on the event loop's thread only
        self.routes = Starlette(
            routes=[Route("/score", self.score, methods=["POST"]), Route("/healthz", self.healthz, methods=["GET"]),
                    Route("/openapi.json", self.openapi, methods=["GET"])],
            exception_handlers=EXCEPTION_HANDLERS)

    async def __call__(self, scope, receive, send) -> None:
        if not await refused_large_head(scope, receive, send):
            await self.routes(scope, receive, send)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.batcher.close()

    async def healthz(self, request: Request) -> JSONResponse:
        critic = self.critic
        calibration = critic.calibration.describe() if critic.calibration else None
        return json_response(HTTPStatus.OK, {"status": "ok", "model": critic.version, "calibration": calibration,
                                     "limits": asdict(self.limits),
                                     "input": {"image_size": critic.image_size, "resize": critic.resize}})

    async def openapi(self, request: Request) -> JSONResponse:
        return json_response(HTTPStatus.OK, openapi_schema(self.limits))

    async def score(self, request: Request) -> JSONResponse:
        loop = asyncio.get_running_loop()
        started = request.scope.get("extensions", {}).get(HEAD_STARTED) or loop.time()
        window = asyncio.timeout_at(started + self.limits.deadline_s)
        body: bytes | None = None
        try:
            # Everything decidable from the headers is answered before the first receive(), which is what
            # makes uvicorn send `100 Continue`.
            length = declared_length(request, self.limits.max_bytes)
            check_capacity(self.in_flight, self.limits)
            try:
                async with window:
                    body = await read_body(request, length)
                    check_capacity(self.in_flight, self.limits)  # again: slots may have filled during the body
                    self.in_flight += 1
                    try:
                        payload = await self._score(body, request.headers.get("content-type", ""))
                    finally:
                        self.in_flight -= 1
            except TimeoutError:
                if not window.expired():
                    raise
                what = "answered" if body is not None else "received"
                raise BadRequest(HTTPStatus.REQUEST_TIMEOUT, "timeout",
                                 f"request not {what} within its {self.limits.deadline_s:g} s deadline") from None
            return json_response(HTTPStatus.OK, payload)
        except BadRequest as exc:
            return exc.response(close=body is None)
        except ClientDisconnect:  # nobody to answer; uvicorn drops whatever is sent
            return json_response(HTTPStatus.BAD_REQUEST, {"error": "disconnected", "message": "client went away"}, True)
        except Exception as exc:  # noqa: BLE001 - any fault gets an answer; the traceback goes to the log
            log.exception("POST %s failed", request.url.path)
            return json_response(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal",
                                                            "detail": f"{type(exc).__name__}: {exc}"}, body is None)

    async def _score(self, body: bytes, content_type: str) -> dict:
        if content_type.lower().startswith("multipart/"):
            parts = split_multipart(body, content_type)
        else:
            parts = [("body", body)] if body else []
        if not parts:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "no images", "the request holds no image")
        if len(parts) > self.limits.max_images:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too many images",
                             f"{len(parts)} images in one request, limit {self.limits.max_images}")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.pool, self._check_pixels, parts)
        decoded = await asyncio.gather(*(loop.run_in_executor(self.pool, decode_image, data, name)
                                         for name, data in parts), return_exceptions=True)
        for (name, _), img in zip(parts, decoded, strict=True):
            if isinstance(img, UnreadableImage):
                raise _unreadable(name, img)
            if isinstance(img, BaseException):
                raise img
        scores: list[Score] = await asyncio.wrap_future(self.batcher.submit(decoded))
        return {"model": self.critic.version,
                "results": [{"name": name, **s.as_dict()} for (name, _), s in zip(parts, scores, strict=True)]}

    def _check_pixels(self, parts: list[tuple[str, bytes]]) -> None:
        """Per-image and per-request pixel limits, from the headers alone (runs on the decode pool)."""
        total = 0
        for name, data in parts:
            try:
                probe = probe_image(data, name, self.limits.max_pixels)
            except UnreadableImage as exc:
                raise _unreadable(name, exc) from exc
            total += probe.decoded_pixels if probe else 0  # unknown: decode_image refuses it at once
        if total > self.limits.max_request_pixels:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too many pixels",
                             f"{len(parts)} images would decode to {total} pixels, "
                             f"limit {self.limits.max_request_pixels} per request")

class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol plus what it lacks against hostile clients.

    - uvicorn has no header timeout: a client sending one header byte at a time would hold its connection
      forever. Here a request head must be complete within the deadline (JSON 408 and close after it), and a
      new connection that sends nothing is closed after KEEP_ALIVE_S, as uvicorn does between requests.
    - The app is told when the head began (scope extension), so its deadline covers the head too.
    - A client that half-closes mid-body: the app sees the body end short of its Content-Length and answers
      400, instead of the connection vanishing unanswered; a complete request half-closed still gets its answer.
    - Malformed or oversized heads are answered in JSON (uvicorn answers them in text/plain).
    """

    deadline_s: float = Limits.deadline_s  # per service: see _protocol_for

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._head_started: float | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        app = self.app

        async def stamped(scope, receive, send) -> None:
            scope["extensions"] = {**(scope.get("extensions") or {}), HEAD_STARTED: self._head_started}
            await app(scope, receive, send)

        self.app = stamped

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(KEEP_ALIVE_S, idle=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_started is None and (self.cycle is None or self.cycle.response_complete):
            self._head_started = self.loop.time()
            self._arm(self.deadline_s, idle=False)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is complete (or refused and answered)
            self._disarm()

    def on_response_complete(self) -> None:
        self._head_started = None
        self._disarm()
        super().on_response_complete()

    def eof_received(self) -> bool | None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return None  # nothing owed: let the transport close
        cycle.keep_alive = False
        if cycle.more_body:
            cycle.more_body = False  # the app now sees a body shorter than its Content-Length
            cycle.message_event.set()
        return True  # keep our half open for the answer

    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) > HEAD_MAX_BYTES:
            answer = _raw_json(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large",
                               f"request line and headers over {HEAD_MAX_BYTES} bytes")
        else:
            answer = _raw_json(HTTPStatus.BAD_REQUEST, "bad request", f"malformed HTTP request ({msg})")
        self.transport.write(answer)
        self.transport.close()

    def _arm(self, delay: float, idle: bool) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(delay, self._head_timeout, idle)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self, idle: bool) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if not idle:
            self.transport.write(_raw_json(HTTPStatus.REQUEST_TIMEOUT, "timeout",
                                           f"request head not received within the {self.deadline_s:g} s deadline"))
        self.transport.close()


def _protocol_for(limits: Limits) -> type[_GuardedH11]:
    return type("GuardedH11", (_GuardedH11,), {"deadline_s": limits.deadline_s})


class HttpService:
    """An ASGI app on uvicorn with the guarded protocol, on a socket bound at construction (port 0 picks a free
    one): the stack of `aesthetic serve` and `aesthetic studio`. make_app gets the limits and returns the app,
    which must have close().

    serve_forever() runs it in the calling thread until Ctrl-C; start()/stop(), or `with service:`, run it
    in a background thread, as the tests do. Both release the socket and close the app.
    """

    def __init__(self, make_app: Callable[[Limits], Any], host: str = SERVE_HOST, port: int = SERVE_PORT,
                 limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self.socket = socket.create_server((host, port), family=family, backlog=BACKLOG)
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        try:
            self.app = make_app(self.limits)
        except BaseException:
            self.socket.close()
            raise
        self.server = uvicorn.Server(uvicorn.Config(
            self.app, http=_protocol_for(self.limits), ws="none", lifespan="off", log_config=None,
            access_log=False, proxy_headers=False, server_header=False, backlog=BACKLOG,
            limit_concurrency=self.limits.max_connections, timeout_keep_alive=KEEP_ALIVE_S,
            h11_max_incomplete_event_size=HEAD_MAX_BYTES,
            # Every request ends by its deadline; this only bounds a stop() against a wedged one.
            timeout_graceful_shutdown=math.ceil(self.limits.deadline_s) + 1))
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.close()

    def start(self) -> HttpService:
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                        name="critic-uvicorn", daemon=True)
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                self.close()
                raise RuntimeError("the server stopped while starting (see the log)")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.limits.deadline_s + 10)
            self._thread = None
        self.close()

    def close(self) -> None:
        self.socket.close()
        self.app.close()

    def __enter__(self) -> HttpService:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class ScoringService(HttpService):
    """The scoring app (the critic, its batcher and decode pool) on the guarded stack."""

    def __init__(self, critic: Critic, host: str = SERVE_HOST, port: int = SERVE_PORT,
                 limits: Limits | None = None) -> None:
        self.critic = critic
        super().__init__(lambda limits: ScoringApp(critic, limits), host, port, limits)


def make_server(
    critic: Critic, host: str = SERVE_HOST, port: int = SERVE_PORT, limits: Limits | None = None
) -> ScoringService:
    """A bound service (see its server_address); serve_forever(), or start()/stop() in a background thread."""
    return ScoringService(critic, host, port, limits)


# The OpenAPI 3.1 description served at GET /openapi.json, as data: openapi_schema fills in the one number that
# depends on the limits (the most images a multipart request may carry).
_ERROR = {"$ref": "#/components/schemas/Error"}
_BINARY = {"type": "string", "contentMediaType": "application/octet-stream"}


def error_responses(*codes: int) -> dict:
    return {str(c): {"description": HTTPStatus(c).phrase, "content": {"application/json": {"schema": _ERROR}}}
            for c in codes}


_SCORE_PATH = {"post": {
    "summary": "Score one image (raw body) or several (multipart/form-data, one file per part)",
    "requestBody": {"required": True, "content": {
        "image/*": {"schema": _BINARY},
        "application/octet-stream": {"schema": _BINARY},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "images": {"type": "array", "items": _BINARY, "maxItems": None}}}}}},  # maxItems: Limits.max_images
    "responses": {
        "200": {"description": "one result per image, in request order",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Scores"}}}},
        **error_responses(400, 404, 405, 408, 411, 413),
        "503": {**error_responses(503)["503"], "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
        "500": {"description": "unexpected failure, logged with its traceback",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Internal"}}}},
    }}}
_HEALTHZ_PATH = {"get": {"summary": "Model version, limits and input size", "responses": {"200": {
    "description": "ready", "content": {"application/json": {"schema": {"type": "object", "properties": {
        "status": {"const": "ok"}, "model": {"type": ["string", "null"]},
        "calibration": {"type": ["string", "null"], "description": "e.g. 'isotonic calibration "
                        "fitted on 2500 val samples'; null for a model without one"},
        "limits": {"type": "object", "properties": {
            f.name: {"type": "number" if f.type == "float" else "integer"} for f in fields(Limits)}},
        "input": {"type": "object", "properties": {"image_size": {"type": "integer"},
                                                   "resize": {"type": "integer"}}}}}}}}}}}
OPENAPI_SCHEMAS = {
    "Error": {"type": "object", "required": ["error", "message"],
              "properties": {"error": {"type": "string", "description": "short kind, e.g. 'too large'"},
                             "message": {"type": "string"}}},
    "Internal": {"type": "object", "required": ["error", "detail"],
                 "properties": {"error": {"const": "internal"}, "detail": {"type": "string"}}},
    "Scores": {"type": "object", "required": ["model", "results"], "properties": {
        "model": {"type": ["string", "null"]},
        "results": {"type": "array", "items": {"$ref": "#/components/schemas/Score"}}}},
    "Score": {"type": "object", "required": ["name", "mean", "calibrated_mean", "percentile", "std", "histogram"],
              # Fields the critic's Score gains appear here without a change to the service.
              "additionalProperties": True, "properties": {
                  "name": {"type": "string", "description": "multipart file name, or 'body'"},
                  "mean": {"type": "number", "description": "mean of the model's own distribution"},
                  "calibrated_mean": {"type": "number", "description": "on the human scale (the mean "
                                      "itself for a model without calibration)"},
                  "percentile": {"type": ["number", "null"], "description": "0..100: where the "
                                 "mean falls among the validation split's; the full-range score to "
                                 "threshold; null without a calibration"},
                  "std": {"type": "number"},
                  "histogram": {"type": "array", "items": {"type": "number"}, "minItems": 10,
                                "maxItems": 10, "description": "probabilities of the scores 1..10"}}},
}
_OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "aesthetic critic", "version": "1",
             "description": "NIMA aesthetic scores (1..10) for images. Limits: see GET /healthz."},
    "paths": {
        "/score": _SCORE_PATH,
        "/healthz": _HEALTHZ_PATH,
        "/openapi.json": {"get": {"summary": "This description", "responses": {"200": {"description": "OpenAPI"}}}},
    },
    "components": {"schemas": OPENAPI_SCHEMAS},
}


def openapi_schema(limits: Limits) -> dict:
    """The OpenAPI 3.1 description served at GET /openapi.json."""
    schema = copy.deepcopy(_OPENAPI)
    multipart = schema["paths"]["/score"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    multipart["properties"]["images"]["maxItems"] = limits.max_images
    return schema

