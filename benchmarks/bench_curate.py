"""Scoring throughput of `aesthetic curate` over shards against bare decode + forward of the same samples.

    .venv/bin/python benchmarks/bench_curate.py [--shards 8] [--per-shard 64] [--workers 2] [--reps 2]

Both sides decode in `--workers` DataLoader worker processes and run the critic in the main process, batch by
batch, on the CPU (or --device cuda: bf16 + channels_last for both):
- curate: critic.curate.score_shards on WebDataset shards of 256 px JPEG crops (what our shards hold), i.e. tar
  reading (mapped), decode, perceptual hash, crop, forward, and one Parquet file per shard;
- bare: the same JPEG bytes, already in memory, decoded (nima_train.data.decode_image), centre-cropped and
  forwarded; nothing else.
- curate without detectors: the same as curate with critic.detectors.measure replaced by a constant row (what
  curate did before the quality detectors), so curate / that is the detectors' cost (target: >= 0.909, i.e. the
  detectors add at most 10%).
Runs alternate, so all see the same machine load; the best of --reps each is compared. Target: curate >= 0.85x
bare. Also images/s per core. The model is a mobilenet_v2 NIMA (weights 'none', BatchNorm statistics measured
on the pictures, as in bench_score.py) at --image-size, or --checkpoint.
"""

from __future__ import annotations

import argparse
import io
import os
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
from critic.scoring import Critic  # noqa: E402
from ingest.sample_data import render_photo  # noqa: E402
from nima_train.data import decode_image  # noqa: E402
from nima_train.model import NIMA, recalibrate_batchnorm  # noqa: E402
from nima_train.transforms import center_crop  # noqa: E402


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--per-shard", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", default=None)
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"load average before: {os.getloadavg()}, cores: {cores}, torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        blobs = write_shards(folder, args.shards, args.per_shard)
        if args.checkpoint:
            critic = Critic.from_checkpoint(args.checkpoint, batch_size=args.batch_size, device=args.device)
        else:
            model = NIMA("mobilenet_v2", weights="none")
            probe = Critic(model, image_size=args.image_size)
            recalibrate_batchnorm(model, probe.preprocess([decode_crop_pil(b) for b in blobs[:32]]))
            critic = Critic(model, image_size=args.image_size, batch_size=args.batch_size, device=args.device,
                            version="bench")
        n = len(blobs)
        times: dict[str, list[float]] = {"curate": [], "bare": [], "no_detect": []}
        for rep in range(args.reps):
            times["bare"].append(bare(critic, blobs, args.batch_size, args.workers))
            times["curate"].append(curate_scoring(critic, folder, Path(tmp) / f"out{rep}", args.batch_size,
                                                  args.workers))
            times["no_detect"].append(curate_scoring(critic, folder, Path(tmp) / f"off{rep}", args.batch_size,
                                                     args.workers, detect=False))
        best = {k: min(v) for k, v in times.items()}
        print(f"{n} samples of 256 px JPEG in {args.shards} shards, {critic.image_size} px model input, batch "
              f"{args.batch_size}, {args.workers} workers, device {args.device}")
        for name in ("bare", "curate", "no_detect"):
            rate = n / best[name]
            print(f"  {name:7s} best {best[name]:6.2f} s  ({', '.join(f'{t:.2f}' for t in times[name])})  "
                  f"{rate:7.1f} images/s  {rate / cores:6.1f} images/s per core")
        print(f"  ratio curate / bare throughput: {best['bare'] / best['curate']:.3f} (target >= 0.85)")
        print(f"  ratio curate / curate without detectors: {best['no_detect'] / best['curate']:.3f} (target >= "
              f"0.909: the detectors add at most 10%)")
    print(f"load average after: {os.getloadavg()}")


def decode_crop_pil(blob: bytes):
    from critic.scoring import decode_image as decode

    return decode(blob)


if __name__ == "__main__":
    main()
