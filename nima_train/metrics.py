"""Evaluation metrics of NIMA (paper section 4) and of the original notebook, on whole test sets."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import stats

from nima_train.losses import emd
from nima_train.model import score_moments


@dataclass(frozen=True)
class EvalMetrics:
    n: int
    binary_accuracy: float  # mean >= 5 against < 5, as the paper
    exact_accuracy: float  # |predicted mean - true mean| < 0.5, as the notebook
    lcc_mean: float
    srcc_mean: float
    lcc_std: float
    srcc_std: float
    emd_r1: float
    emd_r2: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _corr(fn, a: np.ndarray, b: np.ndarray) -> float:
    """A correlation, or NaN when one side is constant (scipy warns and returns NaN itself)."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(fn(a, b)[0])


def compute_metrics(pred: torch.Tensor, target: torch.Tensor, threshold: float = 5.0,
                    tolerance: float = 0.5) -> EvalMetrics:
    """All metrics for predicted and true score distributions, both (n, 10) and summing to 1."""
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must be equal (n, 10) shapes")
    if pred.shape[0] == 0:
        raise ValueError("no samples to evaluate")
    pred, target = pred.double(), target.double()
    pm, ps = score_moments(pred)
    tm, ts = score_moments(target)
    pm_np, ps_np, tm_np, ts_np = (x.cpu().numpy() for x in (pm, ps, tm, ts))
    return EvalMetrics(
        n=int(pred.shape[0]),
        binary_accuracy=float(((pm_np >= threshold) == (tm_np >= threshold)).mean()),
        exact_accuracy=float((np.abs(pm_np - tm_np) < tolerance).mean()),
        lcc_mean=_corr(stats.pearsonr, pm_np, tm_np),
        srcc_mean=_corr(stats.spearmanr, pm_np, tm_np),
        lcc_std=_corr(stats.pearsonr, ps_np, ts_np),
        srcc_std=_corr(stats.spearmanr, ps_np, ts_np),
        emd_r1=float(emd(pred, target, 1.0).mean()),
        emd_r2=float(emd(pred, target, 2.0).mean()),
    )
