"""Scoring-service latency for well-behaved clients, alone and beside 10 and 40 trickle clients, in one run.

A trickle client opens a connection, sends part of a request (half stop in the head, half in the body) and
then one more byte every --drip seconds; when the server answers it (408 at the deadline) it reconnects.
The three conditions are interleaved round by round, in rotating order, so load from other processes hits
them alike; each prints p50/p95 and the ratio of its p95 to the unloaded p95. Target: under 2x.

    .venv/bin/python benchmarks/bench_serve.py [--requests 60] [--rounds 3] [--concurrency 4] [--image-size 224]

The model is a mobilenet_v2 NIMA with weights 'none' and BatchNorm statistics measured on the designs, as in
bench_score.py (no trained checkpoint needed); the server runs with the default Limits.
"""

from __future__ import annotations

import argparse
import http.client
import io
import random
import select
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from critic.designs import SHAPES, random_genome, render  # noqa: E402
from critic.scoring import Critic  # noqa: E402
from critic.service import ScoringService, make_server  # noqa: E402
from nima_train.model import NIMA, recalibrate_batchnorm  # noqa: E402


class Tricklers:
    """n connections that each hold a request open by sending one byte every `drip` seconds."""

    def __init__(self, address: tuple[str, int], n: int, drip: float) -> None:
        self.address, self.drip = address, drip
        self.answered = 0
        self._stop = threading.Event()
        self._socks = [self._open(i) for i in range(n)]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _open(self, i: int) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=10)
        if i % 2:
            sock.sendall(b"POST /score HTTP/1.1\r\nHost: bench\r\n")
        else:
            sock.sendall(b"POST /score HTTP/1.1\r\nHost: bench\r\nContent-Length: 1000000\r\n\r\n")
        return sock

    def _run(self) -> None:
        while not self._stop.wait(self.drip):
            for i, sock in enumerate(self._socks):
                try:
                    if not select.select([sock], [], [], 0)[0]:
                        sock.sendall(b"X-a: b\r\n" if i % 2 else b"x")
                        continue
                except OSError:
                    pass
                self.answered += 1  # answered (408) or closed: start over
                sock.close()
                self._socks[i] = self._open(i)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for sock in self._socks:
            sock.close()


def run_clients(srv: ScoringService, payload: bytes, requests: int, concurrency: int) -> tuple[list[float], int]:
    """Latencies of `requests` POST /score from `concurrency` keep-alive clients, and the non-200 count."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def client(w: int) -> None:
        nonlocal errors
        conn = http.client.HTTPConnection(*srv.server_address, timeout=120)
        try:
            for _ in range(w, requests, concurrency):
                t0 = time.perf_counter()
                conn.request("POST", "/score", body=payload, headers={"Content-Type": "image/png"})
                resp = conn.getresponse()
                resp.read()
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    errors += resp.status != 200
        finally:
            conn.close()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, range(concurrency)))
    return latencies, errors


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=60, help="well-behaved requests per condition and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=4, help="well-behaved clients")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--drip", type=float, default=1.0, help="seconds between a trickle client's bytes")
    args = p.parse_args()

    rng = random.Random(0)
    designs = [render(random_genome(SHAPES[i % len(SHAPES)], rng), 256) for i in range(16)]
    torch.manual_seed(0)
    critic = Critic(NIMA("mobilenet_v2", weights="none"), image_size=args.image_size, version="random-bn-calibrated")
    recalibrate_batchnorm(critic.model, critic.preprocess(designs))
    buf = io.BytesIO()
    designs[0].save(buf, format="PNG")
    payload = buf.getvalue()

    conditions = (0, 10, 40)
    samples: dict[int, list[float]] = {n: [] for n in conditions}
    errors = dict.fromkeys(conditions, 0)
    answered = dict.fromkeys(conditions, 0)
    with make_server(critic, "127.0.0.1", 0) as srv:
        run_clients(srv, payload, 2 * args.concurrency, args.concurrency)  # warm-up: oneDNN picks its kernels
        for r in range(args.rounds):
            for n in conditions[r % 3:] + conditions[: r % 3]:  # each condition goes first once in 3 rounds
                tricklers = Tricklers(srv.server_address, n, args.drip) if n else None
                try:
                    time.sleep(args.drip)  # tricklers connect and start dripping; the same pause for all
                    lat, err = run_clients(srv, payload, args.requests, args.concurrency)
                finally:
                    if tricklers:
                        tricklers.close()
                        answered[n] += tricklers.answered
                samples[n] += lat
                errors[n] += err

    def pct(xs: list[float], q: int) -> float:
        return statistics.quantiles(xs, n=100)[q - 1]

    base = pct(samples[0], 95)
    print(f"POST /score of one {designs[0].width}px PNG, {args.image_size} px model input, "
          f"{args.concurrency} well-behaved clients, {args.rounds} interleaved rounds of {args.requests} requests "
          f"per condition, {torch.get_num_threads()} torch threads, default Limits:")
    for n in conditions:
        label = "unloaded" if n == 0 else f"beside {n} trickle clients"
        print(f"  {label:28s} n={len(samples[n]):4d}  p50 {pct(samples[n], 50) * 1000:7.1f} ms  "
              f"p95 {pct(samples[n], 95) * 1000:7.1f} ms  p95 ratio {pct(samples[n], 95) / base:.2f}  "
              f"errors {errors[n]}" + (f"  trickle answers {answered[n]}" if n else ""))
    worst = max(pct(samples[n], 95) for n in conditions) / base
    print(f"worst p95 ratio {worst:.2f} (target < 2.00): {'met' if worst < 2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
