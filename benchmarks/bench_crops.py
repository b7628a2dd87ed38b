"""Crop throughput: the project's path (ingest/crops.py: JPEG draft decoding + a process pool)
against a naive per-image loop (open, convert, crop, resize, save; no draft; one process), in one run.

    .venv/bin/python benchmarks/bench_crops.py            # 2,000 AVA-like JPEGs, all cores
    .venv/bin/python benchmarks/bench_crops.py --n 500 --workers 2

Sources are generated first (not timed): 640x480 to 1024x768, landscape and portrait, JPEG
quality 90, with photo-like noise so they decode like real photos rather than flat colour.
All files are read once before timing so both paths start from the page cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.crops import CropJob, CropResult, CropSpec, crop_many  # noqa: E402


def generate(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    grain = rng.normal(0, 14, (1100, 1100, 1)).astype(np.float32)  # shared film grain, shifted per image
    paths = []
    for k in range(n):
        w = int(rng.integers(640, 1025))
        h = int(round(w * 3 / 4))
        ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        top, bottom = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
        canvas = top * (1 - ramp) + bottom * ramp
        canvas = np.broadcast_to(canvas, (h, w, 3))
        dy, dx = int(rng.integers(0, 1100 - h + 1)), int(rng.integers(0, 1100 - w + 1))
        arr = np.clip(canvas + grain[dy : dy + h, dx : dx + w], 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            r = int(rng.integers(20, h // 3))
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        if rng.random() < 0.3:
            img = img.transpose(Image.Transpose.ROTATE_90)  # portrait: 480x640 .. 768x1024
        path = folder / f"{k}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


def naive(paths: list[Path], out: Path, size: int = 256) -> int:
    """What a notebook does: full decode, convert, centre crop, resize, save; one process."""
    for path in paths:
        img = Image.open(path).convert("RGB")
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
        img.save(out / path.name, quality=95)
    return len(paths)


def project(paths: list[Path], out: Path, workers: int) -> int:
    jobs = [CropJob(p.stem, str(p), str(out / p.name)) for p in paths]
    ok = sum(isinstance(r, CropResult) for _, r in crop_many(jobs, CropSpec(), workers=workers))
    if ok != len(jobs):
        raise SystemExit(f"project path rejected {len(jobs) - ok} generated images")
    return ok


def timed(label: str, fn, n_cores: int) -> float:
    t0 = time.perf_counter()
    n = fn()
    dt = time.perf_counter() - t0
    print(f"{label:44s} {n} images in {dt:6.1f}s  {n / dt:7.1f} images/s  {n / dt / n_cores:6.1f} images/s/core")
    return n / dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=0, help="0 = all cores")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench_crops_"))
    try:
        src = root / "src"
        src.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        paths = generate(src, args.n)
        print(f"generated {len(paths)} JPEGs (q90, 640x480..1024x768) in {time.perf_counter() - t0:.0f}s")
        for p in paths:  # page cache: neither path pays for the disk
            p.read_bytes()
        outs = {name: root / name for name in ("naive", "project1", "projectN")}
        for o in outs.values():
            o.mkdir(exist_ok=True)
        print(f"cpu cores {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
        base = timed("naive loop (no draft, 1 process)", lambda: naive(paths, outs["naive"]), 1)
        one = timed("project path, 1 process (draft)", lambda: project(paths, outs["project1"], 1), 1)
        many = timed(
            f"project path, {workers} processes (draft + pool)",
            lambda: project(paths, outs["projectN"], workers),
            workers,
        )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print(f"ratio project/naive: {many / base:.2f}x with {workers} processes, {one / base:.2f}x in one process")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
