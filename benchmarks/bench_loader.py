"""Loader throughput: WebDataset shards vs a per-file JPEG Dataset vs bare JPEG decode, measured in one run.

    .venv/bin/python benchmarks/bench_loader.py --n 8000 --workers 2 [--repeats 5] [--gpu]

All read the same 256x256 crops (JPEG q95, 4:4:4, as ingest/crops.py writes them). The two loaders do the full
training input path with the reader's own functions: decode (nima_train.data.decode_image: torchvision's
libjpeg-turbo decode_jpeg operator straight to uint8, on the bytes in place), random 224 crop + flip copied into
the batch (nima_train.data.BatchBuilder, its memory recycled per worker by nima_train/batch_memory.py), batches
of 64 (uint8, normalised later on the device, or float32 normalised in the worker), `--workers` DataLoader
workers. The per-file Dataset reads each file into a writable buffer (decoded in place, as the shard reader's
mapped payloads are) and collates with the same BatchBuilder, so the two differ only in how they read. Loader
passes interleave (files, shards, files, ...) so drift of the machine hits both alike, and each ratio is the
median over the pairs of passes run side by side (with its range); each pass reports the whole-pass rate and
the steady rate after the first batch. Both loaders run twice over: with every file in the page cache (warm,
after a warm-up pass), and cold (uint8 only), their files' cached pages dropped before every pass (posix_fadvise,
no root needed) so each pass reads from disk, as an epoch over a dataset bigger than RAM does. Bare decode
decodes the same bytes from memory: with PIL, and with the reader's decode_jpeg call
(nima_train.data.jpeg_to_tensor) on writable buffers, so nothing but decoding, in one process and in `--workers`
processes at once (a per-core rate with every core busy, as the loaders' are). Per-core figures divide a
loader's rate by its worker count. With --gpu (and CUDA present) it also measures MobileNetV2 training steps/s
at batch 64 (bf16 autocast, channels_last) to say how many loader cores one GPU needs. Targets (issue 6):
shards >= files, and bare-decode per core <= 1.3x shards per core.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.crops import encode_jpeg, sha256_bytes  # noqa: E402
from ingest.shard_writer import ShardLimits, ShardSample, write_split  # noqa: E402
from nima_train.data import (  # noqa: E402
    Batch,
    BatchBuilder,
    decode_image,
    decode_jpg,
    jpeg_to_tensor,
    make_loader,
    shard_urls,
)
from nima_train.tarstream import tar_samples  # noqa: E402
from nima_train.transforms import random_crop_flip, train_transform  # noqa: E402


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
    """The per-file baseline: one JPEG file per sample, labels in memory, the reader's decode."""

    def __init__(self, samples: list[ShardSample]) -> None:
        self.paths = [s.path for s in samples]
        self.targets = [list(s.target) for s in samples]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[float]]:
        with open(self.paths[i], "rb") as fh:
            data = bytearray(os.fstat(fh.fileno()).st_size)
            fh.readinto(data)  # a writable buffer, decoded in place as the shards' mapped payloads are
        return decode_image(data), self.targets[i]


def collate_crops(items: list[tuple[torch.Tensor, list[float]]], uint8: bool) -> Batch:
    """The reader's own crop + flip + collation (BatchBuilder, batch memory recycled the same way), so the two
    loaders differ only in how they read."""
    builder = BatchBuilder(len(items), 224, train=True, uint8=uint8)
    for image, target in items:
        builder.add(image, target)
    return builder.batch()


def timed_pass(loader: object) -> tuple[float, float]:
    """(images/s over the whole pass, images/s after the first batch arrived): the first includes forking the
    workers and filling the pipeline, which a long training epoch pays once; the second is the steady rate."""
    start = time.perf_counter()
    first_at, first_n, n = 0.0, 0, 0
    for images, _ in loader:
        n += images.shape[0]
        if not first_n:
            first_at, first_n = time.perf_counter(), n
    end = time.perf_counter()
    return n / (end - start), (n - first_n) / (end - first_at)


