"""The HTTP scoring service on 127.0.0.1: scores, every error path, hostile clients (raw sockets), a load test."""

from __future__ import annotations

import http.client
import io
import json
import select
import socket
import statistics
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest
from PIL import Image

from cli.main import build_parser, build_server
from critic.scoring import Critic, decode_image
from critic.service import Limits, ScoringService, make_server
from nima_train.model import NIMA
from tests.helpers.critic_models import (
    make_model,
    picture,
    png_bytes,
    save_test_checkpoint,
    stretching_calibration,
)

LIMITS = Limits(max_bytes=300_000, max_images=4, max_pixels=1_000_000, max_request_pixels=2_500_000,
                deadline_s=60, max_in_flight=16, decode_workers=2, max_connections=64)


@pytest.fixture(scope="module")
def model() -> NIMA:
    return make_model()


@pytest.fixture(scope="module")
def server(model: NIMA) -> Iterator[ScoringService]:
    # A 96 px model input keeps the load test short on two shared cores; the code path is the same.
    with make_server(Critic(model, image_size=96, version="test-v1"), "127.0.0.1", 0, LIMITS) as srv:
        yield srv


@pytest.fixture(scope="module")
def short_deadline(model: NIMA) -> Iterator[ScoringService]:
    with make_server(Critic(model, image_size=96, version="test-v1"), "127.0.0.1", 0,
                     replace(LIMITS, deadline_s=2)) as srv:
        yield srv


def _conn(srv: ScoringService) -> http.client.HTTPConnection:
    host, port = srv.server_address
    return http.client.HTTPConnection(host, port, timeout=60)


def _post(srv: ScoringService, body: bytes, content_type: str = "image/png",
          path: str = "/score") -> tuple[int, dict, http.client.HTTPResponse]:
    """Status, JSON body and response of one POST on a fresh connection; every answer must be JSON."""
    conn = _conn(srv)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        data = resp.read()
        assert resp.getheader("Content-Type") == "application/json", (resp.status, data[:200])
        return resp.status, json.loads(data), resp
    finally:
        conn.close()


def _multipart(files: list[tuple[str, bytes]], boundary: str = "----critic-test-boundary") -> tuple[bytes, str]:
    out = b""
    for name, data in files:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds no pixel data: decoding it fails as corrupt."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one response the server sends before closing the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _raw(srv: ScoringService, data: bytes, half_close: bool = False) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(srv.server_address, timeout=60) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return _read_answer(sock)


def _json_error(answer: tuple[int, dict[str, str], bytes]) -> tuple[int, str]:
    status, headers, body = answer
    assert headers.get("content-type") == "application/json", answer
    return status, json.loads(body)["error"]


def _trickle(srv: ScoringService, head: bytes, drip: bytes, every: float) -> tuple[int, dict[str, str], bytes]:
    """Send `head`, then one byte of `drip` every `every` seconds until the server answers; its answer."""
    with socket.create_connection(srv.server_address, timeout=60) as sock:
        sock.sendall(head)
        for byte in drip:
            if select.select([sock], [], [], every)[0]:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # answered and closed between the select and the send: read the answer
                break
        return _read_answer(sock)


def _get(srv: ScoringService, path: str) -> tuple[int, dict]:
    conn = _conn(srv)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_healthz_reports_the_model_and_limits(server) -> None:
    status, body = _get(server, "/healthz")
    assert status == 200
    assert body == {"status": "ok", "model": "test-v1", "calibration": None, "limits": asdict(LIMITS),
                    "input": {"image_size": 96, "resize": 110}}  # 110 = 96 * 256 / 224, the stored-crop ratio


