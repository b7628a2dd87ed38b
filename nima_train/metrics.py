"""Evaluation metrics of NIMA (paper section 4) and of the original notebook, on whole test sets."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import stats

from nima_train.calibration import Calibration
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
    mae_mean: float  # mean |predicted mean - true mean|, in score units
    rmse_mean: float
    spread_ratio: float  # std of predicted means / std of true means: 1 is an uncompressed scale
    # The same through the model's calibration; None for a model without one.
    mae_mean_calibrated: float | None = None
    rmse_mean_calibrated: float | None = None
    spread_ratio_calibrated: float | None = None
    srcc_mean_calibrated: float | None = None

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _corr(fn, a: np.ndarray, b: np.ndarray) -> float:
    """A correlation, or NaN when one side is constant (scipy warns and returns NaN itself)."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(fn(a, b)[0])


def mean_errors(pred_mean: np.ndarray, true_mean: np.ndarray) -> tuple[float, float, float]:
    """MAE, RMSE and spread ratio of predicted against true means (the ratio is NaN for constant truths)."""
    err = pred_mean - true_mean
    true_std = float(np.std(true_mean))
    spread = float(np.std(pred_mean)) / true_std if true_std > 0 else float("nan")
    return float(np.mean(np.abs(err))), float(np.sqrt(np.mean(err**2))), spread


def compute_metrics(pred: torch.Tensor, target: torch.Tensor, threshold: float = 5.0,
                    tolerance: float = 0.5, calibration: Calibration | None = None) -> EvalMetrics:
    """All metrics for predicted and true score distributions, both (n, 10) and summing to 1; the
    calibrated ones too when a calibration is given."""
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must be equal (n, 10) shapes")
    if pred.shape[0] == 0:
        raise ValueError("no samples to evaluate")
    pred, target = pred.double(), target.double()
    pm, ps = score_moments(pred)
    tm, ts = score_moments(target)
    pm_np, ps_np, tm_np, ts_np = (x.cpu().numpy() for x in (pm, ps, tm, ts))
    calibrated = {}
    if calibration is not None:
        cm = calibration.apply(pm_np)
        mae, rmse, spread = mean_errors(cm, tm_np)
        calibrated = {"mae_mean_calibrated": mae, "rmse_mean_calibrated": rmse, "spread_ratio_calibrated": spread,
                      "srcc_mean_calibrated": _corr(stats.spearmanr, cm, tm_np)}
    mae, rmse, spread = mean_errors(pm_np, tm_np)
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
        mae_mean=mae,
        rmse_mean=rmse,
        spread_ratio=spread,
        **calibrated,
    )
