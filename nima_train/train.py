"""Train NIMA on WebDataset shards, alone or under torchrun (skeleton of torchvision's references/classification).

Alone (CPU or one GPU):

    python -m nima_train.train --data $AESTHETIC_HOME/shards/ava/train --val-data $AESTHETIC_HOME/shards/ava/val \\
        --output-dir runs/ava --weights imagenet --crop 224 --resize 256 --batch-size 64 --epochs-head 5 \\
        --epochs-full 10 --lr-full 3e-5

Every flag that changes what the run computes is a field of nima_train/settings.TrainSettings, with the same
default as the training assets' config (the CPU demo's: from scratch, 96 px, 12 epochs of the whole network);
the others are listed in NOT_IDENTITY with the reason.

Under torchrun (one node, 4 GPUs; several nodes: add --nnodes/--node-rank/--rdzv-endpoint):

    torchrun --nproc-per-node 4 -m nima_train.train --data ... --output-dir runs/ava

--data and --val-data take split folders, index.json files (local, file: or http(s) URLs) and single shards;
`pipe:` URLs (given here or listed by a local index) run only with --allow-pipe.

Two phases: the head alone for --epochs-head epochs at --lr-head, then the whole network for --epochs-full
epochs at --lr-full (backbone) with the head at --lr-full * --head-lr-mult. The learning rate decays
exponentially per epoch (--lr-decay). After every epoch <output-dir>/checkpoint.pt holds model, optimizer,
scheduler, epoch and history; starting the same command again resumes from it. At the end
<output-dir>/model.pt (model, args and, with --val-data, the calibration of predicted onto true means fitted
on the validation split: nima_train/calibration.py; what the critic serves) and <output-dir>/summary.json are
written by rank 0. Launched by Dagster Pipes (DAGSTER_PIPES_CONTEXT set), rank 0 reports logs and the summary back.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch import nn

from common.arguments import Parser, folder
from common.atomic import write_atomic
from common.regular_files import NotRegularFile
from common.remote import RemoteError
from nima_train import data
from nima_train.calibration import MIN_CALIBRATION, Calibration, fit_calibration
from nima_train.checkpoint import load_checkpoint, save_checkpoint
from nima_train.devices import torch_device, trained_on
from nima_train.distributed import (
    DistInfo,
    all_gather_strings,
    barrier,
    broadcast_buffers,
    cleanup_distributed,
    init_distributed,
)
from nima_train.evaluate import predict
from nima_train.logger import MetricLogger, SmoothedValue
from nima_train.losses import emd_loss, notebook_emd_loss
from nima_train.metrics import compute_metrics
from nima_train.model import NIMA, score_moments
from nima_train.negatives import write_negatives_shard
from nima_train.reporter import Reporter
from nima_train.settings import PRINT_FREQ, TrainSettings, add_flags

# Flags that are not fields of the spec (nima_train/settings.TrainSettings), each with the reason it does not change
# what a run computes: none is in the run key or the model card's spec. tests/test_train_spec.py fails on a flag
# that is in neither.
NOT_IDENTITY = {
    "data": "the training inputs: the run key hashes their shard index files, not the paths naming them",
    "val_data": "the validation inputs (they choose the calibration): hashed by their index files like --data",
    "allow_pipe": "lets `pipe:` shard URLs run: where the bytes come from, not what is computed from them",
    "output_dir": "where the run folder is; the training assets name it by the run key",
    "device": "where it runs; bf16 autocast, its one effect on the numbers, is the spec's `amp`",
    "channels_last": "the memory layout of the same tensors",
    "compile": "the same graph, compiled",
    "print_freq": "log lines only",
    "no_progress": "the progress bar only",
}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = Parser(prog="python -m nima_train.train", description="Train NIMA on WebDataset shards", add_help=add_help)
    p.add_argument("--data", nargs="+", required=True, help="training shard folders or .tar files")
    p.add_argument("--val-data", nargs="*", default=[], help="validation shard folders or .tar files")
    p.add_argument(data.PIPE_FLAG, action="store_true",
                   help="let shard URLs given here or listed by a local index.json be pipe: shell commands")
    p.add_argument("--output-dir", type=folder, required=True,
                   help="checkpoint.pt, model.pt and summary.json go here")
    add_flags(p)  # the spec: one flag per field, its default and range from nima_train/settings.py
    p.add_argument("--device", type=torch_device, default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--print-freq", type=PRINT_FREQ.flag(), default=10, help="steps between log lines (0: none)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (log lines only)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line through get_args_parser, then the checks that take two options together."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.epochs_head + args.epochs_full < 1:
        parser.error("--epochs-head and --epochs-full are both 0: nothing to train")
    return args


def resolve_spec(args: argparse.Namespace) -> TrainSettings:
    """The run's resolved spec (unset rates set to the optimiser's), written back onto args for the loop."""
    spec = TrainSettings.from_mapping(vars(args)).resolved()
    vars(args).update(dataclasses.asdict(spec))
    return spec


# ----------------------------------------------------------------------------- data


def build_loader(urls: Sequence[str], args: argparse.Namespace, info: DistInfo, train: bool,
                 epoch_samples: int | None = None) -> wds.WebLoader:
    """The run's arguments to data.split_loader; under DDP training resamples so ranks stay in step."""
    resampled = train and info.enabled
    return data.split_loader(
        urls, train=train, crop=args.crop, resize=args.resize, batch_size=args.batch_size, workers=args.workers,
        shuffle_buffer=args.shuffle_buffer, seed=args.seed, world_size=info.world_size, resampled=resampled,
        epoch_samples=epoch_samples if (resampled or args.max_steps) else None,
    )