def evict_from_page_cache(paths: list[str]) -> None:
    """Drop the files' cached pages (no root needed), so the next pass reads them from disk as an epoch over a
    dataset bigger than RAM does. Pages still dirty stay; main() syncs once after writing the data."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def bench_loaders(
    makers: dict[str, Callable[[], object]], repeats: int, before_pass: Callable[[], None] | None = None
) -> dict[str, list[tuple[float, float]]]:
    """(whole pass, steady) images/s of every pass of each loader. Passes interleave loaders (files, shards, files,
    ...) so drift of the machine hits all alike and pass i of one loader pairs with pass i of another.

    Without `before_pass` one warm-up pass each comes first (it also fills the page cache); with it, it runs
    before every pass (evict_from_page_cache for cold passes).
    """
    if before_pass is None:
        for make in makers.values():
            timed_pass(make())
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in makers}
    for _ in range(repeats):
        for name, make in makers.items():
            if before_pass is not None:
                before_pass()
            runs[name].append(timed_pass(make()))
    return runs


def paired_ratio(numerator: list[tuple[float, float]], denominator: list[tuple[float, float]], i: int) -> str:
    """Median (min-max) of the pass-by-pass ratios of field i, each pass against the one run beside it."""
    ratios = sorted(a[i] / b[i] for a, b in zip(numerator, denominator, strict=True))
    return f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"


def median_rates(passes: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(p[0] for p in passes), statistics.median(p[1] for p in passes)


_DECODE_BUFFERS: list[bytearray] = []  # what ParallelDecode's forked processes decode (inherited, not pickled)


def _decode_range(bounds: tuple[int, int]) -> int:
    for data in _DECODE_BUFFERS[bounds[0] : bounds[1]]:
        bare_decode_jpeg(data)
    return bounds[1] - bounds[0]


class ParallelDecode:
    """One pass of bare decode_jpeg over every crop's bytes in `processes` forked processes, in batch-sized chunks,
    iterated like a loader (timed_pass counts a chunk as a batch): nothing but decoding with every core busy, as
    the loaders' are, timed in the same interleaved passes so the ratio to a loader is taken side by side."""

    def __init__(self, buffers: list[bytearray], processes: int, batch: int) -> None:
        self.buffers, self.processes, self.batch = buffers, processes, batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, None]]:
        _DECODE_BUFFERS[:] = self.buffers
        n = len(self.buffers)
        chunks = [(i, min(i + self.batch, n)) for i in range(0, n, self.batch)]
        with multiprocessing.get_context("fork").Pool(self.processes) as pool:
            for done in pool.imap(_decode_range, chunks):
                yield torch.empty(done), None


def bench_single(blobs: list[bytes], work: object, repeats: int) -> float:
    """Median images/s of `work(blob)` over the blobs in one process (first pass is a warm-up)."""
    rates = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for b in blobs:
            work(b)
        rates.append(len(blobs) / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def bench_tar_expanders(urls: list[str], repeats: int) -> tuple[float, float]:
    """Microseconds per sample to read every shard into sample dicts: the reader's tarstream, webdataset's own."""
    def ours() -> int:
        return sum(1 for _ in tar_samples({"url": u} for u in urls))

    def webdataset() -> int:
        return sum(1 for _ in wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()))

    out = []
    for read in (ours, webdataset):
        best = float("inf")
        for _ in range(repeats + 1):
            start = time.perf_counter()
            n = read()
            best = min(best, (time.perf_counter() - start) / n)
        out.append(best * 1e6)
    return out[0], out[1]


def bare_decode_jpeg(data: bytearray) -> torch.Tensor:
    # The reader's own libjpeg-turbo call on a writable buffer, as it decodes shard payloads: nothing but decoding.
    return jpeg_to_tensor(data)


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


