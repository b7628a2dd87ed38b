"""Quality detectors (critic/detectors.py): each fires on its planted fault and not on clean photos or designs;
exact duplicates by decoded pixels; columns always written by curate, decisions only with --detect; the folder
filter decides the same way; bad flag values are one line."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import duckdb
import numpy as np
import pytest
import webdataset as wds
from PIL import Image, ImageFilter

from cli.main import main
from critic import decision, detectors
from critic.designs import random_genome, render
from critic.scoring import decode_image_sized
from critic.settings import DETECTORS, CurateSettings, DetectorSettings
from ingest.kuler import render_swatch
from ingest.sample_data import render_photo, theme_colours
from tests.helpers.critic_models import register_model


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _fires(data: bytes, domain: str) -> set[str]:
    crop, (w, h) = decode_image_sized(data)
    m = detectors.measure(np.asarray(crop), w, h)
    return {d for d, _ in detectors.fired(m, DetectorSettings().thresholds(domain))}


def _clean(domain: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if domain == "photo":
        return render_photo(rng, 0.8, 320, 240)
    if seed % 2:
        return render_swatch(theme_colours(rng, 0.8))
    r = random.Random(seed)
    return render(random_genome("star", r), 256, supersample=2)


def _faulty(img: Image.Image, fault: str) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    return {
        "blurry": lambda: img.filter(ImageFilter.GaussianBlur(3)),
        "dark": lambda: Image.fromarray((arr * 0.08).round().astype(np.uint8)),
        "light": lambda: Image.fromarray((arr * 0.08 + 255 * 0.92).round().astype(np.uint8)),
        "low_information": lambda: Image.new("RGB", img.size, (255, 255, 255)),
        "grayscale": lambda: img.convert("L").convert("RGB"),
        "odd_size": lambda: img.resize((40, 30), Image.Resampling.LANCZOS),
        "odd_aspect": lambda: img.resize((600, 100), Image.Resampling.LANCZOS),
    }[fault]()


@pytest.mark.parametrize("domain", ["photo", "design"])
def test_each_detector_fires_on_its_planted_fault_and_none_on_clean_images(domain: str) -> None:
    encode = _jpeg if domain == "photo" else _png
    for seed in (1, 2):
        assert _fires(encode(_clean(domain, seed)), domain) == set(), (domain, seed)
    for fault in DETECTORS:
        assert fault in _fires(encode(_faulty(_clean(domain, 3), fault)), domain), (domain, fault)


def test_pixel_hash_is_equal_for_a_byte_copy_and_a_comment_copy_but_not_a_reencode() -> None:
    img = _clean("photo", 4)
    data = _jpeg(img)
    commented = _jpeg(img, comment=b"someone else's copy")
    reencoded = _jpeg(Image.open(io.BytesIO(data)).convert("RGB"))
    assert commented != data

    def digest(b: bytes) -> str:
        crop, (w, h) = decode_image_sized(b)
        return detectors.pixel_hash(np.asarray(crop), w, h)

    assert digest(bytes(data)) == digest(data) == digest(commented) != digest(reencoded)
    d = decision.decide([5.0] * 4, [5.0] * 4, decision.Thresholds(), pixel_hashes=["x", "y", "x", "x"])
    assert d.exact == {2: 0, 3: 0} and d.passing == [0, 1]


def test_fired_names_the_value_and_the_threshold_and_settings_override_a_domain_default() -> None:
    m = {"laplacian_var": 12.5, "edge_ratio": 3.0, "luma_p5": 10, "luma_p95": 200, "grey_entropy": 6.0, "chroma": 30.0,
         "width": 320, "height": 240}
    assert detectors.fired(m, DetectorSettings().thresholds("photo")) == \
        [("blurry", "blurry: Laplacian variance 12.5 below 60")]
    assert detectors.fired(m, DetectorSettings(blur_threshold=10).thresholds("photo")) == []
    assert DetectorSettings(domain="auto").domain_of("/h/shards/kuler/train/s-0.tar") == "design"
    assert DetectorSettings(domain="auto").domain_of("/h/shards/ava/train/s-0.tar") == "photo"
    with pytest.raises(ValueError, match="unknown detector 'fuzzy'"):
        DetectorSettings(detect="blurry,fuzzy")
    with pytest.raises(ValueError, match="domain must be one of"):
        CurateSettings(domain="painting")


@pytest.mark.parametrize("flags, message", [
    (["--detect", "blurry,fuzzy"], "argument --detect: unknown detector 'fuzzy'"),
    (["--blur-threshold", "-1"], "argument --blur-threshold"),
    (["--domain", "painting"], "argument --domain: invalid choice"),
])
@pytest.mark.parametrize("verb", ["filter", "curate"])
def test_a_bad_detector_flag_is_refused_in_one_line(verb, flags, message, capsys, tmp_path) -> None:
    args = [verb, str(tmp_path), *(["--min-score", "1"] if verb == "filter" else ["--out", str(tmp_path / "o")])]
    with pytest.raises(SystemExit) as exc:
        main([*args, *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not any("Traceback" in line for line in err)


# ------------------------------------------------------------------------------------- curate and filter, end to end


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One shard: two clean photos, a byte copy, a copy with a JPEG comment and a re-encoded copy of the first,
    a blank white canvas and a 600x100 strip; and the same images as files in a folder."""
    root = tmp_path_factory.mktemp("detectors")
    home = root / "home"
    home.mkdir()
    register_model(home, crop=96, resize=108)
    first = _clean("photo", 5)
    data = _jpeg(first)
    images = {"a": data, "b": _jpeg(_clean("photo", 6)), "a_bytes": bytes(data),
              "a_comment": _jpeg(first, comment=b"copied"), "a_reencoded": _jpeg(Image.open(io.BytesIO(data))),
              "blank": _jpeg(Image.new("RGB", (320, 240), (255, 255, 255))),
              "strip": _jpeg(render_photo(np.random.default_rng(7), 0.8, 600, 100))}
    with wds.TarWriter(str(root / "s.tar")) as sink:
        for key, jpg in images.items():
            sink.write({"__key__": key, "jpg": jpg})
    folder = root / "folder"
    folder.mkdir()
    for key, jpg in images.items():
        (folder / f"{key}.jpg").write_bytes(jpg)
    return {"root": root, "home": home, "shard": root / "s.tar", "folder": folder}


