"""`aesthetic score`: deterministic scores per image, machine-readable output, bad files skipped."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from cli.main import main
from critic.scoring import Critic, expand_sources, load_image
from tests.helpers.critic_models import picture, register_model
from warehouse.db import connect
from warehouse.models_lookup import resolve_model


@pytest.fixture(scope="module")
def scored_home(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("score")
    home = root / "home"
    home.mkdir()
    other = register_model(home, "nima_sac", seed=5, alias=None)
    production = register_model(home, "nima_color", seed=0)
    images = root / "images"
    (images / "nested").mkdir(parents=True)
    for i in range(3):
        picture(i).save(images / f"p{i}.png")
    picture(3).convert("RGB").save(images / "nested" / "p3.jpg", quality=90)
    good = (images / "p0.png").read_bytes()
    (images / "truncated.png").write_bytes(good[: len(good) // 3])
    (images / "notes.jpg").write_text("not an image at all\n")
    return {"home": home, "images": images, "production": production, "other": other}


def _run(capsys, monkeypatch, home: Path, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setenv("AESTHETIC_HOME", str(home))
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_scores_are_deterministic_and_match_the_critic_on_the_same_files(scored_home, capsys, monkeypatch) -> None:
    home, images = scored_home["home"], scored_home["images"]
    _, first, _ = _run(capsys, monkeypatch, home, "score", str(images), "--json")
    _, second, _ = _run(capsys, monkeypatch, home, "score", str(images), "--json", "--batch-size", "1")
    a, b = json.loads(first), json.loads(second)
    assert a["model"] == scored_home["production"]
    assert [r["path"] for r in a["results"]] == [r["path"] for r in b["results"]]
    for ra, rb in zip(a["results"], b["results"], strict=True):
        assert ra["mean"] == pytest.approx(rb["mean"], abs=1e-5)  # batch of 4 or batches of 1: same scores
        assert ra["histogram"] == pytest.approx(rb["histogram"], abs=1e-6)
        assert sum(ra["histogram"]) == pytest.approx(1.0, abs=1e-5)

    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        found = resolve_model(conn, home)
    critic = Critic.from_checkpoint(found.checkpoint, expected_sha256=found.sha256)
    paths = [Path(r["path"]) for r in a["results"]]
    direct = critic.score_images([load_image(p) for p in paths]).scores()
    # A fresh load of the same checkpoint on the same batch gives the same numbers, bit for bit.
    assert [s.mean for s in direct] == [r["mean"] for r in a["results"]]
    assert [list(s.histogram) for s in direct] == [r["histogram"] for r in a["results"]]
    assert len(set(round(r["mean"], 4) for r in a["results"])) == 4  # the scores depend on the picture


def test_unreadable_files_are_reported_and_skipped_not_fatal(scored_home, capsys, monkeypatch) -> None:
    images = scored_home["images"]
    missing = images / "gone.png"
    code, out, err = _run(capsys, monkeypatch, scored_home["home"], "score", str(images), str(missing), "--json")
    assert code == 0
    doc = json.loads(out)
    assert sorted(Path(r["path"]).name for r in doc["results"]) == ["p0.png", "p1.png", "p2.png", "p3.jpg"]
    skipped = {Path(s["path"]).name: s["error"] for s in doc["skipped"]}
    assert set(skipped) == {"truncated.png", "notes.jpg", "gone.png"}
    assert skipped["notes.jpg"].startswith("not an image")
    assert skipped["gone.png"].startswith("missing")
    assert skipped["truncated.png"].split(":")[0] in ("corrupt", "not an image")
    assert f"skipped {missing}: missing" in err


def test_csv_and_table_outputs_and_globs(scored_home, capsys, monkeypatch) -> None:
    home, images = scored_home["home"], scored_home["images"]
    code, out, _ = _run(capsys, monkeypatch, home, "score", str(images / "p*.png"), "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0
    assert [Path(r["path"]).name for r in rows] == ["p0.png", "p1.png", "p2.png"]
    assert all(sum(float(r[f"p{k}"]) for k in range(1, 11)) == pytest.approx(1.0, abs=1e-3) for r in rows)
    _, table, err = _run(capsys, monkeypatch, home, "score", str(images / "p1.png"))
    assert "p1.png" in table.splitlines()[1] and "1 scored, 0 skipped" in err


def test_model_flag_picks_a_named_version(scored_home, capsys, monkeypatch) -> None:
    home, images = scored_home["home"], scored_home["images"]
    _, prod, _ = _run(capsys, monkeypatch, home, "score", str(images / "p0.png"), "--json")
    _, other, _ = _run(capsys, monkeypatch, home, "score", str(images / "p0.png"), "--json",
                       "--model", scored_home["other"])
    assert json.loads(other)["model"] == scored_home["other"]
    assert json.loads(other)["results"][0]["mean"] != pytest.approx(json.loads(prod)["results"][0]["mean"], abs=1e-4)
    with pytest.raises(SystemExit, match="no model version or alias 'v404'"):
        _run(capsys, monkeypatch, home, "score", str(images), "--model", "v404")


def test_without_a_promoted_model_the_cli_says_what_to_do(tmp_path, capsys, monkeypatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    picture(0, 64).save(tmp_path / "p.png")
    with pytest.raises(SystemExit, match="no warehouse at"):
        _run(capsys, monkeypatch, home, "score", str(tmp_path / "p.png"))
    register_model(home, alias=None)
    with pytest.raises(SystemExit, match="no model is promoted yet"):
        _run(capsys, monkeypatch, home, "score", str(tmp_path / "p.png"))


def test_expand_sources_walks_folders_keeps_order_and_unmatched_args(tmp_path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("a.png", "b/c.JPG", "b/readme.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = expand_sources([str(tmp_path / "b"), str(tmp_path / "a.png"), str(tmp_path / "*.png"),
                            str(tmp_path / "nothing*.png")])
    assert found == [tmp_path / "b" / "c.JPG", tmp_path / "a.png", tmp_path / "nothing*.png"]