def bench_recycling(args: argparse.Namespace) -> None:
    """Is nima_train/batch_memory.py worth its code? The uint8 shard loader as train.py uses it, with batch memory
    recycled per worker against a fresh shared buffer per batch, in interleaved passes, warm and cold page cache."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        samples = make_crops(tmp / "crops", args.n, seed=0)
        result = write_split(samples, tmp / "shards", "bench", "train", limits=ShardLimits(args.shard_samples))
        urls = shard_urls(result.index_path)
        print(f"{args.n} crops of 256x256; {len(urls)} shards; cores visible: {os.cpu_count()}")

        def shards(recycle: bool) -> object:
            return make_loader(urls, train=True, batch_size=args.batch, num_workers=args.workers,
                               shuffle_buffer=1000, uint8=True, recycle_batches=recycle)

        makers = {"recycled": partial(shards, True), "fresh": partial(shards, False)}
        warm = bench_loaders(makers, args.repeats)
        os.sync()
        cold = bench_loaders(makers, args.repeats, before_pass=partial(evict_from_page_cache, urls))
    for cache, runs in (("warm", warm), ("cold", cold)):
        for i, what in enumerate(("whole pass", "steady")):
            rec, fresh = median_rates(runs["recycled"])[i], median_rates(runs["fresh"])[i]
            print(f"{cache} cache, {what}: recycled {rec:.0f} images/s, fresh {fresh:.0f} images/s; recycled / fresh"
                  f" {paired_ratio(runs['recycled'], runs['fresh'], i)} over {args.repeats} pairs (keep the module"
                  " if >= 1.05x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of crops")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shard-samples", type=int, default=250)
    parser.add_argument("--gpu", action="store_true", help="also time MobileNetV2 training steps on CUDA")
    parser.add_argument("--recycling", action="store_true",
                        help="only the shard loader with recycled batch memory against fresh memory per batch")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per worker/process, so per-core figures mean what they say
    if args.recycling:
        bench_recycling(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        samples = make_crops(tmp / "crops", args.n, seed=0)
        result = write_split(samples, tmp / "shards", "bench", "train", limits=ShardLimits(args.shard_samples))
        urls = shard_urls(result.index_path)
        blobs = [Path(s.path).read_bytes() for s in samples]
        buffers = [bytearray(b) for b in blobs]  # bare decode_jpeg decodes writable buffers, with no copy
        mean_kb = sum(map(len, blobs)) / len(blobs) / 1024
        print(f"{args.n} crops of 256x256, mean {mean_kb:.1f} KiB; {len(urls)} shards; cores visible: {os.cpu_count()}")

        ours, theirs = bench_tar_expanders(urls, args.repeats)
        print(f"reading the shards into samples: nima_train.tarstream {ours:.1f} us/sample, webdataset's"
              f" tarfile_to_samples {theirs:.1f} us/sample ({theirs / ours:.1f}x)")
        pil_augment = train_transform(224)
        single = {
            "bare PIL decode": bench_single(blobs, decode_jpg, args.repeats),
            "bare decode_jpeg": bench_single(buffers, bare_decode_jpeg, args.repeats),
            "PIL decode + train_transform (earlier path)": bench_single(
                blobs, lambda b: pil_augment(decode_jpg(b)), args.repeats
            ),
            "decode_image + random_crop_flip (reader path)": bench_single(
                blobs, lambda b: random_crop_flip(decode_image(b), 224), args.repeats
            ),
        }

        def files(uint8: bool) -> DataLoader:
            return DataLoader(FileDataset(samples), batch_size=args.batch, shuffle=True, num_workers=args.workers,
                              drop_last=True, collate_fn=partial(collate_crops, uint8=uint8))

        def shards(uint8: bool) -> object:
            return make_loader(urls, train=True, batch_size=args.batch, num_workers=args.workers,
                               shuffle_buffer=1000, uint8=uint8)

        makers = {(kind, uint8): partial(make, uint8) for uint8 in (True, False)
                  for kind, make in (("files", files), ("shards", shards))}
        makers["decode", True] = partial(ParallelDecode, buffers, args.workers, args.batch)
        warm = bench_loaders(makers, args.repeats)
        os.sync()  # the crops and shards were just written: dirty pages cannot be evicted
        data_files = [s.path for s in samples] + urls
        cold = bench_loaders({key: makers[key] for key in (("files", True), ("shards", True))}, args.repeats,
                             before_pass=partial(evict_from_page_cache, data_files))

    w = args.workers
    print(f"{'path':64s} {'images/s':>9s} {'per core':>9s} {'steady/s':>9s} {'per core':>9s}")
    for label, rate in single.items():
        print(f"{label + ' (1 process)':64s} {rate:9.0f} {rate:9.0f}")
    for cache, runs in (("warm", warm), ("cold", cold)):
        for (kind, uint8), passes in runs.items():
            rate, steady = median_rates(passes)
            label = {"shards": "WebDataset shards", "files": "per-file Dataset", "decode": "bare decode_jpeg"}[kind]
            label += f", {'uint8' if uint8 else 'float32'}, {cache} cache" if kind != "decode" else ""
            unit = "processes, chunks" if kind == "decode" else "workers, batch"
            print(f"{f'{label}, {w} {unit} {args.batch}':64s} {rate:9.0f} {rate / w:9.0f}"
                  f" {steady:9.0f} {steady / w:9.0f}")
    print(f"medians of {args.repeats} passes each; ratios below: median (min-max) of the {args.repeats} side-by-side"
          " pairs of passes. Targets: shards / files >= 1.0, bare decode_jpeg per core / shards per core <= 1.3")
    alone = single["bare decode_jpeg"]
    for cache, runs in (("warm", warm), ("cold", cold)):
        for uint8 in (True, False) if cache == "warm" else (True,):
            mode = f"{'uint8' if uint8 else 'float32'} batches, {cache} cache"
            shard_passes = runs["shards", uint8]
            for i, what in enumerate(("whole pass", "steady")):
                line = f"{mode}, {what}: shards / files {paired_ratio(shard_passes, runs['files', uint8], i)}"
                if cache == "warm":  # the decode passes ran beside the warm ones
                    shard = median_rates(shard_passes)[i] / w
                    line += (f"; bare decode_jpeg per core / shards per core"
                             f" {paired_ratio(warm['decode', True], shard_passes, i)} with all {w} cores decoding"
                             f" (target <= 1.3), {alone / shard:.2f}x one process alone,"
                             f" PIL {single['bare PIL decode'] / shard:.2f}x")
                print(line)
    shards_rate = max(median_rates(warm["shards", True])[1], median_rates(warm["shards", False])[1])
    gpu = bench_mobilenet(args.batch) if args.gpu else None
    if gpu:
        name = torch.cuda.get_device_name()
        print(f"MobileNetV2 train step on {name}, batch {args.batch}, bf16: {gpu:.0f} images/s")
        print(f"loader cores to keep it fed from shards: {gpu / (shards_rate / w):.1f}")


if __name__ == "__main__":
    main()
