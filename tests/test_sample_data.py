"""The sample drops read back with the readers a user of the real datasets would use."""

from __future__ import annotations

import sqlite3

import numpy as np
import scipy.io
from PIL import Image

from ingest.sample_data import SAC_DB_NAME, write_sample_data


def test_ava_txt_lines_have_fifteen_integer_tokens_except_planted_faults(sample_raw):
    ava = sample_raw.out / "ava"
    lines = (ava / "AVA.txt").read_text().splitlines()
    bad = [n for n, line in enumerate(lines, 1) if not all(t.lstrip("-").isdigit() for t in line.split(" "))]
    assert [f"line:{n}" for n in bad] == sample_raw.faults["unparsable_line"]
    good = [line for n, line in enumerate(lines, 1) if n not in bad]
    table = np.loadtxt(good, dtype=np.int64)
    assert table.shape == (len(good), 15)
    assert (table[:, 2:12] >= 0).all()


def test_ava_side_files_split_on_first_space_and_test_list_names_known_ids(sample_raw):
    ava = sample_raw.out / "ava"
    tags = dict(line.split(" ", 1) for line in (ava / "tags.txt").read_text().splitlines())
    assert tags["3"] == "Black and White"
    challenges = dict(line.split(" ", 1) for line in (ava / "challenges.txt").read_text().splitlines())
    assert any(" " in name for name in challenges.values())
    ids = {line.split()[1] for line in (ava / "AVA.txt").read_text().splitlines()}
    test_ids = (ava / "aesthetics_image_lists" / "generic_test.jpgl").read_text().split()
    assert test_ids and set(test_ids) <= ids


def test_ava_images_open_with_pil_except_planted_damage(sample_raw):
    ava = sample_raw.out / "ava"
    damaged = {i for kind in ("truncated_jpeg", "not_an_image", "empty_file") for i in sample_raw.faults[kind]}
    sizes = set()
    for path in sorted((ava / "images").glob("*.jpg")):
        if path.stem in damaged:
            continue
        with Image.open(path) as img:
            img.load()
            assert img.format == "JPEG"
            sizes.add(img.size)
    assert len(sizes) > 5, "pictures should vary in size and aspect"


def test_sac_sqlite_has_the_real_tables_and_ratings_reference_images(sample_raw):
    con = sqlite3.connect(sample_raw.out / "sac" / SAC_DB_NAME)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"generations", "images", "paths", "ratings", "survey", "upscales"}
        orphans = con.execute("SELECT count(*) FROM ratings WHERE iid NOT IN (SELECT id FROM images)").fetchone()
        assert orphans == (0,)
        assert con.execute("SELECT count(*) FROM ratings WHERE rating IS NULL").fetchone()[0] == 1
        names = [r[0] for r in con.execute("SELECT path FROM paths")]
    finally:
        con.close()
    ok = [n for n in names if "/" not in n]
    assert Image.open(sample_raw.out / "sac" / "images" / ok[0]).format == "PNG"


def test_kuler_mat_files_load_with_scipy_in_the_documented_shapes(sample_raw):
    kuler = sample_raw.out / "kuler"
    theme = scipy.io.loadmat(kuler / "themeData.mat", squeeze_me=True, struct_as_record=False)["datapoints"]
    assert theme.rgb.shape == (sample_raw.kuler_themes, 15)
    assert 0 <= theme.rgb.min() and theme.rgb.max() <= 1
    assert len(theme.ids) == len(theme.names) == sample_raw.kuler_themes
    ratings = scipy.io.loadmat(kuler / "allMTurkRatings.mat", squeeze_me=True)["testRatings"]
    assert ratings.shape == (sample_raw.kuler_ratings, 3)
    valid = ratings[(ratings[:, 2] >= 1) & (ratings[:, 2] <= 5) & (ratings[:, 1] <= sample_raw.kuler_themes)]
    assert len(valid) == len(ratings) - 2  # the two planted faults


def test_sample_scores_follow_visible_colourfulness(sample_raw):
    """The end-to-end premise: a property of the pixels predicts the mean score."""
    ava = sample_raw.out / "ava"
    means, colourfulness = [], []
    for line in (ava / "AVA.txt").read_text().splitlines():
        tokens = line.split()
        path = ava / "images" / f"{tokens[1]}.jpg"
        if not all(t.isdigit() for t in tokens) or not path.exists() or path.stat().st_size < 2000:
            continue
        counts = np.array(tokens[2:12], dtype=float)
        if counts.sum() == 0:
            continue
        try:
            hsv = np.asarray(Image.open(path).convert("HSV"), dtype=float)
        except OSError:
            continue
        means.append((counts * np.arange(1, 11)).sum() / counts.sum())
        colourfulness.append(hsv[..., 1].mean() + hsv[..., 2].std())
    assert len(means) > 25
    assert np.corrcoef(means, colourfulness)[0, 1] > 0.5


def test_same_seed_writes_identical_files(tmp_path):
    a = write_sample_data(tmp_path / "a", ava=6, sac=4, kuler=5, seed=3)
    b = write_sample_data(tmp_path / "b", ava=6, sac=4, kuler=5, seed=3)
    assert (a.out / "ava/AVA.txt").read_bytes() == (b.out / "ava/AVA.txt").read_bytes()
    # .mat headers carry a creation time, so compare what loads rather than bytes.
    ra, rb = (scipy.io.loadmat(x.out / "kuler/allMTurkRatings.mat")["testRatings"] for x in (a, b))
    np.testing.assert_array_equal(ra, rb)
    first = sorted((a.out / "ava" / "images").iterdir())[0]
    assert first.read_bytes() == (b.out / "ava" / "images" / first.name).read_bytes()
