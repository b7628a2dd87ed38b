"""PyTorch eager's CPU forward with glibc's default allocator against common/allocator.keep_freed_memory(), which
the scoring backends set: each side in a fresh process, the two alternating in pairs, medians compared.

    .venv/bin/python benchmarks/bench_allocator.py [--pairs 3] [--batches 5] [--backbone mobilenet_v2]

A side builds a NIMA (weights 'none', BatchNorm statistics measured on pictures, as in bench_score.py so that no
denormal activations distort the timing), forwards one warm-up batch and then --batches batches of --batch images
at --image-size px, and reports its median batch time, the minor page faults per batch and its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    import resource
    import time

    import torch

    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_score import designs
    from common.allocator import keep_freed_memory
    from nima_train.model import NIMA, recalibrate_batchnorm
    from nima_train.transforms import eval_transform

    if args.child == "keep":
        assert keep_freed_memory()
    torch.manual_seed(0)
    model = NIMA(args.backbone, weights="none").eval()
    # Not through critic.scoring.Critic: its backend would set the allocator on the default side too.
    transform = eval_transform(args.image_size, resize=round(args.image_size * 256 / 224))
    x = torch.stack([transform(img) for img in designs(args.batch)])
    recalibrate_batchnorm(model, x[:16])
    times, faults = [], []
    with torch.inference_mode():
        model(x)
        for _ in range(args.batches):
            f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"s": statistics.median(times), "faults": statistics.median(faults), "rss_mb": peak}))


def side(mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--backbone", args.backbone, "--batch", str(args.batch),
           "--image-size", str(args.image_size), "--batches", str(args.batches)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="mobilenet_v2")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batches", type=int, default=5)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--child", choices=("default", "keep"), default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.backbone}, batch "
          f"{args.batch} at {args.image_size} px, torch eager on the CPU, {args.pairs} pairs of fresh processes")
    runs: dict[str, list[dict]] = {"default": [], "keep": []}
    for _ in range(args.pairs):
        for mode in runs:
            runs[mode].append(side(mode, args))
    for mode, rows in runs.items():
        s = statistics.median(r["s"] for r in rows)
        print(f"  {mode:8s} {s * 1000:8.1f} ms/batch  {args.batch / s:6.1f} img/s  "
              f"{statistics.median(r['faults'] for r in rows):8.0f} page faults/batch  "
              f"peak RSS {statistics.median(r['rss_mb'] for r in rows):6.0f} MB   (batches: "
              + ", ".join(f"{r['s'] * 1000:.0f}" for r in rows) + " ms)")
    ratio = statistics.median(d["s"] / k["s"] for d, k in zip(runs["default"], runs["keep"], strict=True))
    print(f"  keep_freed_memory / glibc default: {ratio:.2f}x faster (median of the pairs' ratios)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
