"""How long a studio round takes: render 32 variants and score them with the critic (target p95 <= 2 s on the
2-core machine with the demo model), and the whole `POST /api/sessions/{n}/pick` that the page waits for (the
round plus its PNGs and state written, over HTTP on 127.0.0.1).

    .venv/bin/python benchmarks/bench_studio.py [--checkpoint model.pt] [--rounds 20]

Without --checkpoint it times a mobilenet_v2 NIMA with weights 'none' at the CPU demo's input size (crop 96,
resize 108: what `make demo` trains and promotes), its BatchNorm statistics measured on designs (an untrained
net's activations are denormal-range numbers that would make CPU timings unrepresentative). The load average
is printed before and after: on a shared machine the figures are only as good as it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from critic.designs import mutate, random_genome, render  # noqa: E402
from critic.scoring import Critic  # noqa: E402
from critic.settings import EvolveSettings  # noqa: E402
from critic.studio import Studio  # noqa: E402
from critic.studio_app import StudioService  # noqa: E402
from nima_train.model import NIMA, recalibrate_batchnorm  # noqa: E402


def _quantiles(times: list[float]) -> str:
    q = statistics.quantiles(times, n=20, method="inclusive")
    return f"p50 {statistics.median(times) * 1000:.0f} ms, p95 {q[18] * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"


def bench_rounds(critic: Critic, rounds: int, batch: int, size: int) -> dict[str, list[float]]:
    """Render + score, as critic/studio.py's _round does (without the files), and the two parts."""
    rng = random.Random(0)
    parent = random_genome("heart", rng)
    times: dict[str, list[float]] = {"round": [], "render": [], "score": []}
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        images = [render(mutate(parent, rng), size) for _ in range(batch)]
        t1 = time.perf_counter()
        critic.score_images(images).scores()
        t2 = time.perf_counter()
        if r:  # the first is a warm-up (oneDNN picks its kernels)
            times["round"].append(t2 - t0)
            times["render"].append(t1 - t0)
            times["score"].append(t2 - t1)
    return times


def _post(port: int, path: str, body: dict) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = json.loads(resp.read())
        assert resp.status in (200, 201), data
        return data
    finally:
        conn.close()


def bench_picks(critic: Critic, rounds: int, size: int) -> list[float]:
    """The page's wait: one pick request each round, a low-ranked variant each time."""
    with tempfile.TemporaryDirectory() as tmp:
        studio = Studio(critic, Path(tmp) / "studio", EvolveSettings(size=size))
        with StudioService(studio, lambda rows, name: "", "127.0.0.1", 0) as server:
            port = server.server_address[1]
            body = _post(port, "/api/sessions", {"shape": "heart", "seed": 1})
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                body = _post(port, f"/api/sessions/{body['session']}/pick", {"variant": body["variants"][-3]["id"]})
                times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=EvolveSettings.size, help="rendered design side, px")
    args = p.parse_args()

    if args.checkpoint:
        critic = Critic.from_checkpoint(args.checkpoint, batch_size=args.batch, version=Path(args.checkpoint).name)
    else:
        torch.manual_seed(0)
        critic = Critic(NIMA("mobilenet_v2", weights="none"), image_size=96, resize=108, batch_size=args.batch,
                        version="demo-size-bn-calibrated")
        rng = random.Random(1)
        designs = [render(random_genome("star", rng), args.size) for _ in range(16)]
        recalibrate_batchnorm(critic.model, critic.preprocess(designs))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads; model input {critic.image_size} px, designs {args.size} px")
    rounds = bench_rounds(critic, args.rounds, args.batch, args.size)
    print(f"round (render + score {args.batch}), {len(rounds['round'])} rounds: {_quantiles(rounds['round'])}")
    print(f"  of which render {_quantiles(rounds['render'])}; score {_quantiles(rounds['score'])}")
    picks = bench_picks(critic, args.rounds, args.size)
    print(f"POST /pick (a round + PNGs + state, over HTTP), {len(picks)} rounds: {_quantiles(picks)}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
