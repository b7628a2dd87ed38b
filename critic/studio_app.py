"""`aesthetic studio`: the page and JSON API of critic/studio.py, on the guarded stack of `aesthetic serve`
(critic/service.py: uvicorn, the same request limits, JSON errors).

    GET  /                                        the page (critic/studio_page.html), a client of the API below
    GET  /openapi.json                            the API's OpenAPI description
    GET  /api/sessions                            sessions to resume
    POST /api/sessions                            {"shape", "rater"?, "seed"?} -> a new session's first round
    GET  /api/sessions/{session}                  its current round (resume)
    POST /api/sessions/{session}/pick             {"variant"} -> the next round
    POST /api/sessions/{session}/rate             {"variant", "score"} -> the round, rating recorded
    POST /api/sessions/{session}/publish          -> {"snapshot", "ratings"}
    GET  /api/sessions/{session}/images/{id}.png  a variant

A page on another site must not drive it (the studio listens on localhost, where a browser would otherwise let
any page post to it): every request must name one of the studio's own hosts in `Host` (DNS rebinding), and a
POST must be `application/json` (so a cross-site form or simple request cannot be one) with no `Origin` or the
studio's own. Refusals and forged requests get JSON 4xx and change nothing.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from critic.service import (
    EXCEPTION_HANDLERS,
    HEAD_STARTED,
    OPENAPI_SCHEMAS,
    BadRequest,
    HttpService,
    Limits,
    check_capacity,
    declared_length,
    error_responses,
    json_response,
    read_body,
    refused_large_head,
)
from critic.settings import SERVE_HOST, STUDIO_PORT
from critic.studio import Publisher, Studio, StudioError

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("studio_page.html")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def own_hosts(host: str, port: int) -> frozenset[str]:
    """The Host values (and, with http://, the origins) the studio answers to: the loopback names and the
    address it was bound to, with its port."""
    names = {*LOOPBACK_NAMES, f"[{host}]" if ":" in host else host}
    return frozenset(f"{name}:{port}" for name in names)


class StudioApp:
    """The ASGI app. Studio work (render, score, files) runs on one worker thread, one request at a time."""

    def __init__(self, studio: Studio, publish: Publisher, limits: Limits, hosts: frozenset[str]) -> None:
        self.studio, self.publisher, self.limits, self.hosts = studio, publish, limits, hosts
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="studio")
        self.in_flight = 0  # the event loop's thread only
        api = "/api/sessions"
        self.routes = Starlette(routes=[
            Route("/", self.page, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route(api, self.list_sessions, methods=["GET"]),
            Route(api, self.create, methods=["POST"]),
            Route(api + "/{session:int}", self.current, methods=["GET"]),
            Route(api + "/{session:int}/pick", self.pick, methods=["POST"]),
            Route(api + "/{session:int}/rate", self.rate, methods=["POST"]),
            Route(api + "/{session:int}/publish", self.publish, methods=["POST"]),
            Route(api + "/{session:int}/images/{iid:int}.png", self.image, methods=["GET"]),
        ], exception_handlers=EXCEPTION_HANDLERS)

    async def __call__(self, scope, receive, send) -> None:
        if await refused_large_head(scope, receive, send):
            return
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            if host not in self.hosts:
                answer = json_response(HTTPStatus.FORBIDDEN, {"error": "wrong host", "message": (
                    f"Host {host!r} is not the studio's; open it as http://{min(self.hosts)}/")}, True)
                await answer(scope, receive, send)
                return
        await self.routes(scope, receive, send)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    # -- GET -----------------------------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE.read_text(), headers={"Content-Security-Policy": "default-src 'self'; "
                                                       "script-src 'unsafe-inline'; style-src 'unsafe-inline'"})

    async def openapi(self, request: Request) -> JSONResponse:
        return json_response(HTTPStatus.OK, openapi_schema())

    async def list_sessions(self, request: Request) -> JSONResponse:
        return json_response(HTTPStatus.OK, {"sessions": self.studio.sessions()})

    async def current(self, request: Request) -> JSONResponse:
        return await self._answer(lambda: self.studio.current(request.path_params["session"]))

    async def image(self, request: Request) -> Response:
        try:
            path = self.studio.image_path(request.path_params["session"], request.path_params["iid"])
        except StudioError as exc:
            return json_response(exc.status, {"error": exc.kind, "message": exc.message})
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

    # -- POST ----------------------------------------------------------------------------------------------
    async def create(self, request: Request) -> JSONResponse:
        return await self._post(request, lambda body: self.studio.create(
            body.get("shape"), body.get("rater"), body.get("seed")), HTTPStatus.CREATED)

    async def pick(self, request: Request) -> JSONResponse:
        n = request.path_params["session"]
        return await self._post(request, lambda body: self.studio.pick(n, body.get("variant")))

    async def rate(self, request: Request) -> JSONResponse:
        n = request.path_params["session"]
        return await self._post(request, lambda body: self.studio.rate(n, body.get("variant"), body.get("score")))

    async def publish(self, request: Request) -> JSONResponse:
        n = request.path_params["session"]
        return await self._post(request, lambda body: self.studio.publish(n, self.publisher))

    async def _post(self, request: Request, action: Callable[[dict], dict],
                    status: HTTPStatus = HTTPStatus.OK) -> JSONResponse:
        body: bytes | None = None
        try:
            self._check_sender(request)
            length = declared_length(request, self.limits.max_bytes)
            check_capacity(self.in_flight, self.limits)
            loop = asyncio.get_running_loop()
            started = request.scope.get("extensions", {}).get(HEAD_STARTED) or loop.time()
            window = asyncio.timeout_at(started + self.limits.deadline_s)
            try:
                async with window:
                    body = await read_body(request, length)
            except TimeoutError:
                if not window.expired():
                    raise
                raise BadRequest(HTTPStatus.REQUEST_TIMEOUT, "timeout", f"request not received within its "
                                 f"{self.limits.deadline_s:g} s deadline") from None
            payload = _json_object(body)
            return await self._answer(lambda: action(payload), status)
        except BadRequest as exc:
            return exc.response(close=body is None)
        except ClientDisconnect:
            return json_response(HTTPStatus.BAD_REQUEST, {"error": "disconnected", "message": "client went away"}, True)

    async def _answer(self, work: Callable[[], dict], status: HTTPStatus = HTTPStatus.OK) -> JSONResponse:
        """Run work on the studio's thread; StudioError -> its JSON 4xx, anything else -> a logged 500."""
        check_capacity(self.in_flight, self.limits)
        self.in_flight += 1
        try:
            return json_response(status, await asyncio.get_running_loop().run_in_executor(self.pool, work))
        except StudioError as exc:
            return json_response(exc.status, {"error": exc.kind, "message": exc.message})
        except Exception as exc:  # noqa: BLE001 - any fault gets an answer; the traceback goes to the log
            log.exception("%s failed", getattr(work, "__name__", "studio request"))
            return json_response(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal",
                                                            "detail": f"{type(exc).__name__}: {exc}"})
        finally:
            self.in_flight -= 1

    def _check_sender(self, request: Request) -> None:
        """Only the studio's own page (or a script, which sends no Origin) may post, and only JSON."""
        origin = request.headers.get("origin")
        if origin is not None and (not origin.startswith("http://") or origin[7:].lower() not in self.hosts):
            raise BadRequest(HTTPStatus.FORBIDDEN, "cross-site request",
                             f"Origin {origin!r} is not the studio's own; cross-site requests are refused")
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise BadRequest(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "not json",
                             f"POST a JSON object with Content-Type: application/json, not {media or 'nothing'!r}")


