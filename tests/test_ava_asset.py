"""The `ava_images` asset through real Dagster, a real DuckDB file, real crops, tar and HTTP sources."""

from __future__ import annotations

import base64
import io
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from assets.ava import AvaConfig, ava_images
from assets.resources import StorageResource
from ingest.ava import AvaSettings, ingest_ava
from ingest.crops import sha256_file
from ingest.sample_data import SampleReport
from pipelines.resources import build_resources
from tests.helpers.http import quiet_file_server, serving
from warehouse.db import connect

AVA_TABLES = ["images", "histograms", "rejects", "ava_tags", "ava_challenges", "ava_image_meta", "ava_crop_state"]
FAULT_STAGES = {
    "truncated_jpeg": ("image", "corrupt"),
    "not_an_image": ("image", "not an image"),
    "empty_file": ("image", "empty"),
    "too_small": ("image", "too small"),
    "missing_image": ("fetch", "missing"),
    "unparsable_line": ("parse", "unparsable"),
    "zero_votes": ("ratings", "zero votes"),
    "duplicate_id": ("parse", "duplicate"),
}


@pytest.fixture
def raw(sample_raw: SampleReport, tmp_path: Path) -> Path:
    """A private copy of the session's AVA drop (tests change files in it)."""
    out = tmp_path / "raw"
    shutil.copytree(sample_raw.out / "ava", out / "ava")
    return out


def _planted(sample_raw: SampleReport, raw: Path, kinds: tuple[str, ...]) -> int:
    """How many AVA items carry the planted faults `kinds` (SampleReport also lists SAC and Kuler ones)."""
    lines = _ava_lines(raw)
    ava_items = {line.split(" ")[1] for line in lines} | {f"line:{n}" for n in range(1, len(lines) + 1)}
    return sum(len(set(sample_raw.faults.get(kind, [])) & ava_items) for kind in kinds)


# Lines that never reach cropping, and photos that are fetched but cannot become crops.
NOT_CROPPED = ("unparsable_line", "zero_votes", "duplicate_id", "missing_image")
BAD_PHOTOS = ("truncated_jpeg", "not_an_image", "empty_file", "too_small")


def _materialize(home: Path, raw: Path, **config) -> dict:
    result = dg.materialize(
        [ava_images],
        run_config=dg.RunConfig({"ava_images": AvaConfig(**config)}),
        resources=build_resources(home=home, raw=raw),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    (event,) = result.asset_materializations_for_node("ava_images")
    return {k: getattr(v, "value", getattr(v, "data", v)) for k, v in event.metadata.items()}


def _snapshot(home: Path) -> dict[str, list[tuple]]:
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in AVA_TABLES}


def _query(home: Path, sql: str, params: list | None = None) -> list[tuple]:
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()


def _ava_lines(raw: Path) -> list[str]:
    return [line for line in (raw / "ava" / "AVA.txt").read_text().splitlines() if line.strip()]


def _crop_mtimes(home: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (home / "images" / "ava").iterdir()}


def test_every_line_ends_in_images_or_rejects_and_every_planted_fault_is_named(sample_raw, raw, home):
    meta = _materialize(home, raw)
    lines = _ava_lines(raw)
    images = _query(home, "SELECT image_id, split, path, width, height, sha256 FROM images WHERE dataset = 'ava'")
    rejects = _query(home, "SELECT item_id, stage, reason FROM rejects WHERE dataset = 'ava'")
    assert len(images) + len(rejects) == len(lines) == meta["lines_read"]
    assert (meta["accepted"], meta["rejected"]) == (len(images), len(rejects))
    by_item = {(item, stage): reason for item, stage, reason in rejects}
    ava_items = {line.split(" ")[1] for line in lines} | {f"line:{n}" for n in range(1, len(lines) + 1)}
    for fault, items in sample_raw.faults.items():
        if fault not in FAULT_STAGES:
            continue
        stage, kind = FAULT_STAGES[fault]
        for item in set(items) & ava_items:  # the report lists SAC and Kuler faults too
            assert by_item[(item, stage)].startswith(kind + ":"), (fault, item, by_item.get((item, stage)))
    assert all(set(sample_raw.faults[f]) & ava_items for f in FAULT_STAGES)
    # histograms exist for exactly the accepted images, and each crop is what the row says
    hist_ids = {r[0] for r in _query(home, "SELECT image_id FROM histograms WHERE dataset = 'ava'")}
    assert hist_ids == {r[0] for r in images}
    for image_id, _, path, width, height, sha in images:
        assert not Path(path).is_absolute() and path == f"images/ava/{image_id}.jpg"
        assert (width, height) == (256, 256) and sha256_file(home / path) == sha
    test_ids = set((raw / "ava" / "aesthetics_image_lists" / "generic_test.jpgl").read_text().split())
    assert all((split == "test") == (image_id in test_ids) for image_id, split, *_ in images)
    tag_lines = (raw / "ava" / "tags.txt").read_text().splitlines()
    assert _query(home, "SELECT count(*) FROM ava_tags")[0][0] == len(tag_lines)
    assert ("1401", "Red, White and Blue") in {(str(a), b) for a, b in _query(home, "SELECT * FROM ava_challenges")}
    assert meta["cropped_this_run"] == meta["lines_read"] - _planted(sample_raw, raw, NOT_CROPPED)
    assert meta["images_per_s"] > 0
    png = base64.b64decode(meta["preview"].split("base64,", 1)[1].rstrip(")"))
    assert Image.open(io.BytesIO(png)).format == "PNG"
    assert Path(meta["preview_path"]).read_bytes() == png