def _curate(corpus: dict, monkeypatch, *extra: str) -> dict[str, tuple]:
    monkeypatch.setenv("AESTHETIC_HOME", str(corpus["home"]))
    out = corpus["root"] / "out"
    assert main(["curate", str(corpus["shard"]), "--out", str(out), "--workers", "0", "--no-dedupe", *extra]) == 0
    rows = duckdb.sql(f"SELECT key, decision, duplicate_of, reason, detected FROM '{out}/manifest.parquet'")
    return {r[0]: r[1:] for r in rows.fetchall()}


def test_curate_writes_the_columns_always_and_decides_by_them_only_when_asked(corpus, monkeypatch, capsys):
    manifest = _curate(corpus, monkeypatch)
    scores = corpus["root"] / "out" / "scores"
    cols = {c[0]: c[1] for c in duckdb.sql(f"DESCRIBE SELECT * FROM '{scores}/*.parquet'").fetchall()}
    assert set(detectors.COLUMNS) | {"pixel_hash"} <= set(cols)
    size = dict(duckdb.sql(f"SELECT key, width || 'x' || height FROM '{scores}/*.parquet'").fetchall())
    assert size["strip"] == "600x100" and size["a"] == "320x240"
    # no --detect, no dedupe: every sample is kept, and the manifest says which detectors fire
    assert {k: r[0] for k, r in manifest.items()} == dict.fromkeys(manifest, "kept")
    assert {"light", "low_information"} <= set(manifest["blank"][3].split(","))
    assert "odd_aspect" in manifest["strip"][3].split(",") and manifest["a"][3] is None
    capsys.readouterr()

    manifest = _curate(corpus, monkeypatch, "--detect", "low_information,odd_aspect", "--dedupe",
                       "--similarity", "0.999", "--max-hamming", "0")
    assert "0 scored, 1 already scored" in capsys.readouterr().err  # scores reused: only the decisions change
    assert manifest["blank"][0] == "low_information"
    assert manifest["blank"][2] == "low_information: grey entropy 0.00 bits below 3"
    assert manifest["strip"][0] == "odd_aspect" and "aspect 6.00 above 3" in manifest["strip"][2]
    for copy in ("a_bytes", "a_comment"):
        assert manifest[copy][:2] == ("exact_duplicate", "a")
    assert {manifest["a"][0], manifest["a_reencoded"][0]} <= {"kept", "duplicate"}  # not exact: pixels differ


def test_filter_over_a_folder_uses_the_same_detectors_and_exact_duplicates(corpus, monkeypatch, capsys):
    monkeypatch.setenv("AESTHETIC_HOME", str(corpus["home"]))
    folder = corpus["folder"]
    assert main(["filter", str(folder), "--min-score", "0", "--json", "--dedupe", "--similarity", "0.999",
                 "--max-hamming", "0", "--detect", "all"]) == 0
    items = {Path(i["path"]).stem: i for i in json.loads(capsys.readouterr().out)["items"]}
    assert "light: 5th percentile luminance 255 above 215" in items["blank"]["why"]
    assert "low_information: grey entropy 0.00 bits below 3" in items["blank"]["why"]
    assert "odd_aspect: 600x100: aspect 6.00 above 3" in items["strip"]["why"]
    for copy in ("a_bytes", "a_comment"):
        assert items[copy]["why"] == f"exact duplicate of {folder / 'a.jpg'}"
    assert items["b"]["decision"] == "kept" and not items["a"]["why"].startswith("exact")
    assert set(items["a"]["detectors"]) >= set(detectors.COLUMNS)
