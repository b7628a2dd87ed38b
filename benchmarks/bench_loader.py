"""Loader throughput: WebDataset shards vs a per-file JPEG Dataset vs bare PIL decode, measured in one run.

    .venv/bin/python benchmarks/bench_loader.py --n 2000 --workers 2 [--gpu]

All three read the same 256x256 crops (JPEG q95, 4:4:4, as ingest/crops.py writes them). The two loaders do the
full training input path: decode, train_transform (random 224 crop + flip + ImageNet normalisation), batches of
64, `--workers` DataLoader workers. Bare decode is PIL decoding the same bytes from memory in one process.
Per-core figures divide a loader's rate by its worker count. With --gpu (and CUDA present) it also measures
MobileNetV2 training steps/s at batch 64 (bf16 autocast, channels_last) to say how many loader cores one GPU
needs. Targets (issue 6): shards >= files, and bare-decode per core <= 1.3x shards per core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.crops import encode_jpeg, sha256_bytes  # noqa: E402
from ingest.shards import ShardLimits, ShardSample, write_split  # noqa: E402
from nima_train.data import decode_jpg, make_loader, shard_urls, split_transform  # noqa: E402
from nima_train.transforms import train_transform  # noqa: E402


def photo_like(rng: np.random.Generator, size: int = 256) -> Image.Image:
    """Gradient sky, a few soft shapes and sensor-like noise: compresses about like a real photo crop."""
    y, x = np.mgrid[0:size, 0:size] / size
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    arr = top * (1 - y[..., None]) + bottom * y[..., None] + 20 * np.sin(8 * x[..., None] + rng.uniform(0, 6, 3))
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(10, size // 2, 2)
        draw.ellipse([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    img = img.filter(ImageFilter.GaussianBlur(1.5))
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def make_crops(folder: Path, n: int, seed: int) -> list[ShardSample]:
    rng = np.random.default_rng(seed)
    samples = []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        data = encode_jpeg(photo_like(rng))
        path = folder / f"{i}.jpg"
        path.write_bytes(data)
        counts = tuple(int(c) for c in rng.integers(1, 30, 10))
        p = tuple(c / sum(counts) for c in counts)
        mean = sum((k + 1) * q for k, q in enumerate(p))
        samples.append(ShardSample("bench", str(i), "train", str(path), sha256_bytes(data), counts, p, mean, 1.0))
    return samples


class FileDataset(Dataset):
    """The per-file baseline: one JPEG file per sample, labels in memory."""

    def __init__(self, samples: list[ShardSample], uint8: bool = False) -> None:
        self.paths = [s.path for s in samples]
        self.targets = torch.tensor([s.target for s in samples], dtype=torch.float32)
        self.transform = split_transform(True)[0] if uint8 else train_transform(224)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with open(self.paths[i], "rb") as fh:
            img = decode_jpg(fh.read())
        return self.transform(img), self.targets[i]


def timed_pass(loader: object) -> tuple[int, float]:
    start = time.perf_counter()
    n = 0
    for images, _ in loader:
        n += images.shape[0]
    return n, time.perf_counter() - start


def bench_loader(make: object, repeats: int) -> float:
    """Median images/s over `repeats` full passes (after one warm-up pass that also warms the page cache)."""
    timed_pass(make())
    rates = []
    for _ in range(repeats):
        n, dt = timed_pass(make())
        rates.append(n / dt)
    return statistics.median(rates)


def bench_bare_decode(blobs: list[bytes], repeats: int) -> float:
    rates = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for b in blobs:
            decode_jpg(b)
        rates.append(len(blobs) / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def bench_decode_transform(blobs: list[bytes], repeats: int) -> float:
    transform = train_transform(224)
    rates = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for b in blobs:
            transform(decode_jpg(b))
        rates.append(len(blobs) / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def bench_mobilenet(batch: int = 64, steps: int = 30) -> float | None:
    if not torch.cuda.is_available():
        return None
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2(num_classes=10).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    y = torch.softmax(torch.randn(batch, 10, device="cuda"), 1)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.kl_div(torch.log_softmax(model(x), 1), y, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(10):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of crops")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shard-samples", type=int, default=250)
    parser.add_argument("--gpu", action="store_true", help="also time MobileNetV2 training steps on CUDA")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per worker/process, so per-core figures mean what they say

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        samples = make_crops(tmp / "crops", args.n, seed=0)
        result = write_split(samples, tmp / "shards", "bench", "train", limits=ShardLimits(args.shard_samples))
        urls = shard_urls(result.index_path)
        blobs = [Path(s.path).read_bytes() for s in samples]
        mean_kb = sum(map(len, blobs)) / len(blobs) / 1024
        print(f"{args.n} crops of 256x256, mean {mean_kb:.1f} KiB; {len(urls)} shards; cores visible: {os.cpu_count()}")

        bare = bench_bare_decode(blobs, args.repeats)
        decode_aug = bench_decode_transform(blobs, args.repeats)
        rates = {}
        for uint8 in (False, True):
            rates["files", uint8] = bench_loader(
                lambda u=uint8: DataLoader(
                    FileDataset(samples, u),
                    batch_size=args.batch,
                    shuffle=True,
                    num_workers=args.workers,
                    drop_last=True,
                ),
                args.repeats,
            )
            rates["shards", uint8] = bench_loader(
                lambda u=uint8: make_loader(
                    urls, train=True, batch_size=args.batch, num_workers=args.workers, shuffle_buffer=1000, uint8=u
                ),
                args.repeats,
            )

    w = args.workers
    print(f"{'path':50s} {'images/s':>10s} {'per core':>10s}")
    print(f"{'bare PIL decode (1 process, bytes in memory)':50s} {bare:10.0f} {bare:10.0f}")
    print(f"{'decode + train_transform (1 process)':50s} {decode_aug:10.0f} {decode_aug:10.0f}")
    for (kind, uint8), rate in rates.items():
        label = f"{'WebDataset shards' if kind == 'shards' else 'per-file Dataset'}, {'uint8' if uint8 else 'float32'}"
        print(f"{f'{label}, {w} workers, batch {args.batch}':50s} {rate:10.0f} {rate / w:10.0f}")
    for uint8 in (False, True):
        shards, files = rates["shards", uint8], rates["files", uint8]
        mode = "uint8 batches" if uint8 else "float32 batches"
        print(
            f"{mode}: shards / files {shards / files:.2f}x (target >= 1.0);"
            f" bare decode per core / shards per core {bare / (shards / w):.2f}x (target <= 1.3)"
        )
    shards = max(rates["shards", False], rates["shards", True])
    gpu = bench_mobilenet(args.batch) if args.gpu else None
    if gpu:
        name = torch.cuda.get_device_name()
        print(f"MobileNetV2 train step on {name}, batch {args.batch}, bf16: {gpu:.0f} images/s")
        print(f"loader cores to keep it fed from shards: {gpu / (shards / w):.1f}")


if __name__ == "__main__":
    main()
