"""Evaluate a NIMA checkpoint on a test split and write a Markdown report with plots.

    python -m nima_train.evaluate --checkpoint models/nima_ava/<version>/model.pt \\
        --data $AESTHETIC_HOME/shards/ava/test --out $AESTHETIC_HOME/reports/<version>/ava-test

The report (report.md, metrics.json, and PNG plots) shows predicted against true mean score coloured as the
original notebook did (green |error| < 0.5, orange < 1, red beyond), the histogram of predicted means, and
the training loss curves when the checkpoint's summary.json is given.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.arguments import Parser, existing_file, folder
from common.bounds import flag
from common.regular_files import NotRegularFile
from common.remote import RemoteError
from nima_train.calibration import Calibration
from nima_train.checkpoint import NotACheckpoint, calibration_of, load_checkpoint, model_from_state
from nima_train.data import PIPE_FLAG, ShardURLRefused, batch_to_device, resolve_shards, split_loader
from nima_train.devices import torch_device
from nima_train.distributed import all_gather_tensors
from nima_train.metrics import EvalMetrics, compute_metrics
from nima_train.model import score_moments
from nima_train.settings import EvalSettings


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device, amp: bool = False,
            gather: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true distributions (n, 10) in float32 on the CPU; gathered over ranks when asked."""
    was_training = model.training
    model.eval()
    preds, targets = [], []
    for images, target in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            preds.append(model(batch_to_device(images, device)).float())
        targets.append(target.to(device).float())
    model.train(was_training)
    pred = torch.cat(preds) if preds else torch.zeros((0, 10), device=device)
    target = torch.cat(targets) if targets else torch.zeros((0, 10), device=device)
    if gather:
        pred, target = all_gather_tensors(pred), all_gather_tensors(target)
    return pred.cpu(), target.cpu()


@dataclass
class Evaluation:
    metrics: EvalMetrics
    pred: torch.Tensor
    target: torch.Tensor
    calibration: Calibration | None = None


def evaluate_checkpoint(checkpoint: str | Path, data: list[str | Path], batch_size: int = 64,
                        crop: int | None = None, resize: int | None = None, workers: int = 1,
                        device: str = "cpu", allow_pipe: bool = False) -> Evaluation:
    """Metrics of a checkpoint on shards, at the crop/resize it was trained with unless given; the calibrated
    ones too when the checkpoint carries a calibration. `pipe:` shard URLs only with allow_pipe
    (nima_train.data.resolve_shards)."""
    state = load_checkpoint(checkpoint)
    trained_with, calibration = state.get("args") or {}, calibration_of(state)
    model = model_from_state(state, checkpoint).to(device)
    loader = split_loader(  # the reader and transforms training used
        resolve_shards(data, allow_pipe).urls, train=False, crop=crop or int(trained_with.get("crop", 224)),
        resize=resize or int(trained_with.get("resize", 256)), batch_size=batch_size, workers=workers)
    pred, target = predict(model, loader, torch.device(device))
    if pred.shape[0] == 0:
        raise ValueError(f"no samples in {', '.join(map(str, data))}")
    return Evaluation(compute_metrics(pred, target, calibration=calibration), pred, target, calibration)


# ----------------------------------------------------------------------------- report

ERROR_COLOURS = (("green", 0.5), ("orange", 1.0), ("red", math.inf))


def error_colours(pred_mean: torch.Tensor, true_mean: torch.Tensor) -> list[str]:
    """The notebook's colouring: green for |error| < 0.5, orange < 1, red beyond."""
    errors = (pred_mean - true_mean).abs().tolist()
    return [next(c for c, limit in ERROR_COLOURS if e < limit) for e in errors]


