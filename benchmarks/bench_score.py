"""Critic overhead and service latency, measured side by side in one run.

1. A batch of 32 designs at 224 px model input on the CPU: the critic's `score_images`
   (preprocessing + forward + moments + features, what `evolve` and `serve` call) and
   `score_sources` over the same designs saved as PNG files (what `aesthetic score`
   runs: read, verify, crop, then the same), against a bare `model(x)` on the
   already-prepared tensors. Target: score_images / bare <= 1.2.
2. The HTTP service on 127.0.0.1: N requests of one PNG design at concurrency C, p50/p95.

    .venv/bin/python benchmarks/bench_score.py [--checkpoint model.pt] [--reps 5] [--requests 200]

Without --checkpoint it times a mobilenet_v2 NIMA with weights 'none' whose BatchNorm
statistics are measured on the designs (an untrained net's activations are ~1e-8,
denormal-range numbers that would make the CPU timings unrepresentative).
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_serve import run_clients  # noqa: E402  (benchmarks/ is the script's folder, first on sys.path)

from critic.designs import SHAPES, random_genome, render  # noqa: E402
from critic.scoring import Critic  # noqa: E402
from critic.service import make_server  # noqa: E402
from nima_train.model import NIMA, recalibrate_batchnorm  # noqa: E402


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_batch(critic: Critic, designs: list, reps: int) -> None:
    x = critic.preprocess(designs)

    def bare() -> None:
        with torch.inference_mode():
            critic.model(x)

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, img in enumerate(designs):
            paths.append(Path(tmp) / f"d{i:02d}.png")
            img.save(paths[-1])
        runs = {
            "bare model(x)": bare,
            "score_images(designs)": lambda: critic.score_images(designs).scores(),
            "score_sources(png files)": lambda: list(critic.score_sources(paths)),
        }
        for fn in runs.values():  # warm-up: oneDNN picks its kernels on the first calls
            fn()
            fn()
        # Interleave the repetitions so that load from other processes hits all three alike.
        samples: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(reps):
            for name, fn in runs.items():
                samples[name].append(_median_time(fn, 1))
    base = statistics.median(samples["bare model(x)"])
    print(f"batch of {len(designs)} designs, {critic.image_size} px input, {torch.get_num_threads()} threads, "
          f"median of {reps}:")
    for name, ts in samples.items():
        med = statistics.median(ts)
        print(f"  {name:26s} {med * 1000:8.1f} ms  {len(designs) / med:6.1f} img/s  ratio {med / base:.3f}")


def bench_service(critic: Critic, design, requests: int, concurrency: int) -> None:
    buf = io.BytesIO()
    design.save(buf, format="PNG")
    payload = buf.getvalue()
    server = make_server(critic, "127.0.0.1", 0).start()
    try:
        t0 = time.perf_counter()
        latencies, errors = run_clients(server, payload, requests, concurrency)  # the load bench_serve.py puts
        wall = time.perf_counter() - t0
    finally:
        server.stop()
    q = statistics.quantiles(latencies, n=100)
    print(f"service: {requests} POST /score of one {design.width}px PNG at concurrency {concurrency}, "
          f"{critic.image_size} px input: {requests / wall:.1f} req/s, p50 {q[49] * 1000:.0f} ms, "
          f"p95 {q[94] * 1000:.0f} ms, errors {errors}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()

    rng = random.Random(0)
    designs = [render(random_genome(SHAPES[i % len(SHAPES)], rng), 256) for i in range(args.batch)]
    if args.checkpoint:
        critic = Critic.from_checkpoint(args.checkpoint, image_size=args.image_size, batch_size=args.batch,
                                        version=Path(args.checkpoint).parent.name)
    else:
        torch.manual_seed(0)
        critic = Critic(NIMA("mobilenet_v2", weights="none"), image_size=args.image_size, batch_size=args.batch,
                        version="random-bn-calibrated")
        recalibrate_batchnorm(critic.model, critic.preprocess(designs[:16]))
    bench_batch(critic, designs, args.reps)
    if args.requests:
        bench_service(critic, designs[0], args.requests, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
