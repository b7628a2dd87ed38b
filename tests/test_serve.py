"""The HTTP scoring service on 127.0.0.1 with a real client: scores, every error path, a bounded load test."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from critic.scoring import Critic, decode_image
from critic.service import Limits, ScoringServer, make_server
from nima_train.model import NIMA
from tests.helpers.critic_models import make_model, picture, png_bytes
from tests.helpers.http import serving

LIMITS = Limits(max_bytes=300_000, max_images=4, max_pixels=1_000_000)


@pytest.fixture(scope="module")
def server() -> Iterator[ScoringServer]:
    # A 96 px model input keeps the load test short on two shared cores; the code path is the same.
    with serving(make_server(Critic(make_model(), image_size=96, version="test-v1"), "127.0.0.1", 0, LIMITS)) as srv:
        yield srv


def _conn(srv: ScoringServer) -> http.client.HTTPConnection:
    host, port = srv.server_address[:2]
    return http.client.HTTPConnection(host, port, timeout=30)


def _post(srv: ScoringServer, body: bytes, content_type: str = "image/png") -> tuple[int, dict]:
    conn = _conn(srv)
    try:
        conn.request("POST", "/score", body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _multipart(files: list[tuple[str, bytes]], boundary: str = "----critic-test-boundary") -> tuple[bytes, str]:
    out = b""
    for name, data in files:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_healthz_reports_the_model_and_limits(server) -> None:
    conn = _conn(server)
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 200
    assert body == {"status": "ok", "model": "test-v1",
                    "limits": {"max_bytes": 300_000, "max_images": 4, "max_pixels": 1_000_000},
                    "input": {"image_size": 96, "resize": 110}}  # 110 = 96 * 256 / 224, the stored-crop ratio


def test_raw_and_multipart_scores_match_the_critic(server) -> None:
    images = [png_bytes(picture(i, 120)) for i in range(3)]
    direct = server.critic.score_images([decode_image(b) for b in images]).scores()
    status, one = _post(server, images[0])
    assert status == 200 and one["model"] == "test-v1"
    assert one["results"][0]["mean"] == pytest.approx(direct[0].mean, abs=1e-5)
    body, ctype = _multipart([(f"d{i}.png", b) for i, b in enumerate(images)])
    status, many = _post(server, body, ctype)
    assert status == 200
    assert [r["name"] for r in many["results"]] == ["d0.png", "d1.png", "d2.png"]
    assert [r["mean"] for r in many["results"]] == pytest.approx([s.mean for s in direct], abs=1e-5)
    assert [r["histogram"] for r in many["results"]][2] == pytest.approx(list(direct[2].histogram), abs=1e-5)


def test_bad_input_gets_a_4xx_with_a_message(server) -> None:
    good = png_bytes(picture(1, 64))
    status, body = _post(server, b"hello, not an image")
    assert (status, body["error"]) == (400, "not an image")
    status, body = _post(server, good[: len(good) // 2])
    assert status == 400 and body["error"] in ("corrupt", "not an image") and body["message"]
    bomb = png_bytes(Image.new("L", (2000, 2000)))  # a few KB, 4 Mpx once decoded
    assert len(bomb) < 50_000
    status, body = _post(server, bomb)
    assert (status, body["error"]) == (413, "decompression bomb") and "1000000" in body["message"]
    status, body = _post(server, *_multipart([(f"{i}.png", good) for i in range(5)]))
    assert (status, body["error"]) == (413, "too many images") and "limit 4" in body["message"]
    status, body = _post(server, *_multipart([("ok.png", good), ("bad.png", b"GIF89a?")]))
    assert status == 400 and body["message"].startswith("bad.png:")
    status, body = _post(server, b"--x\r\nbroken", "multipart/form-data; boundary=x")
    assert (status, body["error"]) == (400, "bad multipart")
    status, body = _post(server, b"")
    assert (status, body["error"]) == (400, "no images")


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
    with serving(make_server(Critic(model, image_size=64, version="flaky"), "127.0.0.1", 0, LIMITS)) as srv:
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
        status, _ = _post(srv, image)
        assert status == 200
    assert any("POST /score failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_post_to_an_unknown_path_closes_the_connection_instead_of_reading_the_body_as_a_request(server) -> None:
    conn = _conn(server)
    try:
        conn.request("POST", "/nowhere", body=b"GET /healthz HTTP/1.1\r\n\r\n")
        resp = conn.getresponse()
        assert resp.status == 404 and resp.getheader("Connection") == "close"
        assert json.loads(resp.read())["error"] == "not found"
    finally:
        conn.close()
