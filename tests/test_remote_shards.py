"""Shards and indexes read over http(s) stay within ReadLimits whatever the server declares or does: a tar header
declaring 8 GiB, a member over the cap, an index or a shard that never ends, a stall, a trickle. They are read by
the project's own client (common/remote.py), never through curl."""

from __future__ import annotations

import io
import logging
import sys
import tarfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.remote import ReadLimits, RemoteError
from critic.curate import InputShard, input_shards, shard_identity
from nima_train.data import load_index, make_dataset, resolve_shards
from nima_train.tarstream import TarFormatError, open_shard_stream, tar_members, tar_samples
from tests.helpers.http import quiet_file_server, serving
from tests.helpers.lying_http import ScriptedServer, endless, stall, trickle

CAP = 64 * 1024


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _lying_tar(name: str, declared: int, sent: bytes) -> bytes:
    """A tar header declaring `declared` bytes (base-256, as GNU writes large sizes), followed by only `sent`."""
    info = tarfile.TarInfo(name)
    info.size = declared
    return info.tobuf(format=tarfile.GNU_FORMAT) + sent


def _jpeg(seed: int, quality: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=quality)
    return out.getvalue()


def _sample(key: str, jpg: bytes) -> list[tuple[str, bytes]]:
    return [(f"{key}.jpg", jpg), (f"{key}.json", b'{"target": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]}')]


