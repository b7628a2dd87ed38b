"""Training images/s at batch 32: the project's train_one_epoch against a bare PyTorch loop, same tensors, one run.

    python benchmarks/bench_train.py                       # CPU, 128 px (the 2-core demo machine)
    python benchmarks/bench_train.py --device cuda --size 224 --steps 50 [--amp --channels-last]

Both loops see the same batches (already in memory, so the data loader is out of the comparison), the same
model, loss and optimizer; they alternate rounds so machine noise hits both. Overhead = 1 - project / bare.
"""

from __future__ import annotations

import argparse
import time

import torch

from nima_train.distributed import DistInfo
from nima_train.losses import emd_loss
from nima_train.model import NIMA
from nima_train.train import autocast, build_optimizer, get_args_parser, train_one_epoch


def bare_loop(model, optimizer, batches, device, amp, channels_last) -> None:
    model.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for images, targets in batches:
        images, targets = images.to(device, memory_format=fmt), targets.to(device)
        with autocast(device, amp):
            pred = model(images)
        loss = emd_loss(pred.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--backbone", default="mobilenet_v2")
    b = p.parse_args()
    device = torch.device(b.device)
    torch.manual_seed(0)
    batches = [(torch.randn(b.batch_size, 3, b.size, b.size), torch.softmax(torch.randn(b.batch_size, 10), -1))
               for _ in range(b.steps)]
    args = get_args_parser().parse_args(["--data", "-", "--output-dir", "-", "--epochs-head", "0", "--no-progress",
                                         "--print-freq", "10", "--backbone", b.backbone])
    args.amp, args.channels_last, args.lr_head, args.lr_full, args.head_lr_mult = b.amp, b.channels_last, 1e-3, 3e-5, 1
    model = NIMA(b.backbone, weights="none").to(device)
    if b.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, "full", args)
    bare_loop(model, optimizer, batches[:2], device, b.amp, b.channels_last)  # warm-up
    times = {"bare": 0.0, "project": 0.0}
    for _ in range(b.rounds):
        for name in ("bare", "project"):
            sync(device)
            t0 = time.perf_counter()
            if name == "bare":
                bare_loop(model, optimizer, batches, device, b.amp, b.channels_last)
            else:
                train_one_epoch(model, emd_loss, optimizer, batches, device, 0, args, DistInfo(), len(batches),
                                log=lambda line: None)
            sync(device)
            times[name] += time.perf_counter() - t0
    n = b.rounds * b.steps * b.batch_size
    bare, project = n / times["bare"], n / times["project"]
    print(f"device={device} backbone={b.backbone} size={b.size} batch={b.batch_size} amp={b.amp} "
          f"channels_last={b.channels_last} steps={b.steps}x{b.rounds}")
    print(f"bare loop:    {bare:8.1f} images/s")
    print(f"project loop: {project:8.1f} images/s")
    print(f"overhead:     {100 * (1 - project / bare):+.1f}%")


if __name__ == "__main__":
    main()
