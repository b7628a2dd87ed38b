"""Scoring throughput of `aesthetic curate` over shards against bare decode + forward of the same samples, on
PyTorch eager and on ONNX Runtime, side by side in one run.

    .venv/bin/python benchmarks/bench_curate.py [--shards 8] [--per-shard 64] [--workers 1] [--reps 3]
    .venv/bin/python benchmarks/bench_curate.py --profile   # where curate's per-image time goes (cProfile)

Both sides decode in `--workers` DataLoader worker processes and run the critic in the main process, batch by
batch, on the CPU (or --device cuda: bf16 + channels_last for both, torch only), with --threads forward threads
(default: the cores this process may use minus the workers, as the verb defaults):
- curate: critic.curate.score_shards on WebDataset shards of 256 px JPEG crops (what our shards hold), i.e. tar
  reading (mapped), decode, perceptual hash, crop, forward, and one Parquet file per shard;
- bare: the same JPEG bytes, already in memory, decoded (nima_train.data.decode_image), centre-cropped and
  forwarded; nothing else.
- curate without detectors: curate with critic.detectors.measure replaced by a constant row (what curate did
  before the quality detectors), so curate / that is the detectors' cost (target >= 0.909: they add at most 10%).
Each round runs the six (bare, curate and curate without detectors, per backend) one after another, so all see
the same machine load; medians of the rounds are compared. Targets: curate on onnxruntime >= 2x curate on torch,
and >= 0.85x bare on onnxruntime. Also images/s per core, and (--memory, default on) each backend's curate in a
fresh process for its peak RSS. The model is a mobilenet_v2 NIMA (weights 'none', BatchNorm statistics measured
on the pictures, as in bench_score.py) at --image-size, exported to ONNX for the onnxruntime side.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from critic.curate import CurateSettings, forward_batch, input_shards, score_shards  # noqa: E402
from critic.onnx_export import export_onnx, open_export  # noqa: E402
from critic.scoring import Critic  # noqa: E402
from critic.settings import default_threads  # noqa: E402
from ingest.sample_data import render_photo  # noqa: E402
from nima_train.data import decode_image  # noqa: E402
from nima_train.model import NIMA, recalibrate_batchnorm  # noqa: E402
from nima_train.transforms import center_crop  # noqa: E402
from warehouse.models_lookup import ResolvedModel  # noqa: E402


def write_shards(folder: Path, n_shards: int, per_shard: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    blobs = []
    for s in range(n_shards):
        with wds.TarWriter(str(folder / f"shard-{s:04d}.tar")) as sink:
            for i in range(per_shard):
                buf = io.BytesIO()
                render_photo(rng, float(rng.random()), 256, 256).save(buf, "JPEG", quality=90)
                blobs.append(buf.getvalue())
                sink.write({"__key__": f"s{s}_{i}", "jpg": blobs[-1], "json": b"{}"})
    return blobs


class _Bare(IterableDataset):
    def __init__(self, blobs: list[bytes], batch: int, size: int, resize: int) -> None:
        super().__init__()
        self.blobs, self.batch, self.size, self.resize = blobs, batch, size, resize

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        chunks = [self.blobs[i : i + self.batch] for i in range(0, len(self.blobs), self.batch)]
        for chunk in chunks if info is None else chunks[info.id :: info.num_workers]:
            yield torch.stack([center_crop(decode_image(b), self.size, self.resize).contiguous() for b in chunk])


def bare(critic: Critic, blobs: list[bytes], batch: int, workers: int) -> float:
    started = time.perf_counter()
    loader = DataLoader(_Bare(blobs, batch, critic.image_size, critic.resize), batch_size=None,
                        num_workers=workers, prefetch_factor=4 if workers else None)
    n = 0
    for images in loader:
        forward_batch(critic, images)
        n += len(images)
    assert n == len(blobs)
    return time.perf_counter() - started


def curate_scoring(critic: Critic, folder: Path, out: Path, batch: int, workers: int, detect: bool = True) -> float:
    import critic.detectors as detectors

    shards = input_shards([str(p) for p in sorted(folder.glob("*.tar"))])
    measure = detectors.measure
    if not detect:  # set before the DataLoader forks its workers, so they inherit it
        off = {**dict.fromkeys(detectors.COLUMNS, 0), "pixel_hash": "off"}
        detectors.measure = lambda *_: off
    started = time.perf_counter()
    try:
        result = score_shards(critic, shards, out, CurateSettings(batch_size=batch, workers=workers))
    finally:
        detectors.measure = measure
    assert len(result.scored) == len(shards) and not result.failed
    return time.perf_counter() - started


def peak_rss_mb() -> float:
    """This process's peak RSS since its exec (VmHWM): getrusage's ru_maxrss keeps the parent's from before it."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def make_critics(blobs: list[bytes], args: argparse.Namespace, folder: Path, onnx: bool = True) -> dict[str, Critic]:
    torch.manual_seed(0)
    model = NIMA("mobilenet_v2", weights="none")
    probe = Critic(model, image_size=args.image_size)
    recalibrate_batchnorm(model, probe.preprocess([decode_crop_pil(b) for b in blobs[:32]]))
    torch_critic = Critic(model, image_size=args.image_size, batch_size=args.batch_size, device=args.device,
                          version="bench", threads=args.threads)
    if not onnx:
        return {"torch": torch_critic}
    out = folder / "bench.onnx"
    export_onnx(torch_critic, ResolvedModel("bench", "bench", folder / "none.pt", "0" * 64, None), out, 18,
                "torchscript")
    return {"torch": torch_critic, "onnxruntime": open_export(out, threads=args.threads,
                                                              batch_size=args.batch_size)}


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--per-shard", type=int, default=64)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="default: the cores allowed minus --workers")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--profile", action="store_true", help="cProfile one curate run per backend with 0 workers")
    p.add_argument("--child", choices=("torch", "onnxruntime"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--onnx", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.threads = args.threads or default_threads(args.workers)
    return args


def main() -> None:
    args = _args()
    cores = len(os.sched_getaffinity(0))
    if not args.child:
        print(f"load average before: {os.getloadavg()}, cores: {cores}, forward threads: {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        blobs = write_shards(folder, args.shards, args.per_shard)
        if args.child:  # one backend's curate in this fresh process: its seconds and peak RSS
            critics = ({"onnxruntime": open_export(args.onnx, threads=args.threads, batch_size=args.batch_size)}
                       if args.child == "onnxruntime" else make_critics(blobs, args, Path(tmp), onnx=False))
            seconds = curate_scoring(critics[args.child], folder, Path(tmp) / "out", args.batch_size, args.workers)
            print(json.dumps({"seconds": seconds, "rss_mb": peak_rss_mb()}))
            return
        critics = make_critics(blobs, args, Path(tmp))
        if args.profile:
            profile(critics, folder, Path(tmp), args)
            return
        n = len(blobs)
        times: dict[str, list[float]] = {f"{k} {b}": [] for b in critics for k in ("bare", "curate", "no-detect")}
        for rep in range(args.reps):
            for b, critic in critics.items():
                times[f"bare {b}"].append(bare(critic, blobs, args.batch_size, args.workers))
                times[f"curate {b}"].append(curate_scoring(critic, folder, Path(tmp) / f"out-{b}-{rep}",
                                                           args.batch_size, args.workers))
                times[f"no-detect {b}"].append(curate_scoring(critic, folder, Path(tmp) / f"off-{b}-{rep}",
                                                              args.batch_size, args.workers, detect=False))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{n} samples of 256 px JPEG in {args.shards} shards, {args.image_size} px model input, batch "
              f"{args.batch_size}, {args.workers} workers, {args.threads} forward threads, device {args.device}, "
              f"median of {args.reps} rounds")
        for name, t in med.items():
            rate = n / t
            print(f"  {name:19s} {t:6.2f} s  ({', '.join(f'{x:.2f}' for x in times[name])})  {rate:7.1f} images/s  "
                  f"{rate / cores:6.1f} images/s per core")
        print(f"  curate onnxruntime / curate torch: {med['curate torch'] / med['curate onnxruntime']:.2f}x "
              f"(target >= 2); curate / bare on onnxruntime: {med['bare onnxruntime'] / med['curate onnxruntime']:.3f}"
              f" (target >= 0.85); on torch: {med['bare torch'] / med['curate torch']:.3f}")
        for b in critics:
            print(f"  curate / curate without detectors on {b}: {med[f'no-detect {b}'] / med[f'curate {b}']:.3f} "
                  "(target >= 0.909: the detectors add at most 10%)")
        if args.memory:
            memory(args, Path(tmp) / "bench.onnx")
    print(f"load average after: {os.getloadavg()}")


def memory(args: argparse.Namespace, onnx_file: Path) -> None:
    """Each backend's curate in a fresh process: its peak RSS (the main process, and the largest worker). The
    onnxruntime one opens the export only, as `aesthetic curate --backend onnxruntime` does."""
    for backend in ("torch", "onnxruntime"):
        cmd = [sys.executable, __file__, "--child", backend, "--shards", str(args.shards), "--per-shard",
               str(args.per_shard), "--workers", str(args.workers), "--threads", str(args.threads),
               "--batch-size", str(args.batch_size), "--image-size", str(args.image_size), "--onnx", str(onnx_file)]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(f"  peak RSS, curate on {backend:11s}: {r['rss_mb']:.0f} MB, the main process ({r['seconds']:.2f} s)")


def profile(critics: dict[str, Critic], folder: Path, tmp: Path, args: argparse.Namespace) -> None:
    """cProfile of one curate run per backend with 0 workers (decode in this process, so the profile sees it):
    the functions that take the most time, per image."""
    import cProfile
    import pstats

    n = args.shards * args.per_shard
    for backend, critic in critics.items():
        curate_scoring(critic, folder, tmp / f"warm-{backend}", args.batch_size, 0)
        prof = cProfile.Profile()
        prof.enable()
        seconds = curate_scoring(critic, folder, tmp / f"prof-{backend}", args.batch_size, 0)
        prof.disable()
        print(f"curate on {backend}, 0 workers, {args.threads} threads: {seconds:.2f} s for {n} images, "
              f"{seconds / n * 1000:.2f} ms per image; by own time (ms per image):")
        stats = pstats.Stats(prof)
        rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:14]
        for (file, line, fn), (_, calls, own, cum, _) in rows:
            print(f"  {own / n * 1000:7.3f} own {cum / n * 1000:7.3f} cum  {calls:7d} calls  "
                  f"{Path(file).name}:{line} {fn}")


def decode_crop_pil(blob: bytes):
    from critic.scoring import decode_image as decode

    return decode(blob)


if __name__ == "__main__":
    main()
