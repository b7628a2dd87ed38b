"""Kuler ratings -> rejects and 10-bin histograms, under both mappings and both releases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from ingest.kuler import (
    DEFAULT_STD_2011,
    PSEUDO_VOTES_2011,
    counts_from_mean,
    counts_from_mean_normal,
    counts_from_stars,
    labels_2011,
    labels_2014,
    mapped_score,
    rating_std_2014,
    read_ratings_2014,
)

SCORES = np.arange(1, 11)


def _tally(tmp_path, rows, n_themes):
    path = tmp_path / "allMTurkRatings.mat"
    scipy.io.savemat(path, {"testRatings": np.array(rows, dtype=np.float64)})
    return read_ratings_2014(path, n_themes)


def test_each_bad_rating_is_one_reject_with_its_reason_and_the_rest_are_counted(tmp_path):
    kept = [(1, 1, 5), (2, 1, 4), (3, 2, 1)]
    rating_out_of_range = [(4, 1, 6), (5, 2, 0)]
    row_out_of_range = [(6, 4, 3), (7, 0, 3)]
    not_integers = [(8, 2, 2.5), (np.nan, 2, 3)]
    rows = kept + rating_out_of_range + row_out_of_range + not_integers
    tally = _tally(tmp_path, rows, n_themes=3)
    assert tally.read == 9 and tally.kept == 3 and len(tally.rejects) == 6
    reasons = {r.item_id: r.reason for r in tally.rejects}
    assert reasons["rating:4:1"].startswith("out of range: rating 6 not in 1..5")
    assert reasons["rating:5:2"].startswith("out of range: rating 0 not in 1..5")
    assert reasons["rating:6:4"].startswith("unknown theme: row 4 not in 1..3")
    assert reasons["rating:7:0"].startswith("unknown theme: row 0 not in 1..3")
    assert reasons["rating:8:2"].startswith("malformed:")
    assert reasons["rating:nan:2"].startswith("malformed:")
    assert "(testRatings row 4)" in reasons["rating:4:1"]
    assert tally.stars.tolist() == [[0, 0, 0, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]


def test_same_user_and_row_rejected_twice_get_distinct_ids_by_position(tmp_path):
    tally = _tally(tmp_path, [(9, 1, 7), (9, 1, 3), (9, 1, 8), (9, 1, 0)], n_themes=2)
    assert [r.item_id for r in tally.rejects] == ["rating:9:1", "rating:9:1:3", "rating:9:1:4"]
    assert tally.kept == 1


def test_theme_without_valid_ratings_is_rejected_by_row(tmp_path):
    tally = _tally(tmp_path, [(1, 1, 3), (2, 3, 9)], n_themes=3)
    labels = labels_2014(tally, "high_spread")
    assert list(labels.counts) == ["1"]
    assert [(r.item_id, r.reason.split(":")[0]) for r in labels.rejects] == [("2", "no ratings"), ("3", "no ratings")]


@pytest.mark.parametrize(
    ("mapping", "bins"),
    [("high_spread", [1, 3, 5, 7, 9]), ("low_spread", [3, 4, 5, 6, 7])],
)
def test_star_r_lands_in_the_mapped_score_bin(mapping, bins):
    stars = np.array([[1, 2, 3, 4, 5]])
    counts = counts_from_stars(stars, mapping)[0]
    assert counts.sum() == 15
    assert [int(counts[b - 1]) for b in bins] == [1, 2, 3, 4, 5]
    assert all(counts[s - 1] == 0 for s in range(1, 11) if s not in bins)


def test_mapped_mean_matches_mean_of_mapped_votes():
    stars = np.array([[3, 0, 2, 7, 1]])
    star_mean = float(np.dot(stars[0], np.arange(1, 6)) / stars.sum())
    for mapping in ("high_spread", "low_spread"):
        counts = counts_from_stars(stars, mapping)[0]
        assert np.dot(counts, SCORES) / counts.sum() == pytest.approx(mapped_score(star_mean, mapping))


def test_unknown_mapping_is_refused():
    with pytest.raises(ValueError, match="high_spread, low_spread"):
        counts_from_stars(np.ones((1, 5), dtype=int), "spread_thin")


@pytest.mark.parametrize("mapping", ["high_spread", "low_spread"])
@pytest.mark.parametrize("mean_rating", [1.0, 1.37, 2.5, 3.0, 3.999, 4.62, 5.0])
def test_2011_pseudo_histogram_keeps_the_mapped_mean_on_two_adjacent_bins(mapping, mean_rating):
    counts = counts_from_mean(mean_rating, mapping)
    assert sum(counts) == PSEUDO_VOTES_2011
    used = [i for i, c in enumerate(counts) if c]
    assert len(used) in (1, 2) and used[-1] - used[0] <= 1
    assert np.dot(counts, SCORES) / PSEUDO_VOTES_2011 == pytest.approx(mapped_score(mean_rating, mapping), abs=0.01)


def test_2011_integer_mean_is_a_single_bin():
    assert counts_from_mean(4.0, "high_spread") == [0] * 6 + [100] + [0] * 3
    assert counts_from_mean(4.0, "low_spread") == [0] * 5 + [100] + [0] * 4


def test_2011_mean_outside_one_to_five_rejects_its_theme():
    labels = labels_2011(np.array([3.2, 5.6, np.nan, 0.5, 1.0]), "high_spread")
    assert list(labels.counts) == ["1", "5"]
    assert [r.item_id for r in labels.rejects] == ["2", "3", "4"]
    assert labels.rejects[0].reason == "out of range: mean rating 5.6 not in 1..5 (targets)"


@pytest.mark.parametrize("mapping", ["high_spread", "low_spread"])
@pytest.mark.parametrize("mean_rating", [1.2, 2.0, 2.71, 3.3, 4.55, 4.9])
def test_2011_normal_spread_keeps_the_mapped_mean_within_the_mappings_range(mapping, mean_rating):
    counts = np.array(counts_from_mean_normal(mean_rating, mapping, std_stars=0.9))
    lo, hi = mapped_score(1, mapping), mapped_score(5, mapping)
    assert counts.sum() == PSEUDO_VOTES_2011
    assert counts[: int(lo) - 1].sum() == 0 and counts[int(hi):].sum() == 0  # stars end at 1 and 5
    assert np.dot(counts, SCORES) / PSEUDO_VOTES_2011 == pytest.approx(mapped_score(mean_rating, mapping), abs=0.005)
    assert (counts > 0).sum() > 2  # a spread, not the two-bin spike


@pytest.mark.parametrize("std_stars", [0.4, 0.6, 0.8])
def test_2011_normal_spread_has_the_configured_deviation_away_from_the_ends(std_stars):
    counts = np.array(counts_from_mean_normal(3.0, "high_spread", std_stars))
    mean = np.dot(counts, SCORES) / counts.sum()
    std = np.sqrt(np.dot(counts, (SCORES - mean) ** 2) / counts.sum())
    # high_spread: one star is two score steps; discretising adds about 1/12 of a step squared.
    assert std == pytest.approx(np.sqrt((2 * std_stars) ** 2 + 1 / 12), rel=0.06)
    two_bin = np.array(counts_from_mean(3.0, "high_spread"))
    assert np.dot(two_bin, (SCORES - 5) ** 2) == 0  # today's default: all votes on the mapped mean


def test_2011_labels_default_to_two_bins_and_spread_when_asked():
    targets = np.array([2.2, 3.7])
    assert labels_2011(targets, "high_spread").counts == {
        "1": counts_from_mean(2.2, "high_spread"), "2": counts_from_mean(3.7, "high_spread")}
    spread = labels_2011(targets, "high_spread", "normal", 0.8)
    assert spread.counts["1"] == counts_from_mean_normal(2.2, "high_spread", 0.8)


def test_the_2014_per_theme_spread_is_the_median_over_themes_with_enough_ratings(tmp_path):
    # theme 1: ratings 2, 4 (std 1); theme 2: 3, 3, 3 (std 0); theme 3: 1, 3, 5 (std 1.633); theme 4: one rating
    rows = [(1, 1, 2), (2, 1, 4), (1, 1, 2), (2, 1, 4),
            (3, 2, 3), (4, 2, 3), (5, 2, 3), (6, 3, 1), (7, 3, 3), (8, 3, 5), (9, 4, 5)]
    tally = _tally(tmp_path, rows, n_themes=4)
    assert rating_std_2014(tally) == pytest.approx(1.0)  # median of 1, 0, 1.633 (themes with 3+ ratings)
    assert rating_std_2014(tally, min_ratings=10) is None
    assert DEFAULT_STD_2011 == 1.0
