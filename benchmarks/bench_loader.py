"""Loader throughput: WebDataset shards vs a per-file JPEG Dataset vs bare JPEG decode, measured in one run.

    .venv/bin/python benchmarks/bench_loader.py --n 2000 --workers 2 [--gpu]

All read the same 256x256 crops (JPEG q95, 4:4:4, as ingest/crops.py writes them). The two loaders do the full
training input path with the reader's own functions: decode (nima_train.data.decode_image: torchvision's
libjpeg-turbo decode_jpeg straight to a uint8 CHW tensor), random 224 crop + flip by tensor slicing
(nima_train.transforms.random_crop_flip), batches of 64 (float32 batches: ImageNet `normalize` per batch in the
worker; uint8 batches: left to the consumer's device), `--workers` DataLoader workers. Bare decode is one process
decoding the same bytes from memory, twice: with PIL (Image.load) and with torchvision.io.decode_jpeg. Single-process
decode + augment is shown both ways too (PIL + train_transform, the earlier reader path; decode_image +
random_crop_flip, the current one). Per-core figures divide a loader's rate by its worker count. With --gpu (and
CUDA present) it also measures MobileNetV2 training steps/s at batch 64 (bf16 autocast, channels_last) to say how
many loader cores one GPU needs. Targets (issue 6): shards >= files, and bare-decode per core <= 1.3x shards per
core (printed against both decoders).
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
from torchvision.io import ImageReadMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.crops import encode_jpeg, sha256_bytes  # noqa: E402
from ingest.shards import ShardLimits, ShardSample, write_split  # noqa: E402
from nima_train.data import decode_image, decode_jpeg, decode_jpg, make_loader, shard_urls  # noqa: E402
from nima_train.transforms import normalize, random_crop_flip, train_transform  # noqa: E402


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
    """The per-file baseline: one JPEG file per sample, labels in memory, the reader's decode and crop."""

    def __init__(self, samples: list[ShardSample]) -> None:
        self.paths = [s.path for s in samples]
        self.targets = torch.tensor([s.target for s in samples], dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with open(self.paths[i], "rb") as fh:
            return random_crop_flip(decode_image(fh.read()), 224), self.targets[i]


def collate_normalised(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack, then normalise the whole batch in the worker: what make_loader does for float32 batches."""
    images, targets = zip(*items, strict=True)
    return normalize(torch.stack(images)), torch.stack(targets)


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


def bench_single(blobs: list[bytes], work: object, repeats: int) -> float:
    """Median images/s of `work(blob)` over the blobs in one process (first pass is a warm-up)."""
    rates = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for b in blobs:
            work(b)
        rates.append(len(blobs) / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def bare_decode_jpeg(data: bytes) -> torch.Tensor:
    # bytearray as in decode_image (torch.frombuffer warns on read-only bytes); the copy is part of the cost.
    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


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

        pil_augment = train_transform(224)
        single = {
            "bare PIL decode": bench_single(blobs, decode_jpg, args.repeats),
            "bare decode_jpeg": bench_single(blobs, bare_decode_jpeg, args.repeats),
            "PIL decode + train_transform (earlier path)": bench_single(
                blobs, lambda b: pil_augment(decode_jpg(b)), args.repeats
            ),
            "decode_image + random_crop_flip (reader path)": bench_single(
                blobs, lambda b: random_crop_flip(decode_image(b), 224), args.repeats
            ),
        }
        rates = {}
        for uint8 in (False, True):
            rates["files", uint8] = bench_loader(
                lambda u=uint8: DataLoader(
                    FileDataset(samples),
                    batch_size=args.batch,
                    shuffle=True,
                    num_workers=args.workers,
                    drop_last=True,
                    collate_fn=None if u else collate_normalised,
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
    print(f"{'path':60s} {'images/s':>10s} {'per core':>10s}")
    for label, rate in single.items():
        print(f"{label + ' (1 process)':60s} {rate:10.0f} {rate:10.0f}")
    for (kind, uint8), rate in rates.items():
        label = f"{'WebDataset shards' if kind == 'shards' else 'per-file Dataset'}, {'uint8' if uint8 else 'float32'}"
        print(f"{f'{label}, {w} workers, batch {args.batch}':60s} {rate:10.0f} {rate / w:10.0f}")
    for uint8 in (False, True):
        shards, files = rates["shards", uint8], rates["files", uint8]
        mode = "uint8 batches" if uint8 else "float32 batches"
        print(
            f"{mode}: shards / files {shards / files:.2f}x (target >= 1.0);"
            f" bare decode per core / shards per core: PIL {single['bare PIL decode'] / (shards / w):.2f}x,"
            f" decode_jpeg {single['bare decode_jpeg'] / (shards / w):.2f}x (target <= 1.3)"
        )
    shards = max(rates["shards", False], rates["shards", True])
    gpu = bench_mobilenet(args.batch) if args.gpu else None
    if gpu:
        name = torch.cuda.get_device_name()
        print(f"MobileNetV2 train step on {name}, batch {args.batch}, bf16: {gpu:.0f} images/s")
        print(f"loader cores to keep it fed from shards: {gpu / (shards / w):.1f}")


if __name__ == "__main__":
    main()
