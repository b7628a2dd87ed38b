"""The evaluation report: notebook colours, plots and metrics written where the UI and users find them."""

import json

import torch

from nima_train.evaluate import Evaluation, error_colours, write_report
from nima_train.metrics import compute_metrics


def test_errors_are_coloured_green_orange_red_at_half_and_one_point():
    pred = torch.tensor([5.0, 5.49, 5.5, 5.99, 6.0, 3.0], dtype=torch.float64)
    true = torch.full((6,), 5.0, dtype=torch.float64)
    assert error_colours(pred, true) == ["green", "green", "orange", "orange", "red", "red"]


def test_report_holds_metrics_plots_and_loss_curves(tmp_path):
    torch.manual_seed(0)
    target = torch.softmax(torch.randn(20, 10), -1)
    pred = torch.softmax(torch.randn(20, 10), -1)
    ev = Evaluation(compute_metrics(pred, target), pred, target)
    history = [{"epoch": 0, "loss": 0.3, "val_loss": 0.35}, {"epoch": 1, "loss": 0.2, "val_loss": 0.3}]
    report = write_report(tmp_path / "r", ev, "nima_ava abc on ava/test", history, {"version": "abc"})
    text = report.read_text()
    for png in ("pred_vs_true.png", "pred_hist.png", "loss_curves.png"):
        assert (tmp_path / "r" / png).stat().st_size > 1000
        assert f"]({png})" in text
    assert "| srcc_mean |" in text and "- version: abc" in text
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["n"] == 20
