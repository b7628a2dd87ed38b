"""Reading the Kuler .mat releases: every structural fault stops with a message naming file, variable and finding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from ingest.kuler import KulerFormatError, read_ratings_2014, read_release_2011, read_themes_2014
from ingest.sample_data import write_kuler_2011, write_sample_data


def _theme_file(path: Path, rgb, ids, names) -> Path:
    scipy.io.savemat(path, {"datapoints": {"rgb": rgb, "ids": ids, "names": names}})
    return path


def _good_rgb(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).random((n, 15))


def _names(n: int) -> np.ndarray:
    return np.array([f"theme {i}" for i in range(n)], dtype=object)


def test_sample_2014_release_reads_back_with_int64_ids_and_five_colours_per_theme(tmp_path):
    report = write_sample_data(tmp_path, ava=0, sac=0, kuler=12, seed=3)
    themes = read_themes_2014(tmp_path / "kuler" / "themeData.mat")
    assert len(themes) == 12 and themes.colours.shape == (12, 5, 3)
    assert themes.ids.dtype == np.int64 and len(set(themes.ids.tolist())) == 12
    assert themes.names[0].startswith("theme 0")
    tally = read_ratings_2014(tmp_path / "kuler" / "allMTurkRatings.mat", len(themes))
    assert tally.read == report.kuler_ratings and tally.kept == tally.read and not tally.rejects


def test_rgb_row_keeps_colour_order_r_g_b_per_colour(tmp_path):
    rgb = np.arange(15, dtype=np.float64)[None, :] / 20
    themes = read_themes_2014(_theme_file(tmp_path / "t.mat", rgb, np.array([5.0]), np.array(["one"], dtype=object)))
    assert themes.colours.shape == (1, 5, 3)
    np.testing.assert_allclose(themes.colours[0, 1], [3 / 20, 4 / 20, 5 / 20])
    assert themes.ids.tolist() == [5] and themes.names == ["one"]


@pytest.mark.parametrize("dtype", [np.float64, np.int32])
def test_ids_of_either_dtype_are_cast_to_int64(tmp_path, dtype):
    path = _theme_file(tmp_path / "t.mat", _good_rgb(3), np.array([10, 20, 30], dtype=dtype), _names(3))
    themes = read_themes_2014(path)
    assert themes.ids.dtype == np.int64 and themes.ids.tolist() == [10, 20, 30]


def test_empty_name_in_cell_array_reads_as_empty_string(tmp_path):
    names = np.array(["a", "", "c"], dtype=object)
    themes = read_themes_2014(_theme_file(tmp_path / "t.mat", _good_rgb(3), np.arange(3.0), names))
    assert themes.names == ["a", "", "c"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"rgb": np.random.default_rng(1).random((4, 12))}, "datapoints.rgb has shape (4, 12), expected (N, 15)"),
        ({"rgb": np.random.default_rng(1).random((4, 5, 3))}, "datapoints.rgb has shape (4, 5, 3)"),
        ({"rgb": np.full((4, 15), 200.0)}, "datapoints.rgb has 4 theme(s) with colours outside 0..1"),
        ({"rgb": np.where(np.eye(4, 15) > 0, np.nan, 0.5)}, "first at row 1"),
        ({"rgb": np.array([["a"] * 15] * 4)}, "datapoints.rgb has dtype <U1, expected a real numeric array"),
        ({"ids": np.array([1.0, 2.5, 3.0, 4.0])}, "datapoints.ids holds non-integer values"),
        ({"ids": np.arange(3.0)}, "datapoints.rgb has 4 themes but ids has 3"),
        ({"names": _names(2)}, "datapoints.names has shape (2,), expected (4,)"),
        ({"names": np.arange(4.0)}, "datapoints.names holds float values, expected strings"),
    ],
)
def test_theme_file_with_wrong_field_fails_naming_file_variable_and_finding(tmp_path, content, expected):
    fields = {"rgb": _good_rgb(4), "ids": np.arange(1.0, 5.0), "names": _names(4), **content}
    path = _theme_file(tmp_path / "themeData.mat", fields["rgb"], fields["ids"], fields["names"])
    with pytest.raises(KulerFormatError) as err:
        read_themes_2014(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_theme_file_without_datapoints_or_field_or_struct_fails(tmp_path):
    path = tmp_path / "themeData.mat"
    scipy.io.savemat(path, {"points": np.zeros(3)})
    with pytest.raises(KulerFormatError, match=r"variable 'datapoints' missing \(found: points\)"):
        read_themes_2014(path)
    scipy.io.savemat(path, {"datapoints": np.zeros((3, 15))})
    with pytest.raises(KulerFormatError, match="datapoints is ndarray, expected a MATLAB struct"):
        read_themes_2014(path)
    scipy.io.savemat(path, {"datapoints": {"rgb": _good_rgb(3), "names": _names(3)}})
    with pytest.raises(KulerFormatError, match=r"datapoints.ids missing \(fields: rgb, names\)"):
        read_themes_2014(path)


def test_missing_or_non_matlab_file_fails_with_its_path(tmp_path):
    with pytest.raises(KulerFormatError, match="themeData.mat: file not found"):
        read_themes_2014(tmp_path / "themeData.mat")
    bogus = tmp_path / "allMTurkRatings.mat"
    bogus.write_text("user,row,rating\n1,1,5\n")
    with pytest.raises(KulerFormatError, match="allMTurkRatings.mat: not a readable MATLAB v5/v7 file"):
        read_ratings_2014(bogus, 3)


@pytest.mark.parametrize(
    ("ratings", "expected"),
    [
        (np.ones((5, 4)), "testRatings has shape (5, 4), expected (M, 3)"),
        (np.ones((3, 5)), "testRatings has shape (3, 5), expected (M, 3)"),
        (np.array([["1", "2", "3"]]), "testRatings has dtype <U1, expected a real numeric array"),
        (np.array([[1 + 1j, 2, 3]]), "testRatings has dtype complex128"),
    ],
)
def test_ratings_with_wrong_shape_or_dtype_fail(tmp_path, ratings, expected):
    path = tmp_path / "allMTurkRatings.mat"
    scipy.io.savemat(path, {"testRatings": ratings})
    with pytest.raises(KulerFormatError) as err:
        read_ratings_2014(path, 10)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_ratings_variable_missing_fails(tmp_path):
    path = tmp_path / "allMTurkRatings.mat"
    scipy.io.savemat(path, {"ratings": np.ones((2, 3))})
    with pytest.raises(KulerFormatError, match="variable 'testRatings' missing"):
        read_ratings_2014(path, 10)


def test_single_rating_squeezed_to_a_vector_still_counts(tmp_path):
    path = tmp_path / "allMTurkRatings.mat"
    scipy.io.savemat(path, {"testRatings": np.array([[12, 2, 4]], dtype=np.int32)})
    tally = read_ratings_2014(path, 3)
    assert tally.read == 1 and tally.stars[1].tolist() == [0, 0, 0, 1, 0]


def test_sample_2011_release_reads_back_and_marks_planted_bad_targets(tmp_path):
    report = write_kuler_2011(tmp_path, n=10, seed=2, faults=True, filename="kulerData.mat")
    themes, targets = read_release_2011(tmp_path / "kuler" / "kulerData.mat")
    assert themes.colours.shape == (10, 5, 3) and themes.ids.dtype == np.int64
    bad = [str(i + 1) for i, t in enumerate(targets) if not (np.isfinite(t) and 1 <= t <= 5)]
    assert bad == report.faults["target_out_of_range"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"data": np.random.default_rng(0).random((4, 15))}, "data has shape (4, 15), expected (N, 5, 3)"),
        ({"data": np.random.default_rng(0).random((4, 4, 3))}, "data has shape (4, 4, 3), expected (N, 5, 3)"),
        ({"data": np.full((4, 5, 3), -0.5)}, "data has 4 theme(s) with colours outside 0..1"),
        ({"targets": np.ones(3)}, "targets has shape (3,), expected (4,)"),
        ({"targets": np.array(["good", "bad", "ugly", "meh"], dtype=object)}, "targets has dtype object"),
        ({"ids": np.ones((2, 2))}, "ids has shape (2, 2), expected (N,)"),
    ],
)
def test_2011_file_with_wrong_variable_fails_naming_it(tmp_path, change, expected):
    content = {
        "data": np.random.default_rng(0).random((4, 5, 3)),
        "targets": np.array([1.0, 2.5, 3.0, 4.9]),
        "ids": np.arange(4, dtype=np.int32),
        "names": _names(4),
        **change,
    }
    path = tmp_path / "mturkData.mat"
    scipy.io.savemat(path, content)
    with pytest.raises(KulerFormatError) as err:
        read_release_2011(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_2011_file_missing_targets_lists_what_it_found(tmp_path):
    path = tmp_path / "mturkData.mat"
    scipy.io.savemat(path, {"data": np.zeros((2, 5, 3)), "ids": np.arange(2.0), "names": _names(2)})
    with pytest.raises(KulerFormatError, match=r"variable 'targets' missing \(found: data, ids, names\)"):
        read_release_2011(path)
