"""The critic's forward on PyTorch eager against ONNX Runtime, and the service on each, side by side in one run.

1. Bare forward, per backbone (default mobilenet_v2 and resnet50): a batch of --batch designs at --image-size
   through PyTorch eager (`model.embed` + head, what the torch backend runs) and through the same model exported
   to ONNX on ONNX Runtime's CPU provider, both with --threads threads. Paired rounds (one of each, alternating),
   medians; images/s and images/s per core, and the ratio (target for mobilenet_v2 at 224 px: >= 2.5x).
   Also the critic's `score_images` (preprocessing + forward + moments) per backend.
2. The HTTP service on 127.0.0.1 per backend, each in a fresh process (so its peak RSS is its own): p50/p95 of
   --requests POSTs of one PNG design and of --requests / 4 multipart requests of 32 designs, concurrency 1,
   and the process's peak RSS.

    .venv/bin/python benchmarks/bench_score.py [--reps 7] [--requests 80] [--backbones mobilenet_v2,resnet50]

Models are NIMA with weights 'none' whose BatchNorm statistics are measured on the designs (an untrained net's
activations are ~1e-8, denormal-range numbers that would make the CPU timings unrepresentative).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from critic.designs import SHAPES, random_genome, render  # noqa: E402
from critic.onnx_export import export_onnx, open_export  # noqa: E402
from critic.scoring import Critic  # noqa: E402
from critic.settings import default_threads  # noqa: E402
from nima_train.model import NIMA, recalibrate_batchnorm  # noqa: E402
from warehouse.models_lookup import ResolvedModel  # noqa: E402


def peak_rss_mb() -> float:
    """This process's peak RSS since its exec (VmHWM): getrusage's ru_maxrss keeps the parent's from before it."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def designs(n: int) -> list:
    rng = random.Random(0)
    return [render(random_genome(SHAPES[i % len(SHAPES)], rng), 256) for i in range(n)]


def critics(backbone: str, image_size: int, batch: int, threads: int, folder: Path,
            onnx: bool = True) -> dict[str, Critic]:
    """The torch critic of a BN-calibrated NIMA and (onnx) the onnxruntime critic of its export."""
    torch.manual_seed(0)
    model = NIMA(backbone, weights="none")
    probe = Critic(model, image_size=image_size)
    recalibrate_batchnorm(model, probe.preprocess(designs(16)))
    torch_critic = Critic(model, image_size=image_size, batch_size=batch, version="bench", threads=threads)
    if not onnx:
        return {"torch": torch_critic}
    out = folder / f"{backbone}.onnx"
    export_onnx(torch_critic, ResolvedModel("bench", backbone, folder / "none.pt", "0" * 64, None), out, 18,
                "torchscript")
    return {"torch": torch_critic, "onnxruntime": open_export(out, threads=threads, batch_size=batch)}


def paired(fns: dict, reps: int) -> dict[str, list[float]]:
    for fn in fns.values():  # warm-up: oneDNN and ONNX Runtime pick their kernels on the first calls
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def bench_forward(backbone: str, args: argparse.Namespace, folder: Path) -> None:
    pair = critics(backbone, args.image_size, args.batch, args.threads, folder)
    imgs = designs(args.batch)
    x = pair["torch"].preprocess(imgs)
    fns = {f"bare {b}": (lambda c=c: c.backend.run(x)) for b, c in pair.items()}
    fns |= {f"score_images {b}": (lambda c=c: c.score_images(imgs)) for b, c in pair.items()}
    times = paired(fns, args.reps)
    med = {k: statistics.median(v) for k, v in times.items()}
    cores = len(os.sched_getaffinity(0))
    print(f"{backbone}: batch {args.batch} at {args.image_size} px, {args.threads} threads, {cores} cores, "
          f"median of {args.reps} paired rounds")
    for name, t in med.items():
        rate = args.batch / t
        print(f"  {name:26s} {t * 1000:8.1f} ms  {rate:7.1f} img/s  {rate / cores:6.1f} img/s per core")
    print(f"  ratio onnxruntime / torch, bare forward: {med['bare torch'] / med['bare onnxruntime']:.2f}x; "
          f"score_images: {med['score_images torch'] / med['score_images onnxruntime']:.2f}x")
    cost = {b: med[f"score_images {b}"] / med[f"bare {b}"] for b in ("torch", "onnxruntime")}
    print(f"  score_images / bare forward (preprocessing's cost): torch {cost['torch']:.2f}x, onnxruntime "
          f"{cost['onnxruntime']:.2f}x (target at most 1.2x)")