# ----------------------------------------------------------------------------- model and optimisation


def build_model(args: argparse.Namespace) -> NIMA:
    """The NIMA to train: ImageNet or random backbone weights, or a NIMA checkpoint's weights (fine-tuning).

    Which model version a checkpoint is lives in the warehouse, not in the file: the training asset records
    the parent version on the model card and the `models` row.
    """
    if args.weights in ("imagenet", "none"):
        return NIMA(args.backbone, weights=args.weights, dropout=args.dropout)
    state = load_checkpoint(args.weights)
    parent_args = state.get("args") or {}
    if parent_args.get("backbone", args.backbone) != args.backbone:
        raise ValueError(f"{args.weights} holds a {parent_args['backbone']} model, not {args.backbone}")
    model = NIMA(args.backbone, weights="none", dropout=args.dropout)
    model.load_state_dict(state["model"])
    return model


def phase_of(epoch: int, args: argparse.Namespace) -> str:
    return "head" if epoch < args.epochs_head else "full"


def build_optimizer(model: NIMA, phase: str, args: argparse.Namespace) -> torch.optim.Optimizer:
    """Phase 'head': head parameters only; phase 'full': backbone and head with their own rates."""
    for p in model.backbone.parameters():
        p.requires_grad_(phase == "full")
    if phase == "head":
        groups = [{"params": list(model.head.parameters()), "lr": args.lr_head * args.lr_scale}]
    else:
        groups = [
            {"params": list(model.backbone.parameters()), "lr": args.lr_full * args.lr_scale},
            {"params": list(model.head.parameters()), "lr": args.lr_full * args.head_lr_mult * args.lr_scale},
        ]
    if args.opt == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, weight_decay=args.weight_decay)
    return torch.optim.Adam(groups, weight_decay=args.weight_decay)


def wrap_model(model: NIMA, info: DistInfo, device: torch.device, args: argparse.Namespace) -> nn.Module:
    """DDP (gradients averaged across ranks) and torch.compile around the model, as asked."""
    wrapped: nn.Module = model
    if info.enabled:
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[info.local_rank] if device.type == "cuda"
                                                      else None)
    return torch.compile(wrapped) if args.compile else wrapped


def loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return emd_loss if name == "paper" else notebook_emd_loss


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


# ----------------------------------------------------------------------------- one epoch


