"""The downloader (ingest/download.py) and the image fetcher (ingest/fetch.py) against servers that lie: a file that
changes under a resume while the server ignores If-Range, a body with no length and no end on a small real tmpfs,
and a body that trickles past the deadline."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.download import DownloadError, DownloadSettings, download, part_path, read_sidecar
from ingest.fetch import FetchFailure, HttpOptions, http_sources
from tests.helpers.http import serving
from tests.helpers.lying_http import IfRangeIgnoringServer, ScriptedServer, endless, trickle
from tests.helpers.tmpfs import mounted_tmpfs

BODY = os.urandom(3 * 2**20 + 12345)
NAME = "AVA_dataset.zip"
PATH = f"/resolve/main/{NAME}"


def _no_sleep(_: float) -> None:
    """Backoff waits are real in use; a test does not need to sit through them."""


def _download(url: str, dest: Path, **kw):
    return download(DownloadSettings(url=url, dest_dir=dest, **kw), sleep=_no_sleep)


@pytest.fixture
def tmpfs_8m(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB tmpfs, unmounted afterwards; skipped where mounting is not allowed."""
    with mounted_tmpfs(tmp_path / "disk", "8m") as mountpoint:
        yield mountpoint


@pytest.mark.parametrize("fixed_etag", ["", '"one-etag-for-every-version"'], ids=["etag-changes", "size-changes"])
def test_a_file_changed_under_a_resume_is_fetched_from_zero_not_spliced(tmp_path: Path, fixed_etag: str) -> None:
    with serving(IfRangeIgnoringServer({PATH: BODY}, fixed_etag=fixed_etag)) as server:
        server.plan[PATH] = [500_000, 503]  # a drop mid-body, then a failure with no retries left: the run stops
        with pytest.raises(DownloadError, match="rerun to resume"):
            _download(server.url + PATH, tmp_path, retries=0)
        assert part_path(tmp_path / NAME).stat().st_size == 500_000
        # A new version: the same size under another ETag, or another size under the same ETag. The server
        # ignores If-Range and answers the resume with a 206 of the new version.
        new = BODY[::-1] if not fixed_etag else b"new" + BODY
        server.files[PATH] = new
        report = _download(server.url + PATH, tmp_path)
        ranges = [g.get("Range") for g in server.gets(PATH)]
    assert (tmp_path / NAME).read_bytes() == new
    assert report.restarts == 1 and report.resumes == 0
    assert ranges[-2:] == ["bytes=500000-", None]  # the 206 was refused, the next request asked from zero
    record = read_sidecar(tmp_path / NAME)
    assert record["complete"] and record["sha256"] == hashlib.sha256(new).hexdigest() and record["size"] == len(new)


def test_a_body_with_no_length_stops_at_the_free_space_floor(tmpfs_8m: Path) -> None:
    reserve = 4 * 2**20
    with serving(ScriptedServer({PATH: endless(content_type="application/zip")})) as server:
        with pytest.raises(DownloadError) as stopped:
            _download(server.url + PATH, tmpfs_8m, reserve_bytes=reserve)
    message = str(stopped.value)
    assert "free space" in message and "reserve_bytes" in message and "\n" not in message
    # The floor held: what is free is the reserve, less at most the pages of the last write and the sidecar.
    assert shutil.disk_usage(tmpfs_8m).free >= reserve - 2 * 4096
    assert not (tmpfs_8m / NAME).exists()


def test_a_body_trickling_past_the_deadline_stops_with_the_part_kept(tmp_path: Path) -> None:
    body = b"x" * 60  # 3 s at a byte per 0.05 s; the deadline is 0.5 s
    with serving(ScriptedServer({PATH: trickle(body, 0.05)})) as server:
        with pytest.raises(DownloadError, match=r"deadline_s=0.5 .*rerun to resume") as stopped:
            _download(server.url + PATH, tmp_path, deadline_s=0.5, timeout_s=5)
        sent = server.sent.get(PATH, 0)
    assert "\n" not in str(stopped.value) and stopped.value.keep_part
    assert sent < len(body)
    assert not (tmp_path / NAME).exists()


def test_a_download_deadline_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="deadline_s"):
        DownloadSettings(url="https://example.org/a.zip", dest_dir=tmp_path, deadline_s=0)


def test_an_image_trickling_past_the_deadline_is_a_fetch_failure(tmp_path: Path) -> None:
    body = b"\xff\xd8" + b"x" * 58
    with serving(ScriptedServer({"/img/1.jpg": trickle(body, 0.05), "/img/2.jpg": trickle(b"\xff\xd8ok", 0)})) \
            as server:
        opts = HttpOptions(concurrency=2, timeout_s=5, retries=0, deadline_s=0.5)
        out = {r.item_id: r for r in http_sources(server.url + "/img/{image_id}.jpg", ["1", "2"], tmp_path, opts)}
    assert isinstance(out["1"], FetchFailure) and "deadline_s=0.5" in out["1"].reason
    assert not isinstance(out["2"], FetchFailure) and Path(out["2"].path).read_bytes() == b"\xff\xd8ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2.jpg"]
