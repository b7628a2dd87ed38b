"""ingest/fetch.py against real things: an http.server on 127.0.0.1, real tar archives, real folders."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ingest.fetch import (
    FetchFailure,
    HttpOptions,
    Source,
    fetch_one,
    http_sources,
    local_sources,
    tar_sources,
)
from tests.helpers.http import serving

FILES = {"/img/1.jpg": b"\xff\xd8one", "/img/2.jpg": b"\xff\xd8two" * 1000, "/img/3.jpg": b"\xff\xd8three"}
BIG = b"x" * 5000


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        with self.server.lock:
            self.server.hits[self.path] += 1
            hits = self.server.hits[self.path]
        if self.path == "/img/5.jpg":  # drops the connection without an answer
            self.close_connection = True
            self.connection.close()
            return
        if self.path == "/img/6.jpg" and hits == 1:  # a passing server error: the retry succeeds
            self.send_error(503)
            return
        if self.path.startswith("/slow/"):  # answers only after a while
            time.sleep(1.0)
        if self.path == "/img/8.jpg":  # no Content-Length: the body runs until the connection closes
            self.send_response(200)
            self.end_headers()
            self.wfile.write(BIG)
            return
        if self.path == "/img/6.jpg":
            body = b"\xff\xd8six"
        elif self.path == "/img/7.jpg":
            body = BIG
        elif self.path.startswith("/slow/"):
            body = b"\xff\xd8slow"
        else:
            body = FILES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[_Server]:
    with serving(_Server()) as srv:
        yield srv


def _template(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/img/{{image_id}}.jpg"


FAST = HttpOptions(concurrency=3, timeout_s=5, retries=2, backoff_s=0.01, max_bytes=4096)


def test_http_fetches_files_and_turns_404_drop_and_oversize_into_reasons(server, tmp_path: Path):
    ids = ["1", "2", "3", "4", "5", "6", "7", "8"]
    out = {r.item_id: r for r in http_sources(_template(server), ids, tmp_path / "cache", FAST)}
    assert set(out) == set(ids)
    for item_id in ("1", "3", "6"):
        src = out[item_id]
        assert isinstance(src, Source) and Path(src.path).read_bytes() == (
            FILES.get(f"/img/{item_id}.jpg") or b"\xff\xd8six"
        )
        assert src.key.endswith(f"/img/{item_id}.jpg") and src.size == Path(src.path).stat().st_size
    assert isinstance(out["2"], FetchFailure) and out["2"].reason.startswith("too large:")  # 9003 > 4096 cap
    assert isinstance(out["4"], FetchFailure) and out["4"].reason.startswith("http 404:")
    assert isinstance(out["5"], FetchFailure) and out["5"].reason.startswith("network:")
    assert isinstance(out["7"], FetchFailure) and out["7"].reason.startswith("too large:")
    assert isinstance(out["8"], FetchFailure) and out["8"].reason.startswith("too large:")  # counted while streaming
    assert "sent over" in out["8"].reason
    assert server.hits["/img/4.jpg"] == 1  # a 404 is final, not retried
    assert server.hits["/img/5.jpg"] == 1 + FAST.retries  # a dropped connection is retried, then given up
    assert server.hits["/img/6.jpg"] == 2  # 503 then success
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["1.jpg", "3.jpg", "6.jpg"]  # no partials


def test_http_resume_does_not_fetch_a_completed_file_again(server, tmp_path: Path):
    first = list(http_sources(_template(server), ["1", "3"], tmp_path / "cache", FAST))
    assert all(isinstance(r, Source) for r in first)
    before = dict(server.hits)
    again = {r.item_id: r for r in http_sources(_template(server), ["1", "3", "4"], tmp_path / "cache", FAST)}
    assert isinstance(again["1"], Source) and isinstance(again["3"], Source)
    assert server.hits["/img/1.jpg"] == before["/img/1.jpg"] and server.hits["/img/3.jpg"] == before["/img/3.jpg"]
    assert server.hits["/img/4.jpg"] == 1


def test_retries_back_off_exponentially(server, tmp_path: Path):
    waits: list[float] = []
    url = _template(server).replace("{image_id}", "5")
    reason = fetch_one(url, tmp_path / "5.jpg", HttpOptions(retries=3, backoff_s=1.0, timeout_s=5), waits.append)
    assert reason and reason.startswith("network:") and "after 4 tries" in reason
    assert len(waits) == 3
    assert 0.5 <= waits[0] <= 1.5 and 1.0 <= waits[1] <= 3.0 and 2.0 <= waits[2] <= 6.0


def test_url_template_must_name_the_id_and_be_http():
    with pytest.raises(ValueError, match="image_id"):
        list(http_sources("http://127.0.0.1/x.jpg", ["1"], "/tmp/unused-cache-dir-never-written"))
    with pytest.raises(ValueError, match="http"):
        list(http_sources("file:///etc/{image_id}", ["1"], "/tmp/unused-cache-dir-never-written"))


def _add(tf: tarfile.TarFile, name: str, data: bytes, mtime: int = 1_700_000_000) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), mtime
    tf.addfile(info, io.BytesIO(data))


def _archive(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "AVA/images/10.jpg", b"ten")
        _add(tf, "readme.txt", b"not an image member")
        _add(tf, "AVA/images/11.jpg", b"eleven")
        _add(tf, "AVA/images/11.jpg", b"second copy")  # repeated member: the first wins
        _add(tf, "../12.jpg", b"climber")
        _add(tf, "AVA/images/99.jpg", b"not wanted")
    return path


def test_tar_stream_reads_wanted_members_and_explains_the_rest(tmp_path: Path):
    archive = _archive(tmp_path / "ava.tar.gz")
    out = {r.item_id: r for r in tar_sources(archive, ["10", "11", "12", "13"])}
    assert out["10"].data == b"ten" and out["10"].key == f"{archive}::AVA/images/10.jpg"
    assert out["10"].size == 3 and out["10"].mtime_ns == 1_700_000_000 * 10**9
    assert out["11"].data == b"eleven"
    assert isinstance(out["12"], FetchFailure) and out["12"].reason.startswith("unsafe path:")
    assert isinstance(out["13"], FetchFailure) and out["13"].reason.startswith("missing:")
    assert "99" not in out


def test_tar_skips_reading_members_the_caller_does_not_need(tmp_path: Path):
    archive = _archive(tmp_path / "ava.tar.gz")
    out = {r.item_id: r for r in tar_sources(archive, ["10", "11"], needs_data=lambda s: s.item_id == "11")}
    assert out["10"].data is None and out["10"].size == 3  # signature known, bytes never read
    assert out["11"].data == b"eleven"


def test_truncated_tar_fails_the_unreached_items_not_the_run(tmp_path: Path):
    big = tmp_path / "big.tar"
    with tarfile.open(big, "w") as tf:
        _add(tf, "1.jpg", b"a" * 600)
        _add(tf, "2.jpg", b"b" * 20000)
        _add(tf, "3.jpg", b"c" * 600)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(big.read_bytes()[:8000])
    out = {r.item_id: r for r in tar_sources(cut, ["1", "2", "3"])}
    assert isinstance(out["1"], Source) and out["1"].data == b"a" * 600
    assert isinstance(out["3"], FetchFailure) and out["3"].reason.startswith("archive unreadable:")
    assert isinstance(out["2"], FetchFailure)


def test_local_folder_missing_file_is_a_failure(tmp_path: Path):
    (tmp_path / "1.jpg").write_bytes(b"x")
    out = {r.item_id: r for r in local_sources(tmp_path, ["1", "2"])}
    assert isinstance(out["1"], Source) and out["1"].path == str((tmp_path / "1.jpg").resolve())
    assert isinstance(out["2"], FetchFailure) and out["2"].reason.startswith("missing:")


def test_ids_that_would_climb_out_of_the_folder_are_failures(tmp_path: Path, server):
    (out,) = local_sources(tmp_path / "images", ["../../etc/passwd"])
    assert isinstance(out, FetchFailure) and out.reason.startswith("unsafe path:")
    (out,) = http_sources(_template(server), ["../x"], tmp_path / "cache", FAST)
    assert isinstance(out, FetchFailure) and out.reason.startswith("unsafe path:")



def test_a_caller_that_stops_early_does_not_wait_for_queued_downloads(server, tmp_path: Path):
    template = f"http://127.0.0.1:{server.server_address[1]}/slow/{{image_id}}.jpg"
    opts = HttpOptions(concurrency=2, timeout_s=5, retries=0, max_bytes=4096)
    results = http_sources(template, [str(i) for i in range(40)], tmp_path / "cache", opts)
    first = next(results)
    started = time.monotonic()
    results.close()  # what happens when the consumer raises: 38 queued downloads of 1 s each remain
    assert time.monotonic() - started < 3, "closing must drop the queue, not run it"
    assert isinstance(first, Source)