def test_second_run_with_unchanged_inputs_does_no_image_work_and_changes_nothing(raw, home):
    _materialize(home, raw)
    before, crops = _snapshot(home), _crop_mtimes(home)
    meta = _materialize(home, raw)
    assert meta["cropped_this_run"] == 0 and meta["images_rows_written"] == 0 and meta["rejects_written"] == 0
    assert _snapshot(home) == before  # updated_at and rejected_at included
    assert _crop_mtimes(home) == crops


def test_changed_inputs_are_processed_alone(sample_raw, raw, home):
    _materialize(home, raw)
    before = {r[0]: r for r in _query(home, "SELECT image_id, updated_at, sha256 FROM images")}
    ava = raw / "ava"
    lines = (ava / "AVA.txt").read_text().splitlines()
    ids = [line.split(" ")[1] for line in lines]
    changed, removed, recounted = ids[10], ids[11], ids[12]
    Image.new("RGB", (400, 300), (250, 20, 20)).save(ava / "images" / f"{changed}.jpg", quality=90)
    fixed = sample_raw.faults["truncated_jpeg"][0]
    Image.new("RGB", (300, 300), (20, 250, 20)).save(ava / "images" / f"{fixed}.jpg", quality=90)
    lines = [line for line in lines if line.split(" ")[1] != removed]
    k = ids.index(recounted)
    lines[k - 1] = " ".join([*lines[k - 1].split(" ")[:2], "0 0 0 0 0 0 0 0 0 50", *lines[k - 1].split(" ")[12:]])
    Image.new("RGB", (500, 400), (20, 20, 250)).save(ava / "images" / "5.jpg", quality=90)
    lines.append(f"{len(lines) + 1} 5 1 2 3 4 5 6 5 4 3 2 0 0 1396")
    (ava / "AVA.txt").write_text("\n".join(lines) + "\n")

    meta = _materialize(home, raw)
    assert meta["cropped_this_run"] == 3  # the changed photo, the fixed photo, the new line
    after = {r[0]: r for r in _query(home, "SELECT image_id, updated_at, sha256 FROM images")}
    assert {"5", fixed} <= set(after) and removed not in after
    assert not (home / "images" / "ava" / f"{removed}.jpg").exists()
    assert after[changed][2] != before[changed][2]
    assert _query(home, "SELECT count(*) FROM rejects WHERE item_id = ?", [fixed])[0][0] == 0
    assert _query(home, "SELECT mean FROM histograms WHERE image_id = ?", [recounted])[0][0] == 10.0
    untouched = set(before) - {changed, removed}
    assert all(after[i][1] == before[i][1] for i in untouched)  # the recounted image's row stays as it was
    assert meta["accepted"] + meta["rejected"] == meta["lines_read"] == len(lines)


def test_tar_archive_gives_the_same_crops_and_reruns_without_work(raw, tmp_path):
    archive = tmp_path / "ava_images.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(raw / "ava" / "images", arcname="images")
    dir_home, tar_home = tmp_path / "dir_home", tmp_path / "tar_home"
    _materialize(dir_home, raw)
    meta = _materialize(tar_home, raw, acquisition="tar", source=str(archive))
    sql = "SELECT image_id, split, sha256 FROM images ORDER BY ALL"
    assert _query(tar_home, sql) == _query(dir_home, sql)
    kinds = "SELECT item_id, stage, split_part(reason, ':', 1) FROM rejects ORDER BY ALL"
    assert _query(tar_home, kinds) == _query(dir_home, kinds)
    assert meta["accepted"] + meta["rejected"] == meta["lines_read"]
    before = _snapshot(tar_home)
    assert _materialize(tar_home, raw, acquisition="tar", source=str(archive))["cropped_this_run"] == 0
    assert _snapshot(tar_home) == before