def _json_object(body: bytes) -> dict:
    if not body.strip():
        return {}
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "bad json", f"the body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "bad json", "the body must be a JSON object")
    return payload


class StudioService(HttpService):
    """The studio on the guarded stack, bound at construction (see HttpService)."""

    def __init__(self, studio: Studio, publish: Publisher, host: str = SERVE_HOST, port: int = STUDIO_PORT,
                 limits: Limits | None = None) -> None:
        self.studio = studio
        # The socket is bound before the app is made, so a port of 0 is known by then.
        super().__init__(lambda lim: StudioApp(studio, publish, lim, own_hosts(host, self.server_address[1])),
                         host, port, limits)


# The OpenAPI 3.1 description served at GET /openapi.json (docs/critic.md has the same in prose).
_SESSION = {"name": "session", "in": "path", "required": True, "schema": {"type": "integer"}}
_ROUND = {"$ref": "#/components/schemas/Round"}


def _post(summary: str, body: dict | None, answer: dict, ok: str = "200", session: bool = True) -> dict:
    op = {"summary": summary, "parameters": [_SESSION] if session else [], "responses": {
        ok: {"description": "done", "content": {"application/json": {"schema": answer}}},
        **error_responses(400, 403, 404, 408, 409, 411, 413, 415, 503)}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return {"post": op}


_VARIANT = {"type": "object", "required": ["id", "rank", "mean", "calibrated_mean", "cruft", "image_url"],
            "properties": {
                "id": {"type": "integer", "description": "the design's SAC image id (iid)"},
                "rank": {"type": "integer", "description": "the critic's rank in this round, 1 = its choice"},
                "mean": {"type": "number"}, "calibrated_mean": {"type": "number"},
                "percentile": {"type": ["number", "null"]},
                "cruft": {"type": "boolean", "description": "the critic's filter would drop it"},
                "image_url": {"type": "string"}, "rating": {"type": ["integer", "null"]}}}
_OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "aesthetic studio", "version": "1", "description": (
        "Interactive evolution judged by the critic and a person; ratings published as SAC snapshots. POSTs must "
        "be application/json and carry no Origin or the studio's own.")},
    "paths": {
        "/api/sessions": {**_post("Start a session: round 1", {"type": "object", "properties": {
            "shape": {"enum": ["heart", "star", "kite", "trapezoid", "landscape"]},
            "rater": {"type": "string", "maxLength": 64, "description": "the person's name (their SAC sid)"},
            "seed": {"type": "integer"}}}, _ROUND, "201", session=False),
            "get": {"summary": "Sessions to resume", "responses": {"200": {"description": "sessions"}}}},
        "/api/sessions/{session}": {"get": {"summary": "The current round", "parameters": [_SESSION], "responses": {
            "200": {"description": "round", "content": {"application/json": {"schema": _ROUND}}},
            **error_responses(404)}}},
        "/api/sessions/{session}/pick": _post("Evolve from a variant of the current round: the next round", {
            "type": "object", "required": ["variant"], "properties": {"variant": {"type": "integer"}}}, _ROUND),
        "/api/sessions/{session}/rate": _post("Rate a variant of the current round 1..10", {
            "type": "object", "required": ["variant", "score"], "properties": {
                "variant": {"type": "integer"}, "score": {"type": "integer", "minimum": 1, "maximum": 10}}}, _ROUND),
        "/api/sessions/{session}/publish": _post("Publish the unpublished ratings as a SAC snapshot", None, {
            "type": "object", "required": ["snapshot", "ratings"], "properties": {
                "snapshot": {"type": "string", "description": "its path under sac/inbox/"},
                "ratings": {"type": "integer"}}}),
        "/api/sessions/{session}/images/{id}.png": {"get": {"summary": "A variant's PNG", "parameters": [
            _SESSION, {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}], "responses": {
            "200": {"description": "PNG", "content": {"image/png": {}}}, **error_responses(404)}}},
    },
    "components": {"schemas": {
        "Error": OPENAPI_SCHEMAS["Error"],
        "Variant": _VARIANT,
        "Round": {"type": "object", "required": ["session", "round", "variants"], "properties": {
            "session": {"type": "integer"}, "round": {"type": "integer"},
            "variants": {"type": "array", "items": {"$ref": "#/components/schemas/Variant"},
                         "description": "in the critic's order"},
            "last": {"type": ["object", "null"], "description": "the last round's pick beside the critic's choice"},
            "agreement": {"type": "object", "description": "picks, agreed, agreement, pick_ranks, "
                          "mean_pick_rank, median_pick_rank"}}},
    }},
}


def openapi_schema() -> dict:
    """The OpenAPI 3.1 description served at GET /openapi.json."""
    return copy.deepcopy(_OPENAPI)
