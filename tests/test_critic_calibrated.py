"""The critic's three scores (mean, calibrated_mean, percentile) and the filters built on them, through the CLI
with real checkpoints: one trained with a validation split (calibrated) and one without."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from critic.scoring import Critic
from tests.helpers.critic_models import picture, register_model, save_test_checkpoint, stretching_calibration


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("calibrated")
    home = root / "home"
    home.mkdir()
    calibrated = register_model(home, "nima_color", calibration=stretching_calibration(), crop=96, resize=108)
    plain = register_model(home, "nima_sac", alias=None, crop=96, resize=108)
    folder = root / "in"
    folder.mkdir()
    for seed in range(10, 22):
        picture(seed, 160).save(folder / f"p{seed}.png")
    return {"home": home, "folder": folder, "calibrated": calibrated, "plain": plain}


def _run(case: dict, capsys, monkeypatch, *argv: str) -> dict:
    monkeypatch.setenv("AESTHETIC_HOME", str(case["home"]))
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_calibrated_model_reports_calibrated_means_and_percentiles_that_rise_with_them(case, capsys, monkeypatch):
    doc = _run(case, capsys, monkeypatch, "score", str(case["folder"]))
    assert doc["calibration"] == stretching_calibration().describe()
    results = doc["results"]
    assert len(results) == 12
    cal = stretching_calibration()
    for r in results:
        assert r["calibrated_mean"] == pytest.approx(float(cal.apply(r["mean"])), abs=1e-5)
        assert 0.0 <= r["percentile"] <= 100.0
    by_calibrated = sorted(results, key=lambda r: r["calibrated_mean"])
    assert all(a["percentile"] <= b["percentile"] for a, b in zip(by_calibrated, by_calibrated[1:], strict=False))
    assert [r["mean"] for r in by_calibrated] == sorted(r["mean"] for r in results)  # the ranking is kept
    raw_spread = np.ptp([r["mean"] for r in results])
    assert np.ptp([r["calibrated_mean"] for r in results]) == pytest.approx(3 * raw_spread, rel=1e-3)


def test_a_checkpoint_without_calibration_scores_as_before(case, capsys, monkeypatch):
    doc = _run(case, capsys, monkeypatch, "score", str(case["folder"]), "--model", case["plain"])
    assert doc["calibration"] is None
    for r in doc["results"]:
        assert r["calibrated_mean"] == r["mean"] and r["percentile"] is None
        assert set(r) >= {"mean", "calibrated_mean", "percentile", "std", "histogram"}


def test_csv_carries_all_three_scores(case, capsys, monkeypatch):
    monkeypatch.setenv("AESTHETIC_HOME", str(case["home"]))
    assert main(["score", str(case["folder"] / "p10.png"), "--csv"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.startswith("path,mean,calibrated_mean,percentile,std,p1")
    assert 0 <= float(row.split(",")[3]) <= 100


def test_min_score_applies_to_the_calibrated_mean_unless_told_otherwise(case, capsys, monkeypatch):
    scores = {Path(r["path"]).name: r for r in
              _run(case, capsys, monkeypatch, "score", str(case["folder"]))["results"]}
    calibrated = sorted(r["calibrated_mean"] for r in scores.values())
    cut = (calibrated[5] + calibrated[6]) / 2  # halfway down the calibrated scores
    out = _run(case, capsys, monkeypatch, "filter", str(case["folder"]), "--min-score", f"{cut:.6f}")
    kept = {Path(i["path"]).name for i in out["items"] if i["decision"] == "kept"}
    assert kept == {n for n, r in scores.items() if r["calibrated_mean"] >= float(f"{cut:.6f}")} and len(kept) == 6
    raw = _run(case, capsys, monkeypatch, "filter", str(case["folder"]), "--min-score", "6.5",
               "--threshold-on", "mean")
    assert all(i["decision"] == "dropped" and "(raw mean)" in i["why"] for i in raw["items"])
    assert max(r["calibrated_mean"] for r in scores.values()) > 6.5  # ...which the calibrated scale would pass


def test_min_percentile_filters_against_the_reference_split(case, capsys, monkeypatch):
    out = _run(case, capsys, monkeypatch, "filter", str(case["folder"]), "--min-percentile", "50")
    for item in out["items"]:
        assert item["decision"] == ("kept" if item["percentile"] >= 50 else "dropped")
        if item["decision"] == "dropped":
            assert item["why"].startswith("percentile ")


def test_top_fraction_keeps_the_best_share_of_the_inputs(case, capsys, monkeypatch):
    out = _run(case, capsys, monkeypatch, "filter", str(case["folder"]), "--top-fraction", "0.25")
    items = out["items"]
    kept = [i for i in items if i["decision"] == "kept"]
    assert len(kept) == math.ceil(0.25 * len(items)) == 3
    assert min(i["calibrated_mean"] for i in kept) >= max(i["calibrated_mean"] for i in items if i not in kept)
    assert any("not in the top 0.25 (rank 4 of 12)" == i["why"] for i in items)


def test_min_percentile_needs_a_calibrated_model(case, capsys, monkeypatch):
    monkeypatch.setenv("AESTHETIC_HOME", str(case["home"]))
    with pytest.raises(SystemExit, match="has no calibration"):
        main(["filter", str(case["folder"]), "--min-percentile", "50", "--model", case["plain"]])


def test_the_critic_loads_the_calibration_from_the_checkpoint(tmp_path):
    path = save_test_checkpoint(tmp_path / "model.pt", calibration=stretching_calibration(), crop=96, resize=108)
    critic = Critic.from_checkpoint(path)
    assert critic.calibration == stretching_calibration()
    (score,) = critic.score_images([picture(3, 128)]).scores()
    assert score.calibrated_mean == pytest.approx(float(stretching_calibration().apply(score.mean)), abs=1e-5)
