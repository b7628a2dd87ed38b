"""Per-image URL templates name AVA.txt columns as well as the id, as the original site laid its images out;
served by a real http.server on 127.0.0.1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ingest.ava import AvaSettings, ingest_ava, parse_ava_txt
from ingest.fetch import url_for
from ingest.paths import Paths
from ingest.sample_data import SampleReport
from tests.helpers.http import quiet_file_server, serving
from warehouse.db import connect


def test_url_for_fills_columns_with_format_specs_and_quotes_values():
    fields = {"challenge_id": 1395, "challenge_range": "1000-1999", "tag1": 0}
    template = "https://h/images_challenge/{challenge_range}/{challenge_id:05d}/800/x_{image_id}.jpg"
    assert url_for(template, "953619", fields) == "https://h/images_challenge/1000-1999/01395/800/x_953619.jpg"
    assert url_for("https://h/{image_id}.jpg", "a b/c") == "https://h/a%20b%2Fc.jpg"


@pytest.mark.parametrize("template, problem", [
    ("https://h/{image_id.__class__}.jpg", "not a plain field name"),
    ("https://h/{image_id!r}.jpg", "not a plain field name"),
    ("https://h/{image_id}/{0}.jpg", "not a plain field name"),
    ("https://h/{image_id.jpg", "malformed"),
    ("https://h/{challenge}.jpg", "lacks {image_id}"),
])
def test_url_for_refuses_what_is_not_a_plain_column(template, problem):
    with pytest.raises(ValueError, match=problem):
        url_for(template, "1", {"challenge": 1})


def test_settings_name_the_columns_a_template_may_use():
    with pytest.raises(ValueError, match=r"names \{votes\}; it may name index, image_id, c1, .*challenge_id"):
        AvaSettings(acquisition="http", source="https://h/{votes}/{image_id}.jpg")


def test_http_acquisition_follows_a_challenge_id_layout(sample_raw: SampleReport, tmp_path: Path):
    raw = tmp_path / "raw"
    shutil.copytree(sample_raw.out / "ava", raw / "ava")
    site = tmp_path / "site"
    rows = parse_ava_txt(raw / "ava" / "AVA.txt").rows
    for row in rows:  # the site's layout: /<challenge range>/<challenge id>/<image id>.jpg
        src = raw / "ava" / "images" / f"{row.image_id}.jpg"
        low = row.challenge_id // 1000 * 1000
        dest = site / f"{low}-{low + 999}" / str(row.challenge_id) / f"{row.image_id}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_file():
            shutil.copy(src, dest)
    home = tmp_path / "home"
    with serving(quiet_file_server(site)) as srv:
        template = f"http://127.0.0.1:{srv.server_address[1]}/{{challenge_range}}/{{challenge_id}}/{{image_id}}.jpg"
        settings = AvaSettings(acquisition="http", source=template, workers=1)
        by_http = ingest_ava(Paths(home, raw), lambda: connect(home / "warehouse.duckdb"), settings)
    folder_home = tmp_path / "folder"
    by_folder = ingest_ava(Paths(folder_home, raw), lambda: connect(folder_home / "warehouse.duckdb"),
                           AvaSettings(workers=1))
    assert by_http.accepted == by_folder.accepted > 0
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        (url,) = conn.execute("SELECT source_path FROM images ORDER BY image_id LIMIT 1").fetchone()
    assert "/1000-1999/139" in url or "/1000-1999/140" in url
