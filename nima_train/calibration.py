"""Calibration of predicted mean scores onto the human scale, and percentiles against a reference split.

NIMA ranks well but compresses its means towards the middle of the scale (every picture between 4 and 6),
so a threshold on the raw mean keeps almost nothing or almost everything. A calibration is a strictly
increasing map from predicted mean to true mean, fitted on a held-out split:

- isotonic (200 samples or more): scipy's isotonic regression, made strictly increasing by interpolating
  linearly through the midpoints of its blocks (a plateau would turn distinct predictions into ties and
  lose ranking), and extended beyond the end knots with the end segments' slopes;
- linear (fewer samples, where isotonic steps would follow noise): a least-squares line;
- none under MIN_CALIBRATION samples, where a line would follow noise too (nima_train.train stores none);
- shift (a fit whose slope is not positive, i.e. a model that does not rank at all): the raw mean moved to
  the true mean's average, so the ranking is kept and nothing is invented.

Calibrated means are clipped to the score range 1..10. The map also stores the quantiles of the fitting
split's calibrated means (1,001 knots by default, not the values), from which `percentile` says where a
calibrated mean falls among them.

Only numpy and scipy: a calibration travels inside a checkpoint as plain lists (loadable with
torch.load(weights_only=True)) and in the model card as JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np

# Below this many samples isotonic steps follow noise; a line is the honest fit.
MIN_ISOTONIC = 200
# Below this many even a line follows noise (a 6-sample fit doubled the demo's AVA test MAE): no calibration.
MIN_CALIBRATION = 20
N_QUANTILES = 1001
SCORE_RANGE = (1.0, 10.0)
METHODS = ("isotonic", "linear", "shift")


@dataclass(frozen=True)
class Calibration:
    method: str  # one of METHODS
    knots_x: tuple[float, ...]  # predicted means, strictly increasing
    knots_y: tuple[float, ...]  # calibrated means, strictly increasing
    slope_low: float  # extension below knots_x[0]
    slope_high: float  # extension above knots_x[-1]
    quantiles: tuple[float, ...]  # calibrated means of the fitting split at evenly spaced probabilities
    split: str  # what it was fitted on, e.g. "val"
    n: int  # how many samples

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got {self.method!r}")
        x, y = np.asarray(self.knots_x), np.asarray(self.knots_y)
        if len(x) < 2 or len(x) != len(y) or np.any(np.diff(x) <= 0) or np.any(np.diff(y) <= 0):
            raise ValueError("calibration knots must be two or more strictly increasing (x, y) pairs")
        if not (self.slope_low > 0 and self.slope_high > 0):
            raise ValueError("calibration end slopes must be positive")
        if len(self.quantiles) < 2 or np.any(np.diff(self.quantiles) < 0):
            raise ValueError("calibration quantiles must be two or more non-decreasing values")

    def apply(self, means: Any) -> np.ndarray:
        """Calibrated means (float64 array of means' shape), strictly increasing in the mean within 1..10."""
        m = np.asarray(means, dtype=np.float64)
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

    def percentile(self, calibrated: Any) -> np.ndarray:
        """Where calibrated means fall among the fitting split's, 0..100 (non-decreasing in the mean)."""
        values, middle = self._percentile_knots
        c = np.asarray(calibrated, dtype=np.float64)
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
                   split=str(d["split"]), n=int(d["n"]))

    def describe(self) -> str:
        return f"{self.method} calibration fitted on {self.n} {self.split} samples"


def fit_calibration(pred_mean: Any, true_mean: Any, split: str = "val", min_isotonic: int = MIN_ISOTONIC,
                    n_quantiles: int = N_QUANTILES) -> Calibration:
    """The calibration from predicted to true means of one split (both 1-D, equal length, finite)."""
    x = np.asarray(pred_mean, dtype=np.float64).ravel()
    y = np.asarray(true_mean, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"predicted ({x.size}) and true ({y.size}) means differ in length")
    if x.size < 2:
        raise ValueError(f"a calibration needs at least 2 samples, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("predicted and true means must be finite to fit a calibration")
    knots = _isotonic_knots(x, y) if x.size >= min_isotonic else None
    if knots is not None:
        method, kx, ky = "isotonic", *knots
        slope_low = (ky[1] - ky[0]) / (kx[1] - kx[0])
        slope_high = (ky[-1] - ky[-2]) / (kx[-1] - kx[-2])
    else:
        method, kx, ky = _linear_knots(x, y)
        slope_low = slope_high = (ky[1] - ky[0]) / (kx[1] - kx[0])
    draft = Calibration(method, tuple(map(float, kx)), tuple(map(float, ky)), float(slope_low), float(slope_high),
                        (0.0, 0.0), split, int(x.size))
    quantiles = np.quantile(draft.apply(x), np.linspace(0.0, 1.0, n_quantiles))
    return dataclasses.replace(draft, quantiles=tuple(float(v) for v in quantiles))


def _isotonic_knots(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Block midpoints of the isotonic fit, strictly increasing; None when it is one flat block."""
    from scipy.optimize import isotonic_regression

    # Equal predictions must get one calibrated value: fit on their averages, weighted by their counts.
    ux, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    uy = np.bincount(inverse, weights=y) / counts
    fit = isotonic_regression(uy, weights=counts.astype(np.float64))
    kx, ky, kw = [], [], []
    for start, stop in zip(fit.blocks[:-1], fit.blocks[1:], strict=True):
        w = counts[start:stop].astype(np.float64)
        mid, value = float(np.average(ux[start:stop], weights=w)), float(fit.x[start])
        if ky and value <= ky[-1]:  # scipy may leave equal neighbouring blocks unmerged: merge them here
            total = kw[-1] + w.sum()
            kx[-1] = (kx[-1] * kw[-1] + mid * w.sum()) / total
            kw[-1] = total
            continue
        kx.append(mid)
        ky.append(value)
        kw.append(float(w.sum()))
    if len(kx) < 2:
        return None
    return np.asarray(kx), np.asarray(ky)


def _linear_knots(x: np.ndarray, y: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """The method and two knots of the least-squares line, or of a shift when its slope is not positive."""
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    method, (slope, intercept) = "linear", np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, 0.0)
    if not slope > 0:
        method, slope, intercept = "shift", 1.0, float(y.mean() - x.mean())
    return method, np.array([lo, hi]), np.array([slope * lo + intercept, slope * hi + intercept])
