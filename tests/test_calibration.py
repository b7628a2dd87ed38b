"""Calibration of predicted means: strictly increasing, fitted honestly, stored in plain values."""

import numpy as np
import pytest
import torch

from nima_train.calibration import Calibration, fit_calibration
from nima_train.metrics import mean_errors


def _compressed_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True means spread 2..8; predictions squeezed to 30% of that spread around 5, plus noise (NIMA's habit)."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(2, 8, n)
    return 5 + 0.3 * (true - 5) + rng.normal(0, 0.15, n), true


def test_isotonic_calibration_is_strictly_increasing_and_improves_mae_and_spread_on_held_out_data():
    val_pred, val_true = _compressed_split(1000, seed=0)
    test_pred, test_true = _compressed_split(1000, seed=1)
    cal = fit_calibration(val_pred, val_true)
    assert cal.method == "isotonic" and (cal.split, cal.n) == ("val", 1000)
    grid = np.linspace(0.5, 10.5, 20001)
    mapped = cal.apply(grid)
    inside = (mapped > 1.0) & (mapped < 10.0)
    assert np.all(np.diff(mapped)[inside[1:] & inside[:-1]] > 0)  # no plateau anywhere it is not clipped
    assert mapped.min() >= 1.0 and mapped.max() <= 10.0
    raw_mae, _, raw_spread = mean_errors(test_pred, test_true)
    cal_mae, _, cal_spread = mean_errors(cal.apply(test_pred), test_true)
    assert cal_mae < 0.6 * raw_mae
    assert raw_spread < 0.4 and 0.85 < cal_spread < 1.15


def test_distinct_predictions_stay_distinct_after_calibration():
    pred, true = _compressed_split(400, seed=2)
    cal = fit_calibration(pred, true)
    assert len(np.unique(cal.apply(pred))) == len(np.unique(pred))


def test_equal_predictions_get_one_calibrated_value():
    pred = np.repeat(np.linspace(4, 6, 50), 5)
    true = pred * 2 - 5 + np.tile([-0.5, -0.2, 0.0, 0.2, 0.5], 50)
    cal = fit_calibration(pred, true)
    assert len(np.unique(cal.apply(pred))) == 50


def test_under_200_samples_the_calibration_is_a_line_and_says_so():
    pred, true = _compressed_split(150, seed=3)
    cal = fit_calibration(pred, true)
    assert cal.method == "linear" and len(cal.knots_x) == 2
    assert "linear calibration fitted on 150 val samples" == cal.describe()
    slope = (cal.knots_y[1] - cal.knots_y[0]) / (cal.knots_x[1] - cal.knots_x[0])
    assert 2.5 < slope < 3.8  # undoes the 0.3 compression


def test_a_model_that_does_not_rank_is_only_shifted_never_inverted():
    pred, true = _compressed_split(100, seed=4)
    cal = fit_calibration(pred, -true + 10)
    assert cal.method == "shift"
    assert np.all(np.diff(cal.apply(np.sort(pred))) > 0)


def test_percentile_runs_0_to_100_and_rises_with_the_calibrated_mean():
    pred, true = _compressed_split(1000, seed=5)
    cal = fit_calibration(pred, true)
    assert len(cal.quantiles) == 1001
    levels = cal.percentile(cal.apply(np.linspace(1, 10, 500)))
    assert levels[0] == 0.0 and levels[-1] == 100.0 and np.all(np.diff(levels) >= 0)
    own = cal.percentile(cal.apply(pred))
    assert abs(np.median(own) - 50) < 2  # the fitting split sits evenly across its own percentiles


def test_a_calibration_round_trips_through_a_weights_only_checkpoint(tmp_path):
    pred, true = _compressed_split(300, seed=6)
    cal = fit_calibration(pred, true)
    torch.save({"calibration": cal.as_dict()}, tmp_path / "c.pt")
    back = Calibration.from_dict(torch.load(tmp_path / "c.pt", weights_only=True)["calibration"])
    assert back == cal


@pytest.mark.parametrize("pred, true, message", [
    ([5.0], [5.0], "at least 2 samples"),
    ([5.0, float("nan")], [5.0, 6.0], "finite"),
    ([5.0, 6.0], [5.0], "differ in length"),
])
def test_fitting_refuses_what_cannot_be_calibrated(pred, true, message):
    with pytest.raises(ValueError, match=message):
        fit_calibration(pred, true)
