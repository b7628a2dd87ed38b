"""Calibration of predicted means: strictly increasing, fitted honestly, stored in plain values."""

import numpy as np
import pytest
import torch

from nima_train import calibration
from nima_train.calibration import Calibration, fit_calibration
from nima_train.metrics import mean_errors


def _compressed_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True means spread 2..8; predictions squeezed to 30% of that spread around 5, plus noise (NIMA's habit)."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(2, 8, n)
    return 5 + 0.3 * (true - 5) + rng.normal(0, 0.15, n), true


def _real_case_shape(n: int, seed: int, outliers: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The shape measured on real Kuler ratings: predictions correlated 0.67 with the truth and squeezed to 0.6 of
    its spread; `outliers` of them pushed 1 to 2.5 points further out (beyond the range a fit saw)."""
    rng = np.random.default_rng(seed)
    true = np.clip(rng.normal(3.0, 0.6, n), 1, 5) * 2 - 1
    z = (true - true.mean()) / true.std()
    pred = true.mean() + 0.6 * true.std() * (0.67 * z + np.sqrt(1 - 0.67**2) * rng.normal(size=n))
    far = rng.choice(n, int(outliers * n), replace=False)
    pred[far] += np.sign(pred[far] - true.mean()) * rng.uniform(1.0, 2.5, far.size)
    return pred, true


def _lcc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_the_real_case_shape_the_calibrated_mean_is_never_worse_than_the_raw_one(seed):
    pred, true = _real_case_shape(2000, seed)
    far_pred, far_true = _real_case_shape(2000, seed + 100, outliers=0.05)
    fit, held = np.arange(2000) < 1000, np.arange(2000) >= 1000
    cal = fit_calibration(pred[fit], true[fit])
    test_pred, test_true = np.concatenate([pred[held], far_pred[held]]), np.concatenate([true[held], far_true[held]])
    assert test_pred.max() > pred[fit].max() and test_pred.min() < pred[fit].min()  # outliers beyond the fit
    raw_mae, _, _ = mean_errors(test_pred, test_true)
    cal_mae, _, _ = mean_errors(cal.apply(test_pred), test_true)
    assert cal_mae <= raw_mae
    assert _lcc(cal.apply(test_pred), test_true) >= _lcc(test_pred, test_true) - 0.01


def test_on_a_compressed_scale_the_chosen_calibration_more_than_halves_held_out_mae_and_restores_spread():
    val_pred, val_true = _compressed_split(1000, seed=0)
    test_pred, test_true = _compressed_split(1000, seed=1)
    cal = fit_calibration(val_pred, val_true)
    assert cal.method in ("isotonic", "linear") and (cal.split, cal.n) == ("val", 1000)
    grid = np.linspace(cal.knots_x[0], cal.knots_x[-1], 20001)
    mapped = cal.apply(grid)
    inside = (mapped > 1.0) & (mapped < 10.0)
    assert np.all(np.diff(mapped)[inside[1:] & inside[:-1]] > 0)  # no plateau between the end knots
    assert np.all(np.diff(cal.apply(np.linspace(0.5, 10.5, 2001))) >= 0)
    raw_mae, _, raw_spread = mean_errors(test_pred, test_true)
    cal_mae, _, cal_spread = mean_errors(cal.apply(test_pred), test_true)
    assert cal_mae < 0.6 * raw_mae
    assert raw_spread < 0.4 and 0.85 < cal_spread < 1.15


def test_the_choice_the_folds_errors_and_the_reason_travel_with_the_map():
    pred, true = _compressed_split(500, seed=7)
    cal = fit_calibration(pred, true)
    sel = cal.selection
    assert sel["folds"] == 5 and set(sel["cv_mae"]) == {"none", "linear", "isotonic-flat", "isotonic-linear"}
    assert sel["chosen"].split("-")[0] == cal.method and sel["reason"]
    assert sel["cv_mae"][sel["chosen"]] == min(sel["cv_mae"].values())
    assert cal.cross_validated and "cross-validation" in cal.describe()


def test_a_calibration_that_cannot_beat_the_raw_mean_by_the_margin_is_none_and_keeps_the_raw_mean():
    rng = np.random.default_rng(8)
    pred = rng.uniform(2, 8, 600)
    true = pred + rng.normal(0, 0.5, 600)  # the prediction already is the expected human mean: nothing to correct
    cal = fit_calibration(pred, true)
    assert cal.method == "none" and cal.selection["chosen"] == "none"
    assert np.array_equal(cal.apply(pred), np.clip(pred, 1, 10))
    assert abs(np.median(cal.percentile(pred)) - 50) < 2  # percentiles still there


def test_beyond_the_end_knots_an_isotonic_map_is_flat_or_follows_the_linear_fit():
    pred, true = _compressed_split(1000, seed=9)
    for tails in ("isotonic-flat", "isotonic-linear"):
        cal = calibration._FITTERS[tails](pred, true)
        assert cal.method == "isotonic"
        expected = 0.0 if tails == "isotonic-flat" else float(np.polyfit(pred, true, 1)[0])
        assert cal.slope_low == pytest.approx(expected) and cal.slope_high == pytest.approx(expected)


def test_no_isotonic_segment_rests_on_fewer_than_two_percent_of_the_samples():
    pred, true = _real_case_shape(1000, seed=10)
    cal = calibration._FITTERS["isotonic-flat"](pred, true)
    edges = np.concatenate([[-np.inf], (np.asarray(cal.knots_x[1:]) + cal.knots_x[:-1]) / 2, [np.inf]])
    per_knot = np.histogram(pred, bins=edges)[0]
    assert len(cal.knots_x) < 50 and per_knot.min() >= 5


def test_distinct_predictions_stay_distinct_after_calibration():
    pred, true = _compressed_split(400, seed=2)
    cal = fit_calibration(pred, true)
    assert len(np.unique(cal.apply(pred))) == len(np.unique(pred))


def test_equal_predictions_get_one_calibrated_value():
    pred = np.repeat(np.linspace(4, 6, 50), 5)
    true = pred * 2 - 5 + np.tile([-0.5, -0.2, 0.0, 0.2, 0.5], 50)
    cal = fit_calibration(pred, true)
    assert len(np.unique(cal.apply(pred))) == 50


def test_under_200_samples_isotonic_is_no_candidate_and_the_line_says_so():
    pred, true = _compressed_split(150, seed=3)
    cal = fit_calibration(pred, true)
    assert cal.method == "linear" and len(cal.knots_x) == 2 and set(cal.selection["cv_mae"]) == {"none", "linear"}
    assert cal.describe().startswith("linear calibration fitted on 150 val samples (chosen by 5-fold")
    slope = (cal.knots_y[1] - cal.knots_y[0]) / (cal.knots_x[1] - cal.knots_x[0])
    assert 2.5 < slope < 3.8  # undoes the 0.3 compression


def test_a_model_that_does_not_rank_is_only_shifted_never_inverted():
    pred, true = _compressed_split(100, seed=4)
    assert calibration._fit_linear(pred, -true + 10).method == "shift"
    cal = fit_calibration(pred, -true + 10)
    assert cal.method in ("shift", "none")
    assert np.all(np.diff(cal.apply(np.sort(pred))) > 0)


def test_percentile_runs_0_to_100_and_rises_with_the_mean_even_where_the_calibration_is_flat():
    pred, true = _compressed_split(1000, seed=5)
    cal = fit_calibration(pred, true)
    assert len(cal.quantiles) == 1001
    levels = cal.percentile(np.linspace(1, 10, 500))
    assert levels[0] == 0.0 and levels[-1] == 100.0 and np.all(np.diff(levels) >= 0)
    own = cal.percentile(pred)
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
