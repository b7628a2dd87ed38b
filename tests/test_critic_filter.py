"""`aesthetic filter` and near-duplicate grouping on constructed cases: an exact copy, a resized copy,
and different pictures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli.main import main
from critic.filtering import FilterSettings, copy_kept, decide
from critic.neardup import clusters, hamming, keep_best, near_duplicate_pairs, perceptual_hash
from critic.scoring import Critic, Score, ScoredItem, load_image
from tests.helpers.critic_models import make_model, picture, register_model


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("filter")
    home = root / "home"
    home.mkdir()
    register_model(home)
    folder = root / "in"
    folder.mkdir()
    picture(10).save(folder / "a.png")
    shutil.copy(folder / "a.png", folder / "a_copy.png")
    picture(10).resize((200, 200), Image.Resampling.LANCZOS).save(folder / "a_small.png")
    picture(11).save(folder / "b.png")
    picture(12).save(folder / "c.png")
    return {"home": home, "folder": folder, "root": root}


def _filter(case: dict, capsys, monkeypatch, *extra: str) -> dict:
    monkeypatch.setenv("AESTHETIC_HOME", str(case["home"]))
    assert main(["filter", str(case["folder"]), "--json", *extra]) == 0
    doc = json.loads(capsys.readouterr().out)
    return {Path(i["path"]).name: i for i in doc["items"]}


def test_min_score_keeps_exactly_what_passes(case, capsys, monkeypatch) -> None:
    everything = _filter(case, capsys, monkeypatch, "--min-score", "0")
    assert {n for n, i in everything.items() if i["decision"] == "kept"} == set(everything)
    means = sorted(i["mean"] for i in everything.values())
    cut = (means[1] + means[2]) / 2  # between the 2nd and 3rd lowest
    out = _filter(case, capsys, monkeypatch, "--min-score", str(cut))
    for name, item in out.items():
        assert item["decision"] == ("kept" if item["mean"] >= cut else "dropped"), name
    assert sum(i["decision"] == "kept" for i in out.values()) == 3


def test_dedupe_keeps_the_best_of_each_duplicate_group_and_copies_it(case, capsys, monkeypatch) -> None:
    dest = case["root"] / "kept"
    out = _filter(case, capsys, monkeypatch, "--min-score", "0", "--dedupe", "--dedupe-by", "phash",
                  "--copy-to", str(dest))
    # a byte copy has a.png's decoded pixels: an exact duplicate, dropped before the near-duplicate search
    assert (out["a_copy.png"]["decision"], out["a_copy.png"]["why"]) == \
        ("dropped", f"exact duplicate of {case['folder'] / 'a.png'}")
    group_a = {n: out[n] for n in ("a.png", "a_small.png")}
    best = max(group_a, key=lambda n: (group_a[n]["mean"], -sorted(group_a).index(n)))
    assert [n for n, i in group_a.items() if i["decision"] == "kept"] == [best]
    for name, item in group_a.items():
        if name != best:
            assert item["decision"] == "dropped" and item["why"].startswith("near-duplicate of")
    assert out["b.png"]["decision"] == out["c.png"]["decision"] == "kept"
    assert sorted(p.name for p in dest.iterdir()) == sorted([best, "b.png", "c.png"])
    assert (dest / "b.png").read_bytes() == (case["folder"] / "b.png").read_bytes()


def test_perceptual_hash_separates_copies_from_different_pictures(case) -> None:
    f = case["folder"]
    h = {n: perceptual_hash(load_image(f / n)) for n in ("a.png", "a_copy.png", "a_small.png", "b.png", "c.png")}
    assert hamming(h["a.png"], h["a_copy.png"]) == 0
    assert hamming(h["a.png"], h["a_small.png"]) <= 6
    assert min(hamming(h["a.png"], h["b.png"]), hamming(h["a.png"], h["c.png"]), hamming(h["b.png"], h["c.png"])) > 16
    assert clusters(5, near_duplicate_pairs(None, list(h.values()), max_hamming=6)) == [[0, 1, 2], [3], [4]]


def test_feature_similarity_ranks_copies_above_different_pictures(case) -> None:
    f = case["folder"]
    names = ("a.png", "a_copy.png", "a_small.png", "b.png", "c.png")
    critic = Critic(make_model())
    feats = critic.score_images([load_image(f / n) for n in names]).features
    unit = torch.nn.functional.normalize(feats, dim=1)
    sim = unit @ unit.T
    assert sim[0, 1] == pytest.approx(1.0, abs=1e-5)
    different = max(sim[0, 3], sim[0, 4], sim[1, 3], sim[3, 4]).item()
    resized = sim[0, 2].item()
    assert resized > different  # the resized copy is nearer than any different picture
    threshold = (resized + different) / 2
    feats = feats.numpy()
    assert clusters(5, near_duplicate_pairs(feats, None, threshold, None)) == [[0, 1, 2], [3], [4]]
    hashes = [perceptual_hash(load_image(f / n)) for n in names]
    # both: a pair must pass both tests, so a loose hash limit alone merges nothing extra
    assert clusters(5, near_duplicate_pairs(feats, hashes, threshold, 64)) == [[0, 1, 2], [3], [4]]
    assert clusters(5, near_duplicate_pairs(feats, hashes, 1.01, 64)) == [[0], [1], [2], [3], [4]]


def test_keep_best_prefers_the_highest_score_then_the_earliest() -> None:
    assert keep_best([[0, 1, 2], [3], [4, 5]], [5.0, 6.0, 6.0, 1.0, 2.0, 2.0]) == [1, 3, 4]
    with pytest.raises(ValueError, match="2 hashes for 3 feature rows"):
        near_duplicate_pairs(np.zeros((3, 4)), [1, 2])


def test_decide_keeps_the_best_of_each_duplicate_group_above_the_threshold(tmp_path):
    def item(name: str, mean: float, feature: list[float] | None, phash: int | None) -> ScoredItem:
        score = None if mean is None else Score(mean, 1.0, (0.1,) * 10)
        return ScoredItem(str(tmp_path / name), score, None if feature is None else torch.tensor(feature), None,
                          phash)

    items = [item("a.png", 6.0, [1.0, 0.0], 0), item("b.png", 6.5, [0.99, 0.01], 1), item("c.png", 7.0, [0.0, 1.0], 2),
             item("d.png", 3.0, [0.0, 1.0], 3), ScoredItem(str(tmp_path / "e.png"), None, None, "corrupt: x")]
    result = decide(items, FilterSettings(min_score=5.0, dedupe=True, dedupe_by="features", similarity=0.95))
    assert [i.source.rsplit("/", 1)[1] for i in result.kept] == ["b.png", "c.png"]
    assert result.decisions[str(tmp_path / "a.png")] == ("dropped", f"near-duplicate of {tmp_path / 'b.png'}")
    assert result.decisions[str(tmp_path / "d.png")] == ("dropped", "score 3.00 below 5.0")
    assert result.decisions[str(tmp_path / "e.png")] == ("skipped", "corrupt: x")
    for name in ("b.png", "c.png"):
        (tmp_path / name).write_bytes(name.encode())
    copied = copy_kept(result.kept, tmp_path / "out")
    assert sorted(Path(p).name for p in copied.values()) == ["b.png", "c.png"]


def _flat_calibration():
    """A calibration flat above a raw mean of 2: every picture of the test model (raw means about 5.4..5.9)
    gets the same calibrated mean, 5.0, so near-duplicates tie on it and the earliest is kept."""
    from nima_train.calibration import Calibration

    return Calibration("linear", (1.0, 2.0), (4.0, 5.0), 1.0, 0.0, (1.0, 1.5, 2.0), "val", 3,
                       {"folds": 5, "chosen": "linear", "reason": "a test's fixed map"})


def test_filter_ranks_duplicates_by_the_calibrated_mean_when_the_model_has_one(case, capsys, monkeypatch) -> None:
    # Two near-duplicate pictures, named so that the one with the higher raw mean comes second.
    raw = _filter(case, capsys, monkeypatch, "--min-score", "0")
    low, high = sorted(("a.png", "a_small.png"), key=lambda n: raw[n]["mean"])
    assert raw[low]["mean"] < raw[high]["mean"]
    folder = case["root"] / "pair"
    folder.mkdir()
    shutil.copy(case["folder"] / low, folder / "1.png")
    shutil.copy(case["folder"] / high, folder / "2.png")
    home = case["root"] / "calibrated-home"
    home.mkdir()
    register_model(home, calibration=_flat_calibration())
    args = ["--min-score", "0", "--dedupe", "--dedupe-by", "phash"]

    by_raw = _filter({**case, "folder": folder}, capsys, monkeypatch, *args)  # no calibration: the raw mean
    assert by_raw["2.png"]["decision"] == "kept" and by_raw["1.png"]["decision"] == "dropped"

    by_calibrated = _filter({**case, "folder": folder, "home": home}, capsys, monkeypatch, *args)
    assert by_calibrated["1.png"]["calibrated_mean"] == by_calibrated["2.png"]["calibrated_mean"] == 5.0
    assert by_calibrated["1.png"]["mean"] < by_calibrated["2.png"]["mean"]
    # The raw-mean winner would be 2.png; the calibrated means tie, so the earlier one is kept.
    assert by_calibrated["1.png"]["decision"] == "kept"
    assert by_calibrated["2.png"] == {**by_calibrated["2.png"], "decision": "dropped",
                                      "why": f"near-duplicate of {folder / '1.png'}"}


def test_one_decision_ranks_duplicates_by_rank_by_and_ties_go_to_the_earliest() -> None:
    from critic.decision import Thresholds
    from critic.decision import decide as decide_rows

    values = [6.0, 6.5, 7.0, 3.0]  # the thresholds compare these (e.g. the raw mean)
    rank_by = [5.0, 5.0, 7.0, 3.0]  # near-duplicates are ranked by these (e.g. a calibration flat at 5.0)
    d = decide_rows(values, rank_by, Thresholds(min_score=5.0), pairs_of=lambda rows: np.array([[0, 1]]))
    assert d.missed == [[], [], [], ["min_score"]] and d.passing == [0, 1, 2]
    assert d.winner == {0: 0, 1: 0} and d.groups == [[0, 1]] and d.kept() == [0, 2]
    by_values = decide_rows(values, values, Thresholds(min_score=5.0), pairs_of=lambda rows: np.array([[0, 1]]))
    assert by_values.kept() == [1, 2] and by_values.groups == [[1, 0]]
    with pytest.raises(ValueError, match="min_percentile needs a calibrated model"):
        decide_rows(values, values, Thresholds(min_percentile=50), [None] * 4)
