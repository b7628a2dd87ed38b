"""Evaluation metrics against hand-computed values."""

import math

import pytest
import torch

from nima_train.metrics import compute_metrics


def one_hot(score: int) -> list[float]:
    return [1.0 if s == score else 0.0 for s in range(1, 11)]


def test_perfect_predictions_score_perfectly():
    p = torch.tensor([one_hot(3), [0, 0, 0, 0, 0.5, 0.5, 0, 0, 0, 0], one_hot(8), [0.1] * 10])
    m = compute_metrics(p, p)
    assert m.n == 4 and m.binary_accuracy == 1.0 and m.exact_accuracy == 1.0
    assert m.emd_r1 == pytest.approx(0.0) and m.emd_r2 == pytest.approx(0.0)
    assert m.lcc_mean == pytest.approx(1.0) and m.srcc_mean == pytest.approx(1.0)


def test_hand_computed_accuracies_and_emd():
    # true means 4, 6, 7; predicted 5 (crosses the threshold, error 1), 6.4 (error 0.4), 7 (exact)
    target = torch.tensor([one_hot(4), one_hot(6), one_hot(7)])
    pred = torch.tensor([one_hot(5), [0] * 5 + [0.6, 0.4] + [0] * 3, one_hot(7)])
    m = compute_metrics(pred, target)
    assert m.binary_accuracy == pytest.approx(2 / 3)  # 5 >= 5 but 4 < 5
    assert m.exact_accuracy == pytest.approx(2 / 3)  # errors 1, 0.4, 0
    # EMD r=1: mean over bins of |CDF difference| = (1 + 0.4 + 0) / 10 per sample, averaged
    assert m.emd_r1 == pytest.approx((0.1 + 0.04 + 0.0) / 3)
    assert m.emd_r2 == pytest.approx((math.sqrt(0.1) + math.sqrt(0.16 / 10) + 0.0) / 3)
    assert m.srcc_mean == pytest.approx(1.0)


def test_constant_predictions_give_nan_correlation_not_a_fake_number():
    target = torch.tensor([one_hot(2), one_hot(5), one_hot(9)])
    pred = torch.full((3, 10), 0.1)
    m = compute_metrics(pred, target)
    assert math.isnan(m.srcc_mean) and math.isnan(m.lcc_mean)


def test_mismatched_or_empty_inputs_are_rejected():
    with pytest.raises(ValueError, match="shapes"):
        compute_metrics(torch.zeros(3, 10), torch.zeros(2, 10))
    with pytest.raises(ValueError, match="no samples"):
        compute_metrics(torch.zeros(0, 10), torch.zeros(0, 10))