def test_openapi_describes_the_routes_limits_and_error_shape(server) -> None:
    status, spec = _get(server, "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    score = spec["paths"]["/score"]["post"]
    assert {"200", "400", "408", "411", "413", "503", "500"} <= set(score["responses"])
    assert "Retry-After" in score["responses"]["503"]["headers"]
    assert set(spec["paths"]["/healthz"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
               ["properties"]["limits"]["properties"]) == {f.name for f in fields(Limits)}
    assert spec["components"]["schemas"]["Error"]["required"] == ["error", "message"]


def test_raw_and_multipart_scores_match_the_critic(server) -> None:
    images = [png_bytes(picture(i, 120)) for i in range(3)]
    direct = server.critic.score_images([decode_image(b) for b in images]).scores()
    status, one, _ = _post(server, images[0])
    assert status == 200 and one["model"] == "test-v1"
    assert one["results"][0]["mean"] == pytest.approx(direct[0].mean, abs=1e-5)
    assert set(one["results"][0]) == {"name", *direct[0].as_dict()}  # every Score field, whatever Score holds
    body, ctype = _multipart([(f"d{i}.png", b) for i, b in enumerate(images)])
    status, many, _ = _post(server, body, ctype)
    assert status == 200
    assert [r["name"] for r in many["results"]] == ["d0.png", "d1.png", "d2.png"]
    assert [r["mean"] for r in many["results"]] == pytest.approx([s.mean for s in direct], abs=1e-5)
    assert [r["histogram"] for r in many["results"]][2] == pytest.approx(list(direct[2].histogram), abs=1e-5)


def test_a_calibrated_model_answers_mean_calibrated_mean_and_percentile(model: NIMA) -> None:
    cal = stretching_calibration()
    with make_server(Critic(model, image_size=96, version="calibrated", calibration=cal), "127.0.0.1", 0,
                     LIMITS) as srv:
        status, doc, _ = _post(srv, png_bytes(picture(4, 120)))
        health = _get(srv, "/healthz")[1]
    assert status == 200
    (result,) = doc["results"]
    assert result["calibrated_mean"] == pytest.approx(float(cal.apply(result["mean"])), abs=1e-5)
    assert 0 <= result["percentile"] <= 100
    assert health["calibration"] == cal.describe()


def test_bad_input_gets_a_4xx_with_a_message(server) -> None:
    good = png_bytes(picture(1, 64))
    status, body, _ = _post(server, b"hello, not an image")
    assert (status, body["error"]) == (400, "not an image")
    status, body, _ = _post(server, good[: len(good) // 2])
    assert status == 400 and body["error"] in ("corrupt", "not an image") and body["message"]
    bomb = png_bytes(Image.new("L", (2000, 2000)))  # a few KB, 4 Mpx once decoded
    assert len(bomb) < 50_000
    status, body, _ = _post(server, bomb)
    assert (status, body["error"]) == (413, "decompression bomb")
    assert "2000x2000 is 4000000 pixels, limit 1000000" in body["message"]
    status, body, _ = _post(server, *_multipart([(f"{i}.png", good) for i in range(5)]))
    assert (status, body["error"]) == (413, "too many images") and "limit 4" in body["message"]
    status, body, _ = _post(server, *_multipart([("ok.png", good), ("bad.png", b"GIF89a?")]))
    assert status == 400 and body["message"].startswith("bad.png:")
    status, body, _ = _post(server, b"--x\r\nbroken", "multipart/form-data; boundary=x")
    assert (status, body["error"]) == (400, "bad multipart")
    status, body, _ = _post(server, b"")
    assert (status, body["error"]) == (400, "no images")


def test_a_bomb_beyond_pillows_own_limit_is_named_as_such(server) -> None:
    status, body, _ = _post(server, _png_header_only(20_000, 20_000))  # 400 Mpx: Pillow refuses to open it
    assert (status, body["error"]) == (413, "decompression bomb")
    assert "beyond Pillow's limit" in body["message"] and "89478485x3" not in body["message"]


def test_a_request_over_its_pixel_budget_is_refused_from_the_headers_before_decoding(server) -> None:
    # Four 1 Mpx images (each within max_pixels) are 4 Mpx together, over the 2.5 Mpx budget.
    small_files = [png_bytes(Image.new("L", (1000, 1000))) for _ in range(4)]
    assert max(map(len, small_files)) < 10_000
    status, body, _ = _post(server, *_multipart([(f"{i}.png", b) for i, b in enumerate(small_files)]))
    assert (status, body["error"]) == (413, "too many pixels") and "4000000 pixels" in body["message"]
    # Headers without pixel data would fail as corrupt if decoded: the budget answers first.
    hollow = [_png_header_only(1000, 1000) for _ in range(4)]
    status, body, _ = _post(server, *_multipart([(f"{i}.png", b) for i, b in enumerate(hollow)]))
    assert (status, body["error"]) == (413, "too many pixels")
    status, body, _ = _post(server, *_multipart([("h.png", _png_header_only(1000, 1000))]))
    assert (status, body["error"]) == (400, "corrupt")  # alone it fits the budget, so it is decoded


def test_jpegs_count_at_draft_size_and_score_as_the_critic_decodes_them(server) -> None:
    # 1000x1000 JPEGs decode at 1/2 scale (500x500, 0.25 Mpx): four fit the 2.5 Mpx budget.
    jpegs = [_jpeg(picture(i, 1000)) for i in range(4)]
    status, body, _ = _post(server, *_multipart([(f"{i}.jpg", b) for i, b in enumerate(jpegs)]))
    assert status == 200, body
    direct = server.critic.score_images([decode_image(b) for b in jpegs]).scores()
    assert [r["mean"] for r in body["results"]] == pytest.approx([s.mean for s in direct], abs=1e-5)


def test_oversized_and_unframed_requests_are_refused_without_reading_the_body(server) -> None:
    conn = _conn(server)
    conn.putrequest("POST", "/score")
    conn.putheader("Content-Length", str(LIMITS.max_bytes + 1))
    conn.endheaders()  # the body is never sent: the server must answer from the headers alone
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert (resp.status, body["error"]) == (413, "too large") and "limit 300000" in body["message"]
    conn = _conn(server)
    conn.putrequest("POST", "/score")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 411 and json.loads(resp.read())["error"] == "length required"
    conn.close()
    conn = _conn(server)
    conn.request("GET", "/nowhere")
    resp = conn.getresponse()
    assert resp.status == 404 and "GET /nowhere" in json.loads(resp.read())["message"]
    conn.close()
    assert _json_error(_raw(server, b"POST /score HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   b"5\r\nhello\r\n0\r\n\r\n")) == (411, "length required")
    both = b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert _json_error(_raw(server, both + b"5\r\nhello\r\n0\r\n\r\n")) == (411, "length required")


def test_expect_100_continue_with_a_huge_length_gets_413_and_no_100_continue(server) -> None:
    status, headers, body = _raw(server, b"POST /score HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                                         b"Content-Type: image/png\r\nContent-Length: 30000000\r\n\r\n")
    assert status == 413  # the first status line the server sent, so no `100 Continue` came before it
    assert json.loads(body)["error"] == "too large" and headers["connection"] == "close"


def test_a_body_shorter_than_its_content_length_gets_400(server) -> None:
    image = png_bytes(picture(5, 64))
    head = f"POST /score HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: {len(image)}\r\n\r\n"
    answer = _raw(server, head.encode() + image[:-100], half_close=True)
    assert _json_error(answer) == (400, "short body")
    assert f"{len(image) - 100} of the {len(image)} bytes" in json.loads(answer[2])["message"]
    whole = _raw(server, head.encode() + image, half_close=True)  # complete, then half-closed: still answered
    assert whole[0] == 200 and len(json.loads(whole[2])["results"]) == 1


def test_trickling_clients_get_408_after_the_deadline(short_deadline) -> None:
    head = b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
    with ThreadPoolExecutor(2) as pool:
        # One byte every 0.5 s: each byte would reset a per-read timeout; the deadline is total.
        slow_body = pool.submit(_trickle, short_deadline, head, b"x" * 1000, 0.5)
        slow_head = pool.submit(_trickle, short_deadline, b"POST /score HTTP/1.1\r\n", b"X-Slow: 1\r\n" * 100, 0.5)
        for answer in (slow_body.result(), slow_head.result()):
            assert _json_error(answer) == (408, "timeout") and answer[1]["connection"] == "close"
    status, body, _ = _post(short_deadline, png_bytes(picture(3, 64)))
    assert status == 200 and body["results"]


def test_a_well_behaved_client_is_answered_while_40_trickle_clients_stay_connected(server) -> None:
    image = png_bytes(picture(6, 64))
    slow: list[socket.socket] = []
    stop = threading.Event()
    dripper = threading.Thread(target=lambda: None)
    try:
        for i in range(40):
            sock = socket.create_connection(server.server_address, timeout=60)
            slow.append(sock)
            if i % 2:  # half stall in the head, half in the body
                sock.sendall(b"POST /score HTTP/1.1\r\nHost: t\r\n")
            else:
                sock.sendall(b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")

        def drip() -> None:
            while not stop.wait(1.0):
                for i, sock in enumerate(slow):
                    sock.sendall(b"X-a: b\r\n" if i % 2 else b"x")

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        for _ in range(5):
            status, body, _ = _post(server, image)
            assert status == 200 and len(body["results"]) == 1
        still_waiting = select.select(slow, [], [], 0)[0]
        assert still_waiting == []  # none was answered or closed: all 40 were held while the others were served
    finally:
        stop.set()
        if dripper.is_alive():
            dripper.join(30)
        for sock in slow:
            sock.close()


class _Gate(NIMA):
    """A real NIMA whose forward waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__("mobilenet_v2", weights="none")
        self.entered, self.opened = threading.Event(), threading.Event()

    def embed(self, x):
        self.entered.set()
        self.opened.wait(60)
        return super().embed(x)


def test_over_the_in_flight_limit_gets_503_with_retry_after_and_a_slow_answer_408() -> None:
    model = _Gate()
    image = png_bytes(picture(2, 64))
    limits = replace(LIMITS, max_in_flight=1, deadline_s=3)
    with make_server(Critic(model, image_size=64, version="gated"), "127.0.0.1", 0, limits) as srv:
        try:
            with ThreadPoolExecutor(1) as pool:
                first = pool.submit(_post, srv, image)
                assert model.entered.wait(60)
                status, body, resp = _post(srv, image)
                assert (status, body["error"]) == (503, "busy") and resp.getheader("Retry-After") == "1"
                status, body, _ = first.result()
                assert (status, body["error"]) == (408, "timeout") and "not answered" in body["message"]
        finally:
            model.opened.set()
        status, body, _ = _post(srv, image)  # the slot was given back
        assert status == 200 and body["model"] == "gated"


def test_malformed_http_is_answered_in_json_by_the_server(server) -> None:
    assert _json_error(_raw(server, b"GARBAGE\r\n\r\n")) == (400, "bad request")
    huge = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000
    assert _json_error(_raw(server, huge)) == (431, "head too large")  # still incomplete past 16 KiB
    assert _json_error(_raw(server, huge + b"\r\n\r\n")) == (431, "head too large")  # whole in one read
    status, error = _json_error(_raw(server, b"BREW /score HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
    assert (status, error) == (405, "method not allowed")


def test_load_500_requests_at_concurrency_8_without_errors(server) -> None:
    payloads = [png_bytes(picture(i, 64)) for i in range(8)]
    n, concurrency = 500, 8
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        conn = _conn(server)  # one keep-alive connection per client
        try:
            for k in range(w, n, concurrency):
                t0 = time.perf_counter()
                conn.request("POST", "/score", body=payloads[k % len(payloads)],
                             headers={"Content-Type": "image/png"})
                resp = conn.getresponse()
                data = resp.read()
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if resp.status != 200 or "results" not in json.loads(data):
                        errors.append(f"{resp.status}: {data[:200]!r}")
        finally:
            conn.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    print(f"\nload: {n} requests at concurrency {concurrency} in {wall:.1f}s ({n / wall:.0f} req/s), "
          f"p50 {q[49] * 1000:.1f} ms, p95 {q[94] * 1000:.1f} ms")
    assert not errors, errors[:3]
    assert len(latencies) == n


class _FailsWhenAsked(NIMA):
    """A real NIMA whose next forward raises, as a CUDA out-of-memory or a broken weight would."""

    def __init__(self) -> None:
        super().__init__("mobilenet_v2", weights="none")
        self.fail_next = threading.Event()

    def embed(self, x):
        if self.fail_next.is_set():
            self.fail_next.clear()
            raise RuntimeError("CUDA out of memory (planted by the test)")
        return super().embed(x)


def test_a_model_error_is_answered_500_json_and_the_server_keeps_serving(caplog) -> None:
    model = _FailsWhenAsked()
    image = png_bytes(picture(2, 64))
    with make_server(Critic(model, image_size=64, version="flaky"), "127.0.0.1", 0, LIMITS) as srv:
        conn = _conn(srv)  # one keep-alive connection for all three requests
        try:
            model.fail_next.set()
            conn.request("POST", "/score", body=image, headers={"Content-Type": "image/png"})
            resp = conn.getresponse()
            body = json.loads(resp.read())
            assert resp.status == 500 and resp.getheader("Content-Type") == "application/json"
            assert body["error"] == "internal"
            assert body["detail"] == "RuntimeError: CUDA out of memory (planted by the test)"
            conn.request("POST", "/score", body=image, headers={"Content-Type": "image/png"})
            resp = conn.getresponse()
            again = json.loads(resp.read())
            assert resp.status == 200 and again["model"] == "flaky" and len(again["results"]) == 1
        finally:
            conn.close()
        status, _, _ = _post(srv, image)
        assert status == 200
    assert any("POST /score failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_post_to_an_unknown_path_closes_the_connection_instead_of_reading_the_body_as_a_request(server) -> None:
    status, body, resp = _post(server, b"GET /healthz HTTP/1.1\r\n\r\n", path="/nowhere")
    assert (status, body["error"]) == (404, "not found") and resp.getheader("Connection") == "close"


def test_serve_flags_set_every_limit_and_bad_values_stop_with_one_line(tmp_path: Path) -> None:
    ckpt = save_test_checkpoint(tmp_path / "m" / "model.pt", crop=64, resize=73)
    args = build_parser().parse_args([
        "serve", "--model", str(ckpt), "--port", "0", "--max-bytes", "1000", "--max-images", "2",
        "--max-pixels", "5000", "--max-request-pixels", "9000", "--deadline", "7.5", "--max-in-flight", "3",
        "--decode-workers", "1", "--max-connections", "10"])
    srv = build_server(args)
    try:
        assert srv.limits == Limits(1000, 2, 5000, 9000, 7.5, 3, 1, 10)
        assert srv.server_address[0] == "127.0.0.1" and srv.server_address[1] > 0
    finally:
        srv.close()
    # The flags are checked when parsed (tests/test_cli_arguments.py); Limits checks what code passes directly.
    with pytest.raises(ValueError, match="^deadline_s must be positive, got 0$"):
        Limits(deadline_s=0)


def test_connections_beyond_the_limit_get_uvicorns_plain_503(model: NIMA) -> None:
    limits = replace(LIMITS, max_connections=3)
    with make_server(Critic(model, image_size=64, version="few"), "127.0.0.1", 0, limits) as srv:
        held = [socket.create_connection(srv.server_address, timeout=60) for _ in range(2)]
        try:
            for sock in held:
                sock.sendall(b"POST /score HTTP/1.1\r\nHost: t\r\n")  # an unfinished head keeps it open
            status, headers, body = _raw(srv, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            # The server's own reply (documented in docs/critic.md), not the application's JSON.
            assert (status, headers["content-type"], body) == (503, "text/plain; charset=utf-8",
                                                               b"Service Unavailable")
        finally:
            for sock in held:
                sock.close()
