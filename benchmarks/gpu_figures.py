"""The GPU figures docs/ lack, measured on one CUDA device and written into docs/operating.md ("GPU figures") with
the command that measured them:

    python benchmarks/gpu_figures.py [--device cuda:0] [--steps 40] [--samples 4096] [--no-write]

1. training images/s of MobileNetV2 at 224 px, bf16 autocast + channels_last against fp32: the project's
   train_one_epoch on batches already in (pinned) host memory, so the loader is out of this figure;
2. the training loader (nima_train.data.split_loader over 256 px JPEG shards, random 224 px crops) in images/s for
   1, 2, 4, ... workers, and the fewest workers whose rate reaches the bf16 training rate: what keeps one GPU busy;
3. critic images/s (Critic.score_images on decoded images, as `aesthetic score` runs) and curation images/s
   (critic.curate.score_shards over the same shards, as `aesthetic curate` runs), at that worker count.

Without CUDA it prints one line and exits with status 1 before doing anything else; it is never run by the tests
or CI (tests/test_gpu_figures.py runs only that exit).
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "operating.md"
BEGIN, END = "<!-- gpu-figures:begin -->", "<!-- gpu-figures:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=40, help="timed training steps per precision")
    p.add_argument("--samples", type=int, default=4096, help="JPEGs in the shards the loader and critic read")
    p.add_argument("--no-write", action="store_true", help="print the figures; leave docs/ alone")
    return p.parse_args(argv)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_rate(device, amp: bool, channels_last: bool, batch: int, steps: int) -> float:
    """Images/s of the project's training step (forward, EMD loss, backward, AdamW) at 224 px."""
    import torch

    from nima_train.distributed import DistInfo
    from nima_train.losses import emd_loss
    from nima_train.model import NIMA
    from nima_train.train import build_optimizer, get_args_parser, train_one_epoch

    torch.manual_seed(0)
    args = get_args_parser().parse_args(["--data", "-", "--output-dir", "-", "--epochs-head", "0", "--no-progress",
                                         "--print-freq", "0", "--backbone", "mobilenet_v2"])
    args.amp, args.channels_last = amp, channels_last
    args.lr_head, args.lr_full, args.head_lr_mult = 1e-3, 3e-5, 1  # as benchmarks/bench_train.py: rates only
    model = NIMA("mobilenet_v2", weights="none").to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, "full", args)
    pin = (lambda t: t.pin_memory()) if device.type == "cuda" else (lambda t: t)
    batches = [(pin(torch.randn(batch, 3, 224, 224)), pin(torch.softmax(torch.randn(batch, 10), -1)))
               for _ in range(4)]
    plan = [batches[i % len(batches)] for i in range(steps)]
    train_one_epoch(model, emd_loss, optimizer, batches, device, 0, args, DistInfo(), len(batches),
                    log=lambda line: None)  # warm-up: cuDNN autotuning, allocator
    _sync(device)
    started = time.perf_counter()
    train_one_epoch(model, emd_loss, optimizer, plan, device, 0, args, DistInfo(), len(plan), log=lambda line: None)
    _sync(device)
    return steps * batch / (time.perf_counter() - started)


def write_shards(folder: Path, n: int, per_shard: int = 256) -> list[Path]:
    """Training shards of 256 px JPEGs with the labels the reader expects (as ingest writes them)."""
    import numpy as np
    import webdataset as wds

    from ingest.sample_data import render_photo, votes_for

    rng, paths = np.random.default_rng(0), []
    for start in range(0, n, per_shard):
        paths.append(folder / f"bench-train-{start // per_shard:06d}.tar")
        with wds.TarWriter(str(paths[-1])) as sink:
            for i in range(start, min(n, start + per_shard)):
                quality, buf = float(rng.random()), io.BytesIO()
                render_photo(rng, quality, 256, 256).save(buf, format="JPEG", quality=90)
                counts = votes_for(rng, quality, 80)
                target = (counts / counts.sum()).tolist()
                meta = {"dataset": "bench", "image_id": str(i), "split": "train", "counts": counts.tolist(),
                        "target": target, "mean": 5.0, "std": 1.5}
                sink.write({"__key__": f"bench_{i}", "jpg": buf.getvalue(), "json": json.dumps(meta).encode()})
    return paths


def loader_rate(shards: list[Path], workers: int, batch: int) -> float:
    """Images/s of one pass of the training loader with `workers` processes."""
    from nima_train.data import split_loader

    loader = split_loader([str(p) for p in shards], train=True, crop=224, resize=256, batch_size=batch,
                          workers=workers, shuffle_buffer=1000)
    started, n = time.perf_counter(), 0
    for images, _ in loader:
        n += len(images)
    return n / (time.perf_counter() - started)


