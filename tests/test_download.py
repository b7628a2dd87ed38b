"""ingest/download.py against a real HTTP server on 127.0.0.1 that serves ranges, drops connections mid-body,
answers 503 once and redirects to another host."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ingest.download import (
    DownloadError,
    DownloadSettings,
    download,
    part_path,
    public_url,
    read_sidecar,
    sidecar_path,
    token_for,
)
from tests.helpers.http import RangeServer, serving

BODY = os.urandom(3 * 2**20 + 12345)  # more than one read block, not a multiple of it
SHA = hashlib.sha256(BODY).hexdigest()
NAME = "AVA_dataset.zip"
PATH = f"/datasets/Iceclear/AVA/resolve/main/{NAME}"


def _no_sleep(_: float) -> None:
    """Backoff waits are real in use; a test does not need to sit through them."""


def _get(server: RangeServer, dest: Path, **kw) -> tuple:
    settings = DownloadSettings(url=server.url + PATH, dest_dir=dest, **kw)
    return download(settings, sleep=_no_sleep), settings


def test_a_download_interrupted_twice_resumes_with_range_and_verifies_the_checksum(tmp_path):
    with serving(RangeServer({PATH: BODY})) as server:
        server.plan[PATH] = [503, 1_000_000, 1_500_000]  # a 503, then two drops mid-body, then the rest
        seen: list[int] = []
        settings = DownloadSettings(url=server.url + PATH, dest_dir=tmp_path, sha256=SHA, size=len(BODY))
        report = download(settings, progress=lambda done, total: seen.append(done), sleep=_no_sleep)
        gets = server.gets(PATH)
    assert (tmp_path / NAME).read_bytes() == BODY
    assert report.status == "downloaded" and report.sha256 == SHA and report.bytes == len(BODY)
    assert report.resumes == 2 and report.retries == 3 and report.restarts == 0
    assert report.bytes_fetched == len(BODY)  # nothing fetched twice
    assert [g.get("Range") for g in gets] == [None, None, "bytes=1000000-", "bytes=2500000-"]
    assert [g.get("If-Range") for g in gets[2:]] == [server.etag(PATH)] * 2
    assert seen[-1] == len(BODY) and seen == sorted(seen)
    assert not part_path(tmp_path / NAME).exists()
    record = read_sidecar(tmp_path / NAME)
    assert record["complete"] and record["sha256"] == SHA and record["size"] == len(BODY)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{NAME}.download.json", NAME]


def test_a_download_stopped_between_runs_resumes_in_the_next_run(tmp_path):
    with serving(RangeServer({PATH: BODY})) as server:
        server.plan[PATH] = [700_000, 503]  # a drop, then a failure with no retries left: the run stops
        with pytest.raises(DownloadError, match="kept in .*rerun to resume"):
            _get(server, tmp_path, retries=0)
        assert part_path(tmp_path / NAME).stat().st_size == 700_000
        server.plan[PATH] = [900_000, 700_000]
        report, _ = _get(server, tmp_path, retries=2)
        gets = server.gets(PATH)
    assert (tmp_path / NAME).read_bytes() == BODY
    assert report.resumes == 3 and report.bytes_fetched == len(BODY) - 700_000  # the first from the kept part
    assert [g.get("Range") for g in gets[-3:]] == ["bytes=700000-", "bytes=1600000-", "bytes=2300000-"]


def test_a_complete_verified_file_is_not_fetched_again(tmp_path):
    with serving(RangeServer({PATH: BODY})) as server:
        _get(server, tmp_path, sha256=SHA)
        mtime = (tmp_path / NAME).stat().st_mtime_ns
        report, _ = _get(server, tmp_path, sha256=SHA)  # the stored checksum decides: no request at all
        assert report.status == "up to date" and report.checked_by == "stored checksum"
        requests_before = len(server.requests)
        report, _ = _get(server, tmp_path)  # no checksum configured: one HEAD, ETag and size
        assert report.status == "up to date" and report.checked_by == "HEAD ETag and size"
        assert [m for m, _, _ in server.requests[requests_before:]] == ["HEAD"]
        assert len(server.gets(PATH)) == 1
    assert (tmp_path / NAME).stat().st_mtime_ns == mtime


def test_a_new_version_on_the_server_is_fetched_again(tmp_path):
    with serving(RangeServer({PATH: BODY})) as server:
        _get(server, tmp_path)
        server.files[PATH] = BODY[::-1]
        report, _ = _get(server, tmp_path)
    assert report.status == "downloaded" and (tmp_path / NAME).read_bytes() == BODY[::-1]
    assert "changed" in " ".join(report.notes)


def test_a_part_of_an_older_version_is_not_spliced_onto_the_new_one(tmp_path):
    with serving(RangeServer({PATH: BODY})) as server:
        server.plan[PATH] = [500_000, 503]
        with pytest.raises(DownloadError):
            _get(server, tmp_path, retries=0)
        server.files[PATH] = b"new" + BODY  # If-Range no longer matches: the server sends the whole body
        report, _ = _get(server, tmp_path)
    assert (tmp_path / NAME).read_bytes() == b"new" + BODY
    assert report.restarts == 1 and report.resumes == 0


def test_a_checksum_mismatch_fails_and_leaves_nothing(tmp_path):
    with serving(RangeServer({PATH: BODY})) as server:
        with pytest.raises(DownloadError, match="checksum mismatch.*removed"):
            _get(server, tmp_path, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_a_body_over_the_cap_is_refused_before_it_is_written(tmp_path):
    with serving(RangeServer({PATH: BODY})) as server:
        with pytest.raises(DownloadError, match="too large.*over the cap"):
            _get(server, tmp_path, max_bytes=2**20)
    assert list(tmp_path.iterdir()) == []


def test_not_enough_free_space_is_refused_before_starting(tmp_path):
    with serving(RangeServer({PATH: BODY})) as server:
        free = __import__("shutil").disk_usage(tmp_path).free
        with pytest.raises(DownloadError, match="not enough free space"):
            _get(server, tmp_path, reserve_bytes=free)
        assert server.gets(PATH) == [] or all("Range" not in g for g in server.gets(PATH))
    assert list(tmp_path.iterdir()) == []


def test_a_missing_file_is_one_clear_error(tmp_path):
    with serving(RangeServer({})) as server:
        with pytest.raises(DownloadError, match=r"^http 404 .*AVA_dataset.zip$"):
            _get(server, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_token_goes_to_the_first_host_only_and_is_never_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("AVA_TEST_TOKEN", "s3cret-token")
    with serving(RangeServer({PATH: BODY})) as cdn, serving(RangeServer({})) as origin:
        # The origin redirects to "another host" (localhost, another port), as the Hub redirects to its CDN.
        cdn_url = f"http://localhost:{cdn.server_address[1]}{PATH}?X-Signature=abc"
        origin.redirects[PATH] = cdn_url
        settings = DownloadSettings(url=origin.url + PATH, dest_dir=tmp_path, token_env="AVA_TEST_TOKEN")
        report = download(settings, sleep=_no_sleep)
        assert [h.get("Authorization") for _, _, h in origin.requests] == ["Bearer s3cret-token"]
        assert all("Authorization" not in h for _, _, h in cdn.requests) and cdn.gets(PATH)
    assert (tmp_path / NAME).read_bytes() == BODY
    stored = sidecar_path(tmp_path / NAME).read_text()
    assert "s3cret" not in stored and "s3cret" not in repr(report.as_metadata())
    assert "X-Signature" not in stored


def test_hf_token_is_used_for_hugging_face_urls_only(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    assert token_for("https://huggingface.co/datasets/Iceclear/AVA/resolve/main/AVA_dataset.zip") == "hf_x"
    assert token_for("https://example.org/AVA_dataset.zip") is None
    monkeypatch.setenv("MY_TOKEN", "m")
    assert token_for("https://example.org/AVA_dataset.zip", "MY_TOKEN") == "m"


@pytest.mark.parametrize("url", ["http://example.org/a.zip", "ftp://example.org/a.zip",
                                 "https://user:pw@example.org/a.zip", "file:///etc/passwd"])
def test_only_https_urls_are_taken(tmp_path, url):
    with pytest.raises(DownloadError):
        DownloadSettings(url=url, dest_dir=tmp_path)


def test_public_url_drops_credentials_query_and_fragment():
    assert public_url("https://u:p@host.org:8443/a/b.zip?sig=1#x") == "https://host.org:8443/a/b.zip"


def test_a_fifo_at_the_destination_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / NAME)
    with serving(RangeServer({PATH: BODY})) as server:
        with pytest.raises(DownloadError, match="not a regular file.*FIFO"):
            _get(server, tmp_path)
