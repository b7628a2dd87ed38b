"""Design evolution: a seed fixes the sequence; the parent only changes for a better score; outputs exist."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from cli.main import main
from common.contact_sheet import CAPTION_H
from critic.evolve import evolve
from critic.scoring import Critic
from tests.helpers.critic_models import make_model, register_model, stretching_calibration


@pytest.fixture(scope="module")
def critic() -> Critic:
    return Critic(make_model(), image_size=96, version="test")


def _sequence(log: Path) -> list:
    doc = json.loads(log.read_text())
    return [(r["best_mean"], r["parent_mean"], r["improved"], r["parent"]) for r in doc["log"]]


def test_same_seed_same_sequence_different_seed_different(critic: Critic, tmp_path: Path) -> None:
    a = evolve(critic, "heart", rounds=3, batch=4, seed=7, out=tmp_path / "a", size=96)
    b = evolve(critic, "heart", rounds=3, batch=4, seed=7, out=tmp_path / "b", size=96)
    c = evolve(critic, "heart", rounds=3, batch=4, seed=8, out=tmp_path / "c", size=96)
    assert _sequence(Path(a.log)) == _sequence(Path(b.log))
    assert (tmp_path / "a" / "strip.png").read_bytes() == (tmp_path / "b" / "strip.png").read_bytes()
    assert _sequence(Path(a.log)) != _sequence(Path(c.log))
    # The parent's score never goes down, and it changes exactly when a variant beat it.
    prev = a.initial_mean
    for r in a.rounds:
        assert r.parent_mean >= prev
        assert r.improved == (r.best_mean > prev)
        assert r.parent_mean == (r.best_mean if r.improved else prev)
        assert len(r.means) == 4 and max(r.means) == r.best_mean
        prev = r.parent_mean


def test_outputs_contact_sheets_strip_and_log(critic: Critic, tmp_path: Path) -> None:
    result = evolve(critic, "kite", rounds=2, batch=3, seed=1, out=tmp_path, size=96)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.json", "round_01.png", "round_02.png", "strip.png"]
    with Image.open(tmp_path / "round_01.png") as sheet:
        assert sheet.size == (2 + 3 * (128 + 2), 2 + 128 + CAPTION_H + 2)  # one labelled tile per variant
    with Image.open(tmp_path / "strip.png") as strip:
        assert strip.size == (2 + 3 * (128 + 2), 2 + 128 + CAPTION_H + 2)  # the start and the best after each round
    doc = json.loads(Path(result.log).read_text())
    assert doc["seed"] == 1 and doc["shape"] == "kite" and doc["model"] == "test" and len(doc["log"]) == 2


def test_a_critic_that_cannot_be_pleased_keeps_the_parent_and_says_stuck(critic: Critic, tmp_path: Path) -> None:
    model = copy.deepcopy(critic.model)
    torch.nn.init.zeros_(model.head[1].weight)
    torch.nn.init.zeros_(model.head[1].bias)
    flat = Critic(model, image_size=96)  # every design gets the uniform histogram: 5.5 exactly
    result = evolve(flat, "star", rounds=2, batch=3, seed=0, out=tmp_path, size=96)
    assert result.stuck_rounds == 2
    log = json.loads(Path(result.log).read_text())["log"]
    assert all(not r["improved"] and "stuck" in r["message"] for r in log)
    assert log[0]["parent"] == log[1]["parent"]


def test_cli_evolve_runs_with_the_promoted_model(tmp_path: Path, capsys, monkeypatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    version = register_model(home)
    monkeypatch.setenv("AESTHETIC_HOME", str(home))
    out = tmp_path / "run"
    assert main(["evolve", "--shape", "trapezoid", "--rounds", "1", "--batch", "2", "--seed", "4",
                 "--size", "96", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("round 1: ") and "strip" in printed
    assert json.loads((out / "log.json").read_text())["model"] == version


def test_evolve_with_a_calibrated_model_logs_calibrated_means_beside_the_raw_ones(tmp_path: Path) -> None:
    cal = stretching_calibration()
    critic = Critic(make_model(), image_size=96, version="test", calibration=cal)
    result = evolve(critic, "star", rounds=2, batch=3, seed=1, out=tmp_path, size=96)
    doc = json.loads(Path(result.log).read_text())
    assert doc["calibration"] == cal.describe()
    assert doc["initial"]["calibrated_mean"] == pytest.approx(float(cal.apply(doc["initial"]["mean"])), abs=1e-5)
    for r in doc["log"]:
        assert r["best_calibrated_mean"] == pytest.approx(float(cal.apply(r["best_mean"])), abs=1e-5)
        assert r["parent_calibrated_mean"] == pytest.approx(float(cal.apply(r["parent_mean"])), abs=1e-5)
        assert 0 <= r["best_percentile"] <= 100
    assert doc["best_calibrated_mean"] == doc["log"][-1]["parent_calibrated_mean"]
