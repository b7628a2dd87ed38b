"""Calibration of predicted mean scores onto the human scale, and percentiles against a reference split.

NIMA ranks well but compresses its means towards the middle of the scale. A calibration is a non-decreasing
map from predicted mean to true mean, fitted on a held-out split, whose one job is to be the best estimate of
the human mean: it must never make the error worse. An error-minimising map has a spread of about the
correlation times the truth's, so a map that widens the scale to the truth's full spread buys that spread with
error whenever the model ranks imperfectly (measured on real Kuler ratings: SRCC 0.67, calibrated MAE 12%
worse than raw). The full-range score a person thresholds is the percentile, not the calibrated mean.

So the method is chosen by k-fold cross-validation (k = CV_FOLDS) on the fitting split, on mean absolute error:

- none: the raw mean (clipped to 1..10), which wins every tie;
- linear: a least-squares line, extended with its own slope (a shift of the raw mean when the slope is not
  positive, i.e. a model that does not rank);
- isotonic (MIN_ISOTONIC samples or more): scipy's isotonic regression, its blocks merged until each holds at
  least MIN_BLOCK_FRACTION of the samples (a line through the midpoints of small blocks is steeper than the
  steps it replaces), interpolated linearly between block midpoints. Beyond the end knots it is flat (clipped
  to the end values) or follows the linear fit's slope, whichever cross-validates better: an end segment's own
  slope rests on a handful of samples and sends predictions outside the fitting range far off.

A method is taken over a simpler one (none < linear < isotonic) only when it lowers the cross-validated MAE by
more than TIE_MARGIN (relative). The choice, each candidate's error and the reason travel with the map
(`selection`). Under MIN_CALIBRATION samples nothing is fitted (nima_train.train stores none).

Calibrated means are clipped to the score range 1..10. The map also stores the quantiles of the fitting
split's predicted means (1,001 knots by default), from which `percentile` says where a prediction falls among
them: the full-range score to threshold. It is taken from the raw mean, not the calibrated one, so it keeps
the model's whole ranking where the calibration is flat (beyond its end knots) and whichever method won.

Only numpy and scipy: a calibration travels inside a checkpoint as plain lists and dicts (loadable with
torch.load(weights_only=True)) and in the model card as JSON.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

# Below this many samples isotonic steps follow noise; it is not a candidate.
MIN_ISOTONIC = 200
# Below this many even a line follows noise (a 6-sample fit doubled the demo's AVA test MAE): no calibration.
MIN_CALIBRATION = 20
# Each isotonic block holds at least this share of the fitting samples, so no segment rests on a handful.
MIN_BLOCK_FRACTION = 0.02
CV_FOLDS = 5
# A more complex method must beat a simpler one's cross-validated MAE by more than this share to be chosen:
# differences below it are fold noise, and the simpler map is the safer one on new data.
TIE_MARGIN = 0.01
N_QUANTILES = 1001
SCORE_RANGE = (1.0, 10.0)
METHODS = ("none", "linear", "shift", "isotonic")
# The candidates cross-validation compares, simplest first (ties go to the earlier one).
CANDIDATES = ("none", "linear", "isotonic-flat", "isotonic-linear")


@dataclass(frozen=True)
class Calibration:
    method: str  # one of METHODS
    knots_x: tuple[float, ...]  # predicted means, strictly increasing
    knots_y: tuple[float, ...]  # calibrated means, strictly increasing
    slope_low: float  # extension below knots_x[0]; 0 is flat
    slope_high: float  # extension above knots_x[-1]; 0 is flat
    quantiles: tuple[float, ...]  # predicted means of the fitting split at evenly spaced probabilities
    split: str  # what it was fitted on, e.g. "val"
    n: int  # how many samples
    # How the method was chosen: {"folds", "cv_mae": {candidate: MAE}, "chosen", "reason"}; empty when it was
    # not chosen by cross-validation (then promotion does not compare calibrated errors).
    selection: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got {self.method!r}")
        x, y = np.asarray(self.knots_x), np.asarray(self.knots_y)
        if len(x) < 2 or len(x) != len(y) or np.any(np.diff(x) <= 0) or np.any(np.diff(y) <= 0):
            raise ValueError("calibration knots must be two or more strictly increasing (x, y) pairs")
        if not (self.slope_low >= 0 and self.slope_high >= 0):
            raise ValueError("calibration end slopes must not be negative")
        if len(self.quantiles) < 2 or np.any(np.diff(self.quantiles) < 0):
            raise ValueError("calibration quantiles must be two or more non-decreasing values")

    @property
    def cross_validated(self) -> bool:
        return bool(self.selection)

    def apply(self, means: Any) -> np.ndarray:
        """Calibrated means (float64 array of means' shape), non-decreasing in the mean, within 1..10."""
        m = np.asarray(means, dtype=np.float64)
        if self.method == "none":
            return np.clip(m, *SCORE_RANGE)
        x, y = np.asarray(self.knots_x), np.asarray(self.knots_y)
        out = np.interp(m, x, y)
        out = np.where(m < x[0], y[0] + (m - x[0]) * self.slope_low, out)
        out = np.where(m > x[-1], y[-1] + (m - x[-1]) * self.slope_high, out)
        return np.clip(out, *SCORE_RANGE)

    @cached_property
    def _percentile_knots(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct quantile values and their positions (0..100), computed once, not per scored batch."""
        q = np.asarray(self.quantiles)
        positions = np.linspace(0.0, 100.0, len(q))
        # Tied quantiles (many equal values) share the middle of their positions, so the map is a function.
        values, inverse = np.unique(q, return_inverse=True)
        return values, np.bincount(inverse, weights=positions) / np.bincount(inverse)

    def percentile(self, means: Any) -> np.ndarray:
        """Where predicted (raw) means fall among the fitting split's, 0..100 (non-decreasing in the mean)."""
        values, middle = self._percentile_knots
        c = np.asarray(means, dtype=np.float64)
        if len(values) == 1:
            return np.where(c < values[0], 0.0, np.where(c > values[0], 100.0, middle[0]))
        return np.interp(c, values, middle, left=0.0, right=100.0)

    def as_dict(self) -> dict[str, Any]:
        """Plain Python values only (no numpy scalars), so torch.load(weights_only=True) reads them back."""
        d = asdict(self)
        return {k: [float(x) for x in v] if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(method=str(d["method"]), knots_x=tuple(map(float, d["knots_x"])),
                   knots_y=tuple(map(float, d["knots_y"])), slope_low=float(d["slope_low"]),
                   slope_high=float(d["slope_high"]), quantiles=tuple(map(float, d["quantiles"])),
                   split=str(d["split"]), n=int(d["n"]), selection=dict(d.get("selection") or {}))

    def describe(self) -> str:
        text = f"{self.method} calibration fitted on {self.n} {self.split} samples"
        if self.method == "isotonic":
            text += ", flat beyond its end knots" if self.slope_high == 0 else ", linear beyond its end knots"
        if self.selection:
            text += f" (chosen by {self.selection['folds']}-fold cross-validation: {self.selection['reason']})"
        return text


def fit_calibration(pred_mean: Any, true_mean: Any, split: str = "val", min_isotonic: int = MIN_ISOTONIC,
                    n_quantiles: int = N_QUANTILES, folds: int = CV_FOLDS) -> Calibration:
    """The calibration from predicted to true means of one split (both 1-D, equal length, finite), its method
    chosen by `folds`-fold cross-validation on MAE (see the module's docstring)."""
    x, y = _checked(pred_mean, true_mean)
    candidates = [c for c in CANDIDATES if not c.startswith("isotonic") or x.size >= min_isotonic]
    cv_mae = {name: _cross_validated_mae(_FITTERS[name], x, y, folds) for name in candidates}
    chosen, reason = _choose(cv_mae)
    draft = dataclasses.replace(_FITTERS[chosen](x, y), split=split, n=int(x.size),
                                selection={"folds": int(folds), "cv_mae": cv_mae, "chosen": chosen,
                                           "reason": reason})
    quantiles = np.quantile(x, np.linspace(0.0, 1.0, n_quantiles))
    return dataclasses.replace(draft, quantiles=tuple(float(v) for v in quantiles))


def _checked(pred_mean: Any, true_mean: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(pred_mean, dtype=np.float64).ravel()
    y = np.asarray(true_mean, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"predicted ({x.size}) and true ({y.size}) means differ in length")
    if x.size < 2:
        raise ValueError(f"a calibration needs at least 2 samples, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("predicted and true means must be finite to fit a calibration")
    return x, y


def _cross_validated_mae(fit: Callable[[np.ndarray, np.ndarray], Calibration], x: np.ndarray, y: np.ndarray,
                         folds: int) -> float:
    """MAE of `fit`'s maps on the held-out folds, pooled over all samples. The folds come from a fixed
    permutation, so the same split always gives the same choice."""
    fold_of = np.random.default_rng(0).permutation(x.size) % max(2, min(folds, x.size))
    errors = np.empty_like(y)
    for k in np.unique(fold_of):
        held = fold_of == k
        errors[held] = np.abs(fit(x[~held], y[~held]).apply(x[held]) - y[held])
    return float(errors.mean())


def _choose(cv_mae: dict[str, float]) -> tuple[str, str]:
    """The simplest candidate whose cross-validated MAE no later candidate beats by more than TIE_MARGIN."""
    chosen = "none"
    for name in cv_mae:
        if cv_mae[name] < cv_mae[chosen] * (1 - TIE_MARGIN):
            chosen = name
    if chosen == "none":
        return chosen, (f"no method lowered the raw mean's cross-validated MAE ({cv_mae['none']:.4f}) by more "
                        f"than {TIE_MARGIN:.0%}")
    return chosen, f"cross-validated MAE {cv_mae['none']:.4f} raw -> {cv_mae[chosen]:.4f}"


def _draft(method: str, kx: Any, ky: Any, slope_low: float, slope_high: float) -> Calibration:
    """A map without its split, size and quantiles (fit_calibration fills them in)."""
    return Calibration(method, tuple(map(float, kx)), tuple(map(float, ky)), float(slope_low), float(slope_high),
                       (0.0, 0.0), "", 0)


def _fit_none(x: np.ndarray, y: np.ndarray) -> Calibration:
    return _draft("none", SCORE_RANGE, SCORE_RANGE, 1.0, 1.0)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[str, float, float]:
    """The method, slope and intercept of the least-squares line, or of a shift when its slope is not positive."""
    slope, intercept = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, 0.0)
    if not slope > 0:
        return "shift", 1.0, float(y.mean() - x.mean())
    return "linear", float(slope), float(intercept)


def _fit_linear(x: np.ndarray, y: np.ndarray) -> Calibration:
    method, slope, intercept = _line(x, y)
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    return _draft(method, (lo, hi), (slope * lo + intercept, slope * hi + intercept), slope, slope)


def _isotonic_fitter(tails: str) -> Callable[[np.ndarray, np.ndarray], Calibration]:
    def fit(x: np.ndarray, y: np.ndarray) -> Calibration:
        knots = _isotonic_knots(x, y)
        if knots is None:  # one flat block: nothing monotone to follow, the line is the honest fit
            return _fit_linear(x, y)
        method, slope, _ = _line(x, y)
        tail = slope if tails == "linear" and method == "linear" else 0.0
        return _draft("isotonic", *knots, tail, tail)
    return fit


_FITTERS: dict[str, Callable[[np.ndarray, np.ndarray], Calibration]] = {
    "none": _fit_none, "linear": _fit_linear,
    "isotonic-flat": _isotonic_fitter("flat"), "isotonic-linear": _isotonic_fitter("linear"),
}


def _isotonic_knots(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Block midpoints of the isotonic fit, each block at least MIN_BLOCK_FRACTION of the samples, strictly
    increasing; None when it is one flat block."""
    from scipy.optimize import isotonic_regression

    # Equal predictions must get one calibrated value: fit on their averages, weighted by their counts.
    ux, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    uy = np.bincount(inverse, weights=y) / counts
    fit = isotonic_regression(uy, weights=counts.astype(np.float64))
    min_weight = max(1.0, MIN_BLOCK_FRACTION * x.size)
    blocks: list[list[float]] = []  # [weight, weighted x sum, weighted y sum]
    for start, stop in zip(fit.blocks[:-1], fit.blocks[1:], strict=True):
        w = counts[start:stop].astype(np.float64)
        block = [float(w.sum()), float(ux[start:stop] @ w), float(fit.x[start]) * float(w.sum())]
        last = blocks[-1] if blocks else None
        # Merge into the previous block while it is too small, or when scipy left equal neighbours unmerged.
        if last is not None and (last[0] < min_weight or block[2] / block[0] <= last[2] / last[0]):
            blocks[-1] = [a + b for a, b in zip(last, block, strict=True)]
        else:
            blocks.append(block)
    if len(blocks) > 1 and blocks[-1][0] < min_weight:  # a small last block joins its neighbour
        blocks[-2:] = [[a + b for a, b in zip(*blocks[-2:], strict=True)]]
    if len(blocks) < 2:
        return None
    weights, xs, ys = (np.asarray(v) for v in zip(*blocks, strict=True))
    return xs / weights, ys / weights