def train_one_epoch(model: nn.Module, criterion: Callable, optimizer: torch.optim.Optimizer, loader,
                    device: torch.device, epoch: int, args: argparse.Namespace, info: DistInfo,
                    total_steps: int | None = None, log: Callable[[str], None] = print) -> dict[str, float]:
    model.train()
    logger = MetricLogger(printer=log)
    logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.2e}"))
    logger.add_meter("img/s", SmoothedValue(window_size=10, fmt="{value:.1f}"))
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    bar = None
    if info.is_main and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)
    for step, (images, targets) in enumerate(logger.log_every(loader, args.print_freq, f"Epoch: [{epoch}]",
                                                              total_steps)):
        start = time.perf_counter()
        images = data.batch_to_device(images, device, memory_format)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, args.amp):
            pred = model(images)
        loss = criterion(pred.float(), targets)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch} step {step}; stopping")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        logger.update(n=images.shape[0], loss=loss.item())
        logger.meters["lr"].update(optimizer.param_groups[0]["lr"])
        logger.meters["img/s"].update(images.shape[0] / (time.perf_counter() - start))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if args.max_steps and step + 1 >= args.max_steps:
            break
    if bar is not None:
        bar.close()
    if "loss" not in logger.meters:  # a shard list that reads as empty (e.g. a pipe: command writing nothing)
        raise ValueError(f"epoch {epoch} read no training batch: the training shards yielded no samples")
    logger.synchronize_between_processes(device)
    return {"loss": logger.meters["loss"].global_avg}


@torch.no_grad()
def evaluate(model: nn.Module, criterion: Callable, loader, device: torch.device,
             args: argparse.Namespace) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Validation loss and metrics over the whole split, gathered across ranks, with the predicted and
    true distributions they came from."""
    pred, target = predict(model, loader, device, amp=bool(args.amp), gather=True)
    if pred.shape[0] == 0:
        raise ValueError("the validation shards hold no samples")
    metrics = compute_metrics(pred, target).as_dict()
    metrics["loss"] = float(criterion(pred, target)) / (pred.shape[0] if args.loss == "notebook" else 1)
    return metrics, pred, target


def fit_val_calibration(pred: torch.Tensor, target: torch.Tensor,
                        log: Callable[[str], None] = print) -> tuple[Calibration, dict[str, Any]]:
    """The calibration of the final model's validation predictions, and how much it changed (for the summary
    and the model card: raw and calibrated SRCC, MAE and spread ratio)."""
    pm, _ = score_moments(pred.double())
    tm, _ = score_moments(target.double())
    cal = fit_calibration(pm.numpy(), tm.numpy(), split="val")
    m = compute_metrics(pred, target, calibration=cal).as_dict()
    keys = ("srcc_mean", "mae_mean", "rmse_mean", "spread_ratio")
    effect = {"method": cal.method, "split": cal.split, "n": cal.n, "reason": cal.selection["reason"],
              "cv_mae": cal.selection["cv_mae"],
              **{k: m[k] for k in keys}, **{f"{k}_calibrated": m[f"{k}_calibrated"] for k in keys},
              "map": cal.as_dict()}
    log(f"calibration: {cal.describe()}; val SRCC {m['srcc_mean']:.3f} -> {m['srcc_mean_calibrated']:.3f}, "
        f"MAE {m['mae_mean']:.3f} -> {m['mae_mean_calibrated']:.3f}, "
        f"spread ratio {m['spread_ratio']:.2f} -> {m['spread_ratio_calibrated']:.2f}")
    return cal, effect


# ----------------------------------------------------------------------------- main


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Train (resuming from <output-dir>/checkpoint.pt when present); return the summary rank 0 wrote."""
    resolve_spec(args)
    device = torch.device(args.device)
    args.amp = device.type == "cuda" if args.amp is None else args.amp
    args.channels_last = device.type == "cuda" if args.channels_last is None else args.channels_last
    info = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    reporter = Reporter(info)
    try:
        summary = _train(args, device, info, reporter)
        reporter.finish(summary)
        return summary
    except BaseException as exc:
        reporter.close(exc)
        raise
    finally:
        reporter.close()
        cleanup_distributed()


@dataclass
class Run:
    """What prepare() sets up for the loop and finish()."""

    out: Path
    train_set: data.ShardSet
    val_set: data.ShardSet
    n_train: int
    epoch_steps: int
    model: NIMA
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    resume: dict[str, Any] | None
    spec: dict[str, Any]  # the resolved spec asked for (before a batch shrinks to fit a small split)
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    val_loader: Any = None

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint.pt"


def _train(args: argparse.Namespace, device: torch.device, info: DistInfo, reporter: Reporter) -> dict[str, Any]:
    run = prepare(args, device, info, reporter)
    last_val = train_epochs(run, args, device, info, reporter)
    return finish(run, last_val, args, device, info, reporter)