def reliability_bins(predicted: np.ndarray, true: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Average predicted and true mean in equal-count bins of the prediction (fewer bins for few samples)."""
    order = np.argsort(predicted, kind="stable")
    groups = [g for g in np.array_split(order, max(1, min(bins, len(order) // 5))) if len(g)]
    return np.array([predicted[g].mean() for g in groups]), np.array([true[g].mean() for g in groups])


def _plots(out: Path, ev: Evaluation, history: list[dict[str, Any]], title: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pm, _ = score_moments(ev.pred.double())
    tm, _ = score_moments(ev.target.double())
    files = []
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(tm.numpy(), pm.numpy(), c=error_colours(pm, tm), s=12, alpha=0.8)
    lo, hi = float(min(tm.min(), pm.min())) - 0.2, float(max(tm.max(), pm.max())) + 0.2
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
    ax.set(xlabel="true mean score", ylabel="predicted mean score", title=f"{title}: predicted vs true")
    fig.savefig(out / "pred_vs_true.png", dpi=100, bbox_inches="tight")
    files.append("pred_vs_true.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(pm.numpy(), bins=30, range=(1, 10), color="steelblue", alpha=0.8, label="predicted")
    ax.hist(tm.numpy(), bins=30, range=(1, 10), color="grey", alpha=0.4, label="true")
    ax.set(xlabel="mean score", ylabel="images", title="mean scores")
    ax.legend()
    fig.savefig(out / "pred_hist.png", dpi=100, bbox_inches="tight")
    files.append("pred_hist.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    curves = [("raw", pm.numpy(), "steelblue")]
    if ev.calibration is not None:
        curves.append(("calibrated", ev.calibration.apply(pm.numpy()), "darkorange"))
    for label, predicted, colour in curves:
        px, ty = reliability_bins(predicted, tm.numpy())
        ax.plot(px, ty, marker="o", color=colour, label=label)
    ax.plot([1, 10], [1, 10], color="grey", lw=1)
    ax.set(xlabel="predicted mean score (bin average)", ylabel="true mean score (bin average)",
           title="reliability", xlim=(1, 10), ylim=(1, 10))
    ax.legend()
    fig.savefig(out / "reliability.png", dpi=100, bbox_inches="tight")
    files.append("reliability.png")
    plt.close(fig)

    if history:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        epochs = [h["epoch"] + 1 for h in history]
        ax.plot(epochs, [h["loss"] for h in history], marker="o", label="train")
        if all("val_loss" in h for h in history):
            ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val")
        ax.set(xlabel="epoch", ylabel="EMD loss", title="loss curves")
        ax.legend()
        fig.savefig(out / "loss_curves.png", dpi=100, bbox_inches="tight")
        files.append("loss_curves.png")
        plt.close(fig)
    return files


def write_report(out: str | Path, ev: Evaluation, title: str, history: list[dict[str, Any]] | None = None,
                 extra: dict[str, Any] | None = None) -> Path:
    """report.md, metrics.json and the plots under `out`; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(out, ev, history or [], title)
    m = ev.metrics.as_dict()
    (out / "metrics.json").write_text(json.dumps({**m, **(extra or {})}, indent=2, sort_keys=True))
    pm, _ = score_moments(ev.pred.double())
    tm, _ = score_moments(ev.target.double())
    colours = error_colours(pm, tm)
    shares = {c: colours.count(c) / len(colours) for c, _ in ERROR_COLOURS}
    lines = [f"# {title}", ""]
    lines += [f"- {k}: {v}" for k, v in (extra or {}).items()]
    lines.append("- calibration: " + (ev.calibration.describe() if ev.calibration else
                                      "none (the model was trained without a validation split)"))
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in m.items()]
    lines += ["", f"Errors: {shares['green']:.0%} under 0.5 (green), {shares['orange']:.0%} under 1 (orange), "
              f"{shares['red']:.0%} beyond (red).", ""]
    lines += [f"![{p}]({p})" for p in plots]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m nima_train.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=existing_file, required=True)
    p.add_argument("--data", nargs="+", required=True, help="test shard folders or .tar files")
    p.add_argument(PIPE_FLAG, action="store_true",
                   help="let shard URLs given here or listed by a local index.json be pipe: shell commands")
    p.add_argument("--out", type=folder, required=True, help="report folder")
    p.add_argument("--summary", type=existing_file, help="the training run's summary.json (for loss curves)")
    p.add_argument("--batch-size", **flag(EvalSettings, "batch_size"))
    p.add_argument("--device", type=torch_device, default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    try:
        history = json.loads(Path(args.summary).read_text()).get("history", []) if args.summary else []
        ev = evaluate_checkpoint(args.checkpoint, args.data, args.batch_size, device=args.device,
                                 allow_pipe=args.allow_pipe)
    # The user's files and URLs, not a bug here: one line each.
    except (NotACheckpoint, ShardURLRefused, NotRegularFile, RemoteError, FileNotFoundError, ValueError) as exc:
        p.exit(1, f"{p.prog}: {' '.join(str(exc).split())}\n")
    print(write_report(args.out, ev, Path(args.checkpoint).parent.name, history))
    print(json.dumps(ev.metrics.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