def critic_rates(shards: list[Path], n: int, device, workers: int, batch: int) -> tuple[float, float]:
    """(critic, curation) images/s of an untrained MobileNetV2 NIMA at 224 px on the device."""
    from PIL import Image

    from critic.curate import CurateSettings, input_shards, score_shards
    from critic.scoring import Critic
    from nima_train.model import NIMA
    from nima_train.tarstream import tar_samples

    critic = Critic(NIMA("mobilenet_v2", weights="none"), image_size=224, batch_size=batch, device=str(device),
                    version="bench")
    images = [Image.open(io.BytesIO(bytes(s["jpg"]))).convert("RGB") for s in tar_samples([{"url": str(shards[0])}])]
    critic.score_images(images[:batch])  # warm-up
    started = time.perf_counter()
    critic.score_images(images)
    critic_rate = len(images) / (time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = score_shards(critic, input_shards([str(p) for p in shards]), out,
                              CurateSettings(batch_size=batch, workers=workers))
        seconds = time.perf_counter() - started
    assert len(result.scored) == len(shards) and not result.failed, result.failed
    return critic_rate, n / seconds


def measure(args: argparse.Namespace) -> dict:
    import torch

    device = torch.device(args.device)
    figures = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
               "cores": len(os.sched_getaffinity(0)), "batch": args.batch_size}
    figures["train_fp32"] = training_rate(device, False, False, args.batch_size, args.steps)
    figures["train_bf16_cl"] = training_rate(device, True, True, args.batch_size, args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_shards(Path(tmp), args.samples)
        figures["loader"], workers = {}, 1
        while workers <= figures["cores"]:
            figures["loader"][workers] = loader_rate(shards, workers, args.batch_size)
            if figures["loader"][workers] >= figures["train_bf16_cl"]:
                break
            workers *= 2
        busy = [w for w, rate in figures["loader"].items() if rate >= figures["train_bf16_cl"]]
        figures["workers_to_keep_busy"] = busy[0] if busy else None
        figures["critic"], figures["curation"] = critic_rates(shards, args.samples, device,
                                                              min(workers, figures["cores"]), args.batch_size)
    return figures


def markdown(figures: dict, command: str) -> str:
    loader = ", ".join(f"{w} workers {r:.0f}" for w, r in figures["loader"].items())
    busy = figures["workers_to_keep_busy"]
    keeps = f"{busy} loader workers" if busy else f"more than {max(figures['loader'])} workers (none tried kept up)"
    return "\n".join([
        BEGIN,
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {figures['device']} ({figures['cores']} cores, torch "
        f"{figures['torch']}, CUDA {figures['cuda']}) with `{command}`:",
        "",
        "| figure | images/s |",
        "|---|---|",
        f"| training, MobileNetV2 224 px, batch {figures['batch']}, fp32 | {figures['train_fp32']:.0f} |",
        f"| training, same, bf16 + channels_last | {figures['train_bf16_cl']:.0f} "
        f"({figures['train_bf16_cl'] / figures['train_fp32']:.2f}x fp32) |",
        f"| training loader (256 px JPEG shards, 224 px crops) | {loader} |",
        f"| critic scoring (`aesthetic score`, decoded images) | {figures['critic']:.0f} |",
        f"| curation scoring (`aesthetic curate`, shards) | {figures['curation']:.0f} |",
        "",
        f"One GPU stays busy in bf16 with {keeps}.",
        END,
    ])


def write_docs(block: str, docs: Path = DOCS) -> None:
    text = docs.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"gpu_figures: {docs} has no {BEGIN} ... {END} block to replace")
    docs.write_text(pattern.sub(lambda _: block, text))


NO_CUDA = ("gpu_figures: no CUDA device here (no /dev/nvidia* or torch.cuda.is_available() is False); run it on a "
           "GPU machine")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # No NVIDIA device node: no CUDA, said before the seconds torch takes to import.
    if not glob.glob("/dev/nvidia[0-9]*"):
        print(NO_CUDA, file=sys.stderr)
        return 1
    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 1
    sys.path.insert(0, str(ROOT))
    figures = measure(args)
    block = markdown(figures, "python benchmarks/gpu_figures.py " + " ".join(argv if argv is not None
                                                                             else sys.argv[1:]))
    print(block)
    if not args.no_write:
        write_docs(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