def prepare(args: argparse.Namespace, device: torch.device, info: DistInfo, reporter: Reporter) -> Run:
    """The shards (with negatives), the model on its device, and the checkpoint to resume from, if any."""
    out = Path(args.output_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    if args.weights == "none" and args.epochs_head:
        reporter.log(f"warning: --epochs-head {args.epochs_head} with --weights none trains the head alone on the "
                     "features of a random backbone it cannot change; 0 (the default) trains the whole network "
                     "from the first epoch")
    seed_everything(args.seed)  # the same initial weights on every rank
    spec = TrainSettings.from_mapping(vars(args)).identity()
    train_set, n_train = _training_set(args, out, info, reporter)
    val_set = data.resolve_shards(args.val_data, args.allow_pipe)
    # A training epoch drops the last partial batch (every step has the same shape).
    epoch_steps = max(1, n_train // (args.batch_size * info.world_size))
    if args.max_steps:
        epoch_steps = min(epoch_steps, args.max_steps)
    model = build_model(args)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    run = Run(out, train_set, val_set, n_train, epoch_steps, model, loss_fn(args.loss), None, spec)
    run.val_loader = build_loader(val_set.urls, args, info, train=False) if val_set.urls else None
    if run.checkpoint.exists():
        run.resume = load_checkpoint(run.checkpoint)
        model.load_state_dict(run.resume["model"])
        run.start_epoch, run.history = int(run.resume["epoch"]) + 1, list(run.resume.get("history", []))
        reporter.log(f"resuming from {run.checkpoint} at epoch {run.start_epoch}/{args.epochs_head + args.epochs_full}")
    return run


def _training_set(args: argparse.Namespace, out: Path, info: DistInfo,
                  reporter: Reporter) -> tuple[data.ShardSet, int]:
    """The training shards and their sample count, negatives added; a split smaller than one batch per rank
    shrinks the batch (written back onto args)."""
    train_set = data.resolve_shards(args.data, args.allow_pipe)
    n_train = train_set.n_samples
    if n_train == 0:
        raise ValueError(f"the training shards {args.data} hold no samples")
    # Training drops each loader worker's last partial batch (every step has the same shape): a split smaller
    # than one batch per rank would train on nothing, so it gets a batch as large as it is, said in the log.
    if n_train < args.batch_size * info.world_size:
        smaller = max(1, n_train // info.world_size)
        reporter.log(f"batch size {args.batch_size} -> {smaller}: the training shards hold only {n_train} samples")
        args.batch_size = smaller
    if args.negatives > 0:
        negatives = out / f"negatives-{args.seed}.tar"
        if info.is_main and not negatives.exists():
            write_negatives_shard(negatives, max(1, round(args.negatives * n_train)), args.seed)
        barrier()
        train_set.urls.append(str(negatives))
        n_train += max(1, round(args.negatives * n_train))
    return train_set, n_train


def train_epochs(run: Run, args: argparse.Namespace, device: torch.device, info: DistInfo,
                 reporter: Reporter) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Every epoch from the resume point: train, validate, checkpoint. Returns the last validation's predicted
    and true distributions (None when no epoch ran or there is no validation split)."""
    total_epochs = args.epochs_head + args.epochs_full
    phase, optimizer, scheduler, train_model, last_val = None, None, None, run.model, None
    for epoch in range(run.start_epoch, total_epochs):
        if phase_of(epoch, args) != phase:
            phase = phase_of(epoch, args)
            optimizer, scheduler, train_model = _start_phase(run, phase, epoch, args, device, info)
        seed_everything(args.seed + 1000 * epoch + info.rank)  # the same epoch draws the same way on resume
        loader = build_loader(run.train_set.urls, args, info, train=True,
                              epoch_samples=run.epoch_steps * args.batch_size * info.world_size)
        data.set_epoch(loader, epoch)
        t0 = time.perf_counter()
        stats = train_one_epoch(train_model, run.criterion, optimizer, loader, device, epoch, args, info,
                                run.epoch_steps, reporter.log)
        stats.update(epoch=epoch, phase=phase, seconds=time.perf_counter() - t0,
                     lr=optimizer.param_groups[0]["lr"])
        scheduler.step()
        broadcast_buffers(run.model)  # rank 0's BatchNorm statistics everywhere, as rank 0 saves them
        if run.val_loader is not None:
            val, *last_val = evaluate(run.model, run.criterion, run.val_loader, device, args)
            stats.update({f"val_{k}": v for k, v in val.items()})
        run.history.append(stats)
        reporter.epoch(_epoch_line(stats, total_epochs))
        if info.is_main:
            save_checkpoint(run.checkpoint, {
                "model": run.model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch, "phase": phase,
                "args": _plain_args(args), "history": run.history,
            })
        barrier()
    return tuple(last_val) if last_val else None


def _start_phase(run: Run, phase: str, epoch: int, args: argparse.Namespace, device: torch.device,
                 info: DistInfo) -> tuple[torch.optim.Optimizer, Any, nn.Module]:
    """The phase's optimizer and scheduler (their state restored when resuming inside this phase), and the model
    to train: DDP registers the parameters that need gradients when it is built, so it is wrapped per phase."""
    optimizer = build_optimizer(run.model, phase, args)
    train_model = wrap_model(run.model, info, device, args)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=args.lr_decay)
    resume = run.resume
    if resume is not None and resume.get("phase") == phase and int(resume["epoch"]) + 1 == epoch:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
    return optimizer, scheduler, train_model


def finish(run: Run, last_val: tuple[torch.Tensor, torch.Tensor] | None, args: argparse.Namespace,
           device: torch.device, info: DistInfo, reporter: Reporter) -> dict[str, Any]:
    """model.pt (weights, args, calibration) and summary.json, written by rank 0; the summary returned."""
    final_state: dict[str, Any] = {"model": run.model.state_dict(), "args": _plain_args(args)}
    calibration_effect = None
    if run.val_loader is not None:
        if last_val is None:  # resumed after the last epoch: predict once more with the final weights
            last_val = predict(run.model, run.val_loader, device, amp=bool(args.amp), gather=True)
        calibration, calibration_effect = _calibrate(*last_val, reporter.log)
        if calibration is not None:
            final_state["calibration"] = calibration.as_dict()
    # Every rank's weights digest: under DDP they must all be equal (gradients were averaged every step).
    summary = {"history": run.history, "n_train": run.n_train,
               "rank_weight_digests": all_gather_strings(state_digest(run.model)),
               "train_indexes": run.train_set.index_sha256, "val_indexes": run.val_set.index_sha256,
               "args": _plain_args(args), "spec": run.spec,
               "world_size": info.world_size, "final": run.history[-1] if run.history else {},
               "calibration": calibration_effect, "trained_on": trained_on(str(device))}
    if info.is_main:
        save_checkpoint(run.out / "model.pt", final_state)
        write_atomic(run.out / "summary.json", json.dumps(summary, indent=2, sort_keys=True, default=str).encode())
    barrier()
    return summary


def _calibrate(pred: torch.Tensor, target: torch.Tensor,
               log: Callable[[str], None]) -> tuple[Calibration | None, dict[str, Any]]:
    """The calibration fitted on the validation predictions, or None (and why) when the split is too small."""
    n_val = pred.shape[0]
    if n_val >= MIN_CALIBRATION:
        return fit_val_calibration(pred, target, log)
    log(f"no calibration: the validation split holds {n_val} samples, fewer than {MIN_CALIBRATION}; scores stay "
        "on the model's own scale")
    return None, {"method": "none", "split": "val", "n": n_val,
                  "reason": f"fewer than {MIN_CALIBRATION} validation samples"}


def state_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """Args as plain JSON-able values, so checkpoints load with weights_only=True; without the device, which says
    where the run went, not what it computed (model.pt's bytes are the model version)."""
    return {k: v for k, v in vars(args).items()
            if k != "device" and isinstance(v, str | int | float | bool | list | type(None))}


def _epoch_line(stats: dict[str, Any], total_epochs: int) -> str:
    parts = [f"epoch {stats['epoch'] + 1}/{total_epochs} ({stats['phase']})", f"loss {stats['loss']:.4f}"]
    if "val_loss" in stats:
        parts += [f"val loss {stats['val_loss']:.4f}", f"val SRCC {stats['val_srcc_mean']:.3f}",
                  f"val acc {stats['val_binary_accuracy']:.3f}"]
    parts.append(f"{stats['seconds']:.1f}s")
    return ", ".join(parts)


if __name__ == "__main__":
    try:
        main(parse_args())
    except (data.ShardURLRefused, NotRegularFile, RemoteError) as exc:
        raise SystemExit(f"nima_train.train: {exc}") from None
