"""The download assets and `aesthetic download` through real Dagster and a real HTTP server on 127.0.0.1:
nothing happens unconfigured; configured, the archive arrives (resuming after a drop) and ava_images crops
straight from it; SAC's database lands in the drop, not the inbox."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import dagster as dg
import pytest

from assets.ava import ava_archive, ava_images
from assets.kuler import kuler_download
from assets.sac import sac_download
from cli.main import main
from ingest.sample_data import SAC_DB_NAME, SampleReport
from pipelines.resources import build_resources
from tests.helpers.archives import photos, write_zip
from tests.helpers.http import RangeServer, serving
from warehouse.db import connect

ZIP_PATH = "/datasets/Iceclear/AVA/resolve/main/AVA_dataset.zip"


def _materialize(assets: list, home: Path, raw: Path, config: dict | None = None,
                 raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, run_config={"ops": config or {}}, resources=build_resources(home=home, raw=raw),
                          instance=dg.DagsterInstance.ephemeral(), raise_on_error=raise_on_error)


def _meta(result: dg.ExecuteInProcessResult, node: str) -> dict:
    (event,) = result.asset_materializations_for_node(node)
    return {k: getattr(v, "value", getattr(v, "data", v)) for k, v in event.metadata.items()}


def test_download_assets_do_nothing_and_say_so_when_unconfigured(tmp_path):
    raw = tmp_path / "raw"
    result = _materialize([ava_archive, sac_download, kuler_download], tmp_path / "home", raw)
    for node in ("ava_archive", "sac_download", "kuler_download"):
        assert _meta(result, node)["status"] == "not configured"
    assert not raw.exists() or not any(raw.rglob("*"))


@pytest.fixture
def ava_raw(sample_raw: SampleReport, tmp_path: Path) -> tuple[Path, bytes]:
    """An empty raw folder, and the sample AVA drop as one zip laid out as AVA_dataset.zip: the ratings, the
    lists and the photos under AVA_dataset/."""
    ava = sample_raw.out / "ava"
    archive = write_zip(tmp_path / "AVA_dataset.zip", photos(ava / "images"))
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as zf:
        for path in [*(ava / n for n in ("AVA.txt", "tags.txt", "challenges.txt")),
                     *(ava / "aesthetics_image_lists").glob("*.jpgl")]:
            zf.write(path, "AVA_dataset/" + str(path.relative_to(ava)))
    return tmp_path / "raw", archive.read_bytes()


def test_ava_archive_downloads_once_and_ava_images_crops_straight_from_it(sample_raw, ava_raw, tmp_path):
    raw, body = ava_raw
    home = tmp_path / "home"
    with serving(RangeServer({ZIP_PATH: body})) as server:
        server.plan[ZIP_PATH] = [len(body) // 3, 503]  # a drop mid-body, then a passing server error
        config = {"ava_archive": {"config": {"url": server.url + ZIP_PATH,
                                             "sha256": hashlib.sha256(body).hexdigest(), "retries": 2}},
                  "ava_images": {"config": {"acquisition": "zip", "source": "AVA_dataset.zip", "workers": 1}}}
        result = _materialize([ava_archive, ava_images], home, raw, config)
        fetched = _meta(result, "ava_archive")
        assert fetched["status"] == "downloaded" and fetched["bytes"] == len(body) == fetched["bytes_fetched"]
        assert fetched["resumes"] == 1 and fetched["retries"] == 2 and fetched["mb_per_s"] > 0
        assert fetched["sha256"] == {"AVA_dataset.zip": hashlib.sha256(body).hexdigest()}
        assert fetched["texts_placed"] == ["AVA.txt", "aesthetics_image_lists/generic_test.jpgl", "challenges.txt",
                                           "tags.txt"]
        assert (raw / "ava" / "AVA.txt").read_bytes() == (sample_raw.out / "ava" / "AVA.txt").read_bytes()
        cropped = _meta(result, "ava_images")
        assert cropped["accepted"] > 0 and cropped["cropped_this_run"] > 0
        assert (raw / "ava" / "AVA_dataset.zip").read_bytes() == body
        assert not (raw / "ava" / "images").exists()  # nothing extracted

        again = _materialize([ava_archive, ava_images], home, raw, config)
        assert _meta(again, "ava_archive")["status"] == "up to date"
        assert _meta(again, "ava_archive")["texts_placed"] == []  # kept as they are
        assert _meta(again, "ava_images")["cropped_this_run"] == 0
        assert len(server.gets(ZIP_PATH)) == 3  # the first run's three GETs; the second run asked nothing
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        (source,) = conn.execute("SELECT source_path FROM images LIMIT 1").fetchone()
    assert source.startswith(f"{raw / 'ava' / 'AVA_dataset.zip'}::AVA_dataset/image/")


def test_a_failed_download_fails_the_asset_in_one_line(ava_raw, tmp_path):
    raw, _ = ava_raw
    with serving(RangeServer({})) as server:
        config = {"ava_archive": {"config": {"url": server.url + ZIP_PATH}}}
        result = _materialize([ava_archive], tmp_path / "home", raw, config, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("ava download: http 404") and "\n" not in message
    assert not (raw / "ava" / "AVA_dataset.zip").exists()


def test_sac_download_is_the_drops_own_database_not_an_inbox_snapshot(sample_raw, tmp_path):
    db = (sample_raw.out / "sac" / SAC_DB_NAME).read_bytes()
    raw = tmp_path / "raw"
    with serving(RangeServer({f"/sac/{SAC_DB_NAME}": db})) as server:
        config = {"sac_download": {"config": {"url": f"{server.url}/sac/{SAC_DB_NAME}"}}}
        meta = _meta(_materialize([sac_download], tmp_path / "home", raw, config), "sac_download")
    assert meta["status"] == "downloaded" and (raw / "sac" / SAC_DB_NAME).read_bytes() == db
    assert not (raw / "sac" / "inbox").exists()


def test_a_kuler_file_under_a_name_the_stage_does_not_read_is_refused(tmp_path):
    with serving(RangeServer({"/k/colors.mat": b"MATLAB"})) as server:
        config = {"kuler_download": {"config": {"url": f"{server.url}/k/colors.mat"}}}
        result = _materialize([kuler_download], tmp_path / "home", tmp_path / "raw", config, raise_on_error=False)
        assert server.requests == []
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "must be named one of themeData.mat" in failure.step_failure_data.user_failure_data.description


def test_aesthetic_download_fetches_with_a_progress_bar_and_then_finds_it_up_to_date(tmp_path, capsys):
    body = b"MATLAB 5.0 MAT-file" + bytes(300_000)
    with serving(RangeServer({"/kuler/themeData.mat": body})) as server:
        server.plan["/kuler/themeData.mat"] = [100_000]
        args = ["download", "kuler", "--url", f"{server.url}/kuler/themeData.mat", "--raw", str(tmp_path)]
        assert main(args) == 0
        first = capsys.readouterr()
        assert main(args) == 0
        second = capsys.readouterr()
    assert (tmp_path / "kuler" / "themeData.mat").read_bytes() == body
    assert first.out.startswith("downloaded: ") and "1 resumes" in first.out
    assert hashlib.sha256(body).hexdigest() in first.out and "themeData.mat" in first.err
    assert second.out.startswith("up to date: ") and "HEAD ETag and size" in second.out


def test_aesthetic_download_errors_are_one_line(tmp_path):
    with serving(RangeServer({})) as server:
        with pytest.raises(SystemExit) as exc:
            main(["download", "sac", "--url", f"{server.url}/x/{SAC_DB_NAME}", "--raw", str(tmp_path)])
    assert str(exc.value).startswith("aesthetic download: http 404") and "\n" not in str(exc.value)
    with pytest.raises(SystemExit, match="has no public default URL; give --url"):
        main(["download", "kuler", "--raw", str(tmp_path)])