class _Recording:
    """A stream that records the size of every read asked of it."""

    def __init__(self, stream) -> None:
        self.stream, self.asked = stream, []

    def read(self, n: int = -1) -> bytes:
        self.asked.append(n)
        return self.stream.read(n)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over http: (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    with serving(quiet_file_server(folder)) as server:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"


def test_a_tar_header_declaring_8_gib_is_never_asked_for_more_than_the_cap(files) -> None:
    folder, base = files
    (folder / "lie.tar").write_bytes(_lying_tar("k.jpg", 8 * 2**30, b"\xff" * 5000))
    limits = ReadLimits(max_member_bytes=CAP)
    stream = open_shard_stream(f"{base}/lie.tar", limits)
    recorded = _Recording(stream)
    try:
        with pytest.raises(TarFormatError, match=r"truncated member k\.jpg .*8589934592 bytes"):
            list(tar_members(recorded, f"{base}/lie.tar", limits.max_member_bytes))
    finally:
        stream.close()
    assert max(recorded.asked) <= CAP
    with pytest.raises(TarFormatError, match=r"k\.jpg"):  # the reader's own path: the shard fails in one line
        list(tar_samples([{"url": f"{base}/lie.tar"}], limits))


def test_a_member_over_the_cap_is_skipped_with_its_reason_and_the_shard_goes_on(files) -> None:
    folder, base = files
    small, big = _jpeg(1, 20), _jpeg(2, 95)
    assert len(small) < CAP < len(big)
    (folder / "s.tar").write_bytes(_tar(_sample("a", small) + _sample("b", big) + _sample("c", small)))
    limits = ReadLimits(max_member_bytes=CAP)
    for url in (f"{base}/s.tar", str(folder / "s.tar")):  # over http, and mapped from the local file
        samples = list(tar_samples([{"url": url}], limits))
        assert [s["__key__"] for s in samples] == ["a", "b", "c"]
        assert bytes(samples[0]["jpg"]) == small and bytes(samples[2]["jpg"]) == small
        assert "jpg" not in samples[1] and "json" in samples[1]
        (reason,) = samples[1]["__skipped__"]
        assert reason == f"too large: member b.jpg has {len(big)} bytes, over the cap max_member_bytes={CAP}"


def test_the_training_reader_drops_a_sample_with_a_skipped_member_and_says_so(files, caplog) -> None:
    folder, _ = files
    small, big = _jpeg(1, 20), _jpeg(2, 95)
    (folder / "s.tar").write_bytes(_tar(_sample("a", small) + _sample("b", big) + _sample("c", small)))
    dataset = make_dataset([str(folder / "s.tar")], train=False, batch_size=8, recycle_batches=False,
                           limits=ReadLimits(max_member_bytes=CAP))
    with caplog.at_level(logging.WARNING, logger="nima_train.data"):
        (batch,) = list(dataset)
    assert batch[0].shape[0] == 2
    assert any("sample b" in r.message and "max_member_bytes" in r.message for r in caplog.records)


def test_an_endless_index_fails_in_one_line_naming_the_cap_and_holds_no_more_than_it() -> None:
    routes = {"/ava/train/index.json": endless(b"[" * 65536)}
    with serving(ScriptedServer(routes)) as server:
        url = f"{server.url}/ava/train/index.json"
        tracemalloc.start()
        try:
            with pytest.raises(RemoteError) as refused:
                load_index(url, ReadLimits(max_index_bytes=2**20))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        with pytest.raises(RemoteError, match=r"max_index_bytes=1048576"):
            resolve_shards([f"{server.url}/ava/train/"], limits=ReadLimits(max_index_bytes=2**20))
        (listed,) = input_shards([url])  # curate's listing, with the default cap: that shard fails, named
    message = str(refused.value)
    assert "over the cap max_index_bytes=1048576" in message or "more than the cap max_index_bytes=1048576" in message
    assert "\n" not in message and peak < 4 * 2**20
    assert listed.error and "max_index_bytes=" in listed.error


def test_an_index_declaring_more_than_the_cap_is_refused_before_its_body(files) -> None:
    folder, base = files
    (folder / "index.json").write_bytes(b'{"shardlist": [], "nsamples": 0}' + b" " * 4096)
    with pytest.raises(RemoteError, match=r"declares 4128 bytes, over the cap max_index_bytes=1000"):
        load_index(f"{base}/index.json", ReadLimits(max_index_bytes=1000))
    assert load_index(f"{base}/index.json", ReadLimits(max_index_bytes=4128)) == {"shardlist": [], "nsamples": 0}


def test_a_shard_that_never_ends_stops_at_the_stream_cap() -> None:
    pair = _tar([("x.bin", b"1" * 512), ("y.bin", b"2" * 512)])[:2048]  # two samples, again and again: no end
    with serving(ScriptedServer({"/endless.tar": endless(pair)})) as server:
        limits = ReadLimits(max_stream_bytes=2**20)
        with pytest.raises(RemoteError, match=r"more than the cap max_stream_bytes=1048576"):
            sum(1 for _ in tar_samples([{"url": f"{server.url}/endless.tar"}], limits))
        with pytest.raises(RemoteError, match="max_stream_bytes"):  # a .tar URL given alone is counted ...
            resolve_shards([f"{server.url}/endless.tar"], limits=limits)
        with pytest.raises(RemoteError, match="max_stream_bytes"):  # ... and hashed by curate, both capped
            shard_identity(InputShard(f"{server.url}/endless.tar"), limits)


def test_a_stalled_shard_fails_after_the_read_timeout() -> None:
    head = _tar(_sample("a", b"\xff\xd8" + b"x" * 3000))[:2048]
    with serving(ScriptedServer({"/stall.tar": stall(head, declared=10 * 2**20)})) as server:
        with pytest.raises(RemoteError, match=r"no data for timeout_s=0.3 s"):
            list(tar_samples([{"url": f"{server.url}/stall.tar"}], ReadLimits(timeout_s=0.3)))


def test_a_trickling_shard_fails_at_the_deadline() -> None:
    body = _tar(_sample("a", b"\xff\xd8" + b"x" * 3000))  # 6 KiB at a byte per 0.02 s: two minutes
    with serving(ScriptedServer({"/slow.tar": trickle(body, 0.02)})) as server:
        with pytest.raises(RemoteError, match=r"not done after deadline_s=0.3 s"):
            list(tar_samples([{"url": f"{server.url}/slow.tar"}], ReadLimits(deadline_s=0.3, timeout_s=5)))
        assert server.sent["/slow.tar"] < len(body)


def test_http_shards_are_read_without_a_subprocess(files) -> None:
    folder, base = files
    (folder / "s.tar").write_bytes(_tar(_sample("a", b"one") + _sample("b", b"two")))
    events: list[str] = []
    watching = [False]

    def hook(event: str, args: tuple) -> None:
        if watching[0] and event in ("subprocess.Popen", "os.system", "os.posix_spawn", "os.fork", "os.exec"):
            events.append(event)

    sys.addaudithook(hook)  # hooks stay for the process; this one records only inside this test
    watching[0] = True
    try:
        samples = list(tar_samples([{"url": f"{base}/s.tar"}]))
        counted = resolve_shards([f"{base}/s.tar"]).n_samples
    finally:
        watching[0] = False
    assert [s["__key__"] for s in samples] == ["a", "b"] and counted == 2
    assert events == []


def test_read_limits_must_be_positive() -> None:
    for bad in ({"timeout_s": 0}, {"deadline_s": -1}, {"max_member_bytes": 0}, {"max_index_bytes": 0},
                {"max_stream_bytes": 0}):
        with pytest.raises(ValueError, match="bad read limits"):
            ReadLimits(**bad)


def test_curate_decides_a_sample_with_a_member_over_the_cap_unreadable_naming_it(tmp_path, monkeypatch) -> None:
    import duckdb
    import webdataset as wds

    from cli.main import main
    from tests.helpers.critic_models import picture, register_model

    home = tmp_path / "home"
    home.mkdir()
    register_model(home, crop=96, resize=108)
    cap = ReadLimits().max_member_bytes  # curate reads with the defaults
    huge = b"\xff\xd8" + bytes(cap)
    with wds.TarWriter(str(tmp_path / "in.tar")) as sink:
        for key, jpg in (("p0", _jpeg_of(picture(0, 256))), ("huge", huge), ("p1", _jpeg_of(picture(1, 256)))):
            sink.write({"__key__": key, "jpg": jpg})
    del huge
    monkeypatch.setenv("AESTHETIC_HOME", str(home))
    assert main(["curate", str(tmp_path / "in.tar"), "--out", str(tmp_path / "out"), "--workers", "0"]) == 0
    rows = dict(duckdb.sql(f"SELECT key, decision || ': ' || coalesce(reason, '') "
                           f"FROM '{tmp_path}/out/manifest.parquet'").fetchall())
    assert rows["huge"] == (f"unreadable: too large: member huge.jpg has {cap + 2} bytes, over the cap "
                            f"max_member_bytes={cap}")
    assert not rows["p0"].startswith("unreadable") and not rows["p1"].startswith("unreadable")


def _jpeg_of(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def test_the_train_and_evaluate_command_lines_stop_at_an_endless_index_in_one_line(tmp_path, capsys) -> None:
    import subprocess

    from nima_train.evaluate import main as evaluate_main
    from tests.helpers.critic_models import save_test_checkpoint

    with serving(ScriptedServer({"/ava/val/index.json": endless(b"[" * 65536)})) as server:
        index = f"{server.url}/ava/val/index.json"
        done = subprocess.run(
            [sys.executable, "-m", "nima_train.train", "--data", index, "--output-dir", str(tmp_path / "run"),
             "--device", "cpu", "--weights", "none", "--no-progress"],
            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
        checkpoint = save_test_checkpoint(tmp_path / "model.pt", crop=96, resize=108)
        with pytest.raises(SystemExit) as exited:
            evaluate_main(["--checkpoint", str(checkpoint), "--data", index, "--out", str(tmp_path / "r"),
                           "--device", "cpu"])
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("nima_train.train: ")
    assert "max_index_bytes=16777216" in done.stderr
    (message,) = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 1 and "max_index_bytes=16777216" in message