@pytest.fixture
def image_server(raw: Path) -> Iterator[str]:
    with serving(quiet_file_server(raw / "ava" / "images")) as srv:
        yield f"http://127.0.0.1:{srv.server_address[1]}/{{image_id}}.jpg"


def test_http_acquisition_fetches_crops_and_files_404_as_fetch_reject(sample_raw, raw, home, image_server):
    meta = _materialize(home, raw, acquisition="http", source=image_server, http_retries=0)
    (missing,) = set(sample_raw.faults["missing_image"]) & {line.split(" ")[1] for line in _ava_lines(raw)}
    reason = _query(home, "SELECT reason FROM rejects WHERE item_id = ? AND stage = 'fetch'", [missing])[0][0]
    assert reason.startswith("http 404:")
    assert meta["accepted"] + meta["rejected"] == meta["lines_read"]
    url = _query(home, "SELECT source_path FROM images LIMIT 1")[0][0]
    assert url.startswith("http://127.0.0.1:")
    fetched = len(list((home / "downloads" / "ava").glob("*.jpg")))
    assert meta["accepted"] == fetched - _planted(sample_raw, raw, BAD_PHOTOS)
    before = _snapshot(home)
    assert _materialize(home, raw, acquisition="http", source=image_server)["cropped_this_run"] == 0
    assert _snapshot(home) == before


def test_category_list_pair_and_crop_settings_are_configurable(raw, home):
    lists = raw / "ava" / "aesthetics_image_lists"
    ids = [line.split(" ")[1] for line in _ava_lines(raw)[:20]]
    (lists / "animal_train.jpgl").write_text("\n".join(ids[:12]) + "\n")
    (lists / "animal_test.jpgl").write_text("\n".join(ids[12:16]) + "\n")
    meta = _materialize(home, raw, train_list="animal_train.jpgl", test_list="animal_test.jpgl", crop_size=128)
    splits = dict(_query(home, "SELECT image_id, split FROM images"))
    assert set(splits) <= set(ids[:16]) and all(splits[i] == "test" for i in ids[12:16] if i in splits)
    unlisted = _query(home, "SELECT count(*) FROM rejects WHERE stage = 'split' AND reason LIKE 'not listed:%'")
    assert unlisted[0][0] > 0 and meta["accepted"] + meta["rejected"] == meta["lines_read"]
    assert {r[0] for r in _query(home, "SELECT DISTINCT width FROM images")} == {128}
    # Back to the generic pair at the default size: split rejects disappear and everything is recropped at 256.
    meta = _materialize(home, raw)
    assert _query(home, "SELECT count(*) FROM rejects WHERE stage = 'split'")[0][0] == 0
    assert {r[0] for r in _query(home, "SELECT DISTINCT width FROM images")} == {256}
    assert meta["accepted"] + meta["rejected"] == meta["lines_read"]


class _Killed(Exception):
    pass


def test_a_run_killed_between_batches_resumes_without_redoing_or_losing_anything(sample_raw, raw, home):
    storage = StorageResource(home=str(home), raw=str(raw))
    opts = AvaSettings(batch_size=10, workers=1)
    opened = []

    @contextmanager
    def dies_on_third_connection():
        opened.append(1)
        if len(opened) == 4:  # 1: sweep the crop folder, 2: read state, 3: write batch 1, 4: would write batch 2
            raise _Killed("killed mid-run")
        with connect(home / "warehouse.duckdb") as conn:
            yield conn

    with pytest.raises(_Killed):
        ingest_ava(storage.paths(), dies_on_third_connection, opts)
    (done,) = _query(home, "SELECT count(*) FROM ava_crop_state")[0]
    assert done == 10
    report = ingest_ava(storage.paths(), lambda: connect(home / "warehouse.duckdb"), opts)
    assert report.cropped == report.lines_read - _planted(sample_raw, raw, NOT_CROPPED) - 10
    assert report.up_to_date == 10
    assert report.accepted + report.rejected == report.lines_read
    images = _query(home, "SELECT count(*), count(DISTINCT image_id) FROM images")[0]
    assert images == (report.accepted, report.accepted)
    assert not [p for p in (home / "images" / "ava").iterdir() if p.name.startswith(".")]