def _multipart(payloads: list[bytes]) -> tuple[bytes, str]:
    boundary = "benchboundary"
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"f{i}\"; filename=\"d{i}.png\"\r\n"
                    f"Content-Type: image/png\r\n\r\n".encode() + p + b"\r\n" for i, p in enumerate(payloads))
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _latencies(address, body: bytes, ctype: str, n: int) -> list[float]:
    conn = http.client.HTTPConnection(*address, timeout=300)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            conn.request("POST", "/score", body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
            out.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return out


def serve_child(backend: str, args: argparse.Namespace) -> None:
    """One backend's service in this (fresh) process: latencies and peak RSS as one JSON line. The onnxruntime
    one opens the parent's export only (no PyTorch model is built), as `aesthetic serve --backend onnxruntime`."""
    from critic.service import Limits, make_server

    with tempfile.TemporaryDirectory() as tmp:
        if backend == "onnxruntime":
            critic = open_export(args.onnx, threads=args.threads, batch_size=32)
        else:
            critic = critics(args.backbones.split(",")[0], args.image_size, 32, args.threads, Path(tmp),
                             onnx=False)[backend]
        pngs = []
        for d in designs(32):
            buf = io.BytesIO()
            d.save(buf, format="PNG")
            pngs.append(buf.getvalue())
        server = make_server(critic, "127.0.0.1", 0, Limits()).start()
        try:
            _latencies(server.server_address, pngs[0], "image/png", 3)  # warm-up
            one = _latencies(server.server_address, pngs[0], "image/png", args.requests)
            body, ctype = _multipart(pngs)
            many = _latencies(server.server_address, body, ctype, max(4, args.requests // 4))
        finally:
            server.stop()
    q = {name: statistics.quantiles(v, n=100) for name, v in (("one", one), ("32", many))}
    print(json.dumps({"backend": backend, "p50_one_ms": q["one"][49] * 1000, "p95_one_ms": q["one"][94] * 1000,
                      "p50_32_ms": q["32"][49] * 1000, "p95_32_ms": q["32"][94] * 1000,
                      "peak_rss_mb": peak_rss_mb()}))


def bench_service(args: argparse.Namespace, onnx_file: Path) -> None:
    print(f"service ({args.backbones.split(',')[0]}, {args.image_size} px, {args.threads} threads, concurrency 1): "
          f"{args.requests} requests of one PNG, {max(4, args.requests // 4)} of 32; each backend in a fresh process")
    for backend in ("torch", "onnxruntime"):
        cmd = [sys.executable, __file__, "--serve-child", backend, "--requests", str(args.requests), "--image-size",
               str(args.image_size), "--threads", str(args.threads), "--backbones", args.backbones,
               "--onnx", str(onnx_file)]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        r = json.loads(line)
        print(f"  {backend:11s} one image p50 {r['p50_one_ms']:7.1f} ms p95 {r['p95_one_ms']:7.1f} ms; 32 images "
              f"p50 {r['p50_32_ms']:7.1f} ms p95 {r['p95_32_ms']:7.1f} ms; peak RSS {r['peak_rss_mb']:.0f} MB")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default="mobilenet_v2,resnet50")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=default_threads(0))
    p.add_argument("--requests", type=int, default=80, help="0 skips the service")
    p.add_argument("--serve-child", choices=("torch", "onnxruntime"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--onnx", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_child:
        serve_child(args.serve_child, args)
        return 0
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in args.backbones.split(","):
            bench_forward(backbone, args, Path(tmp))
        if args.requests:
            bench_service(args, Path(tmp) / f"{args.backbones.split(',')[0]}.onnx")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
