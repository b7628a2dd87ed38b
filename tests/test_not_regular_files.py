"""A FIFO, a Unix socket or a device node where a user file is read is refused with a reason and never blocks:
the regular-file helper, AVA and SAC image ingest, Kuler .mat loading, the critic and `aesthetic score`.

The special files are real (os.mkfifo, a bound AF_UNIX socket, os.mknod where root allows; tests/helpers/
special_files.py). A regression that opens a FIFO the old way would block: the helpers' watchdog then writes
end-of-file into it, so the test fails on what was read instead of hanging."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from common.regular_files import NotRegularFile, open_regular, read_regular_file
from critic.scoring import Critic, UnreadableImage, expand_sources, load_image
from ingest.ava import AvaSettings, ingest_ava
from ingest.kuler import KulerFormatError, KulerSettings, load_mat, read_release
from ingest.paths import Paths
from ingest.sac import SacSettings, drop_databases, ingest_snapshot, read_snapshot
from ingest.sample_data import SAC_DB_NAME, write_sample_data
from tests.helpers.critic_models import make_model, picture, register_model
from tests.helpers.special_files import KIND_WORDS, KINDS, plant
from warehouse.db import connect

ROOT = Path(__file__).resolve().parents[1]


def _query(home: Path, sql: str, params: list | None = None) -> list[tuple]:
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()


@pytest.mark.parametrize("kind", KINDS)
def test_open_regular_refuses_what_is_not_a_regular_file_and_names_it(tmp_path: Path, kind: str):
    with plant({kind: tmp_path / "x.jpg"}) as planted:
        path = planted.path(kind)
        with pytest.raises(NotRegularFile) as refused:
            read_regular_file(path)
        assert str(refused.value) == f"not a regular file: {path} is {refused.value.kind}"
        assert KIND_WORDS[kind] in refused.value.kind


def test_open_regular_reads_files_and_links_to_files_and_refuses_folders(tmp_path: Path):
    (tmp_path / "a.txt").write_bytes(b"abc")
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    assert read_regular_file(tmp_path / "link.txt") == b"abc"
    with open_regular(tmp_path / "a.txt") as fh:
        assert os.get_blocking(fh.fileno())  # O_NONBLOCK was only for the open
    with pytest.raises(NotRegularFile, match="is a directory"):
        read_regular_file(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path / "gone.txt")


def test_ava_folder_with_fifo_socket_and_device_images_rejects_them_and_crops_the_rest(tmp_path: Path):
    raw, home = tmp_path / "raw", tmp_path / "home"
    write_sample_data(raw, ava=10, sac=0, kuler=0, seed=3)
    images = raw / "ava" / "images"
    ids = sorted(p.stem for p in images.iterdir())
    where = dict(zip(KINDS, (images / f"{i}.jpg" for i in ids[:3]), strict=True))
    for path in where.values():
        path.unlink()
    with plant(where) as planted:
        report = ingest_ava(Paths(home, raw), partial(connect, home / "warehouse.duckdb"), AvaSettings(workers=1))
        rejects = dict(_query(home, "SELECT item_id, reason FROM rejects WHERE dataset = 'ava' AND stage = 'image'"))
    special = {path.stem: kind for kind, path in planted.paths.items()}
    assert {i: r.split(":")[0] for i, r in rejects.items()} == dict.fromkeys(special, "not a regular file")
    for image_id, kind in special.items():
        assert KIND_WORDS[kind] in rejects[image_id]
    assert report.accepted == len(ids) - len(special) and report.rejected == len(special)


def test_sac_images_that_are_fifos_sockets_or_devices_are_rejected(tmp_path: Path):
    raw, home = tmp_path / "raw", tmp_path / "home"
    write_sample_data(raw, ava=0, sac=8, kuler=0, seed=4)
    db = raw / "sac" / SAC_DB_NAME
    con = sqlite3.connect(db)
    try:
        paths = dict(con.execute("SELECT iid, path FROM paths ORDER BY iid LIMIT 3").fetchall())
    finally:
        con.close()
    where = {kind: raw / "sac" / "images" / name for kind, name in zip(KINDS, paths.values(), strict=True)}
    for path in where.values():
        path.unlink()
    with plant(where) as planted:
        snapshot = read_snapshot(drop_databases(raw / "sac", home / "tmp")[0])
        report = ingest_snapshot(Paths(home, raw), partial(connect, home / "warehouse.duckdb"),
                                 SacSettings(workers=1), snapshot)
        rejects = dict(_query(home, "SELECT item_id, reason FROM rejects WHERE dataset = 'sac' AND stage = 'image'"))
    iid_of = {name: str(iid) for iid, name in paths.items()}
    for kind, path in planted.paths.items():
        reason = rejects[iid_of[path.name]]
        assert reason.startswith("not a regular file:") and KIND_WORDS[kind] in reason
    assert report.images_added == 8 - len(planted.paths)


@pytest.mark.parametrize("kind", KINDS)
def test_kuler_mat_file_that_is_not_a_regular_file_stops_with_a_clear_error(tmp_path: Path, kind: str):
    kuler = tmp_path / "kuler"
    kuler.mkdir()
    with plant({kind: kuler / "themeData.mat"}) as planted:
        path = planted.path(kind)
        with pytest.raises(KulerFormatError, match=f"not a regular file: {path} is .*{KIND_WORDS[kind]}"):
            load_mat(path)
        with pytest.raises(KulerFormatError, match="not a regular file"):
            read_release(kuler, KulerSettings())


@pytest.fixture(scope="module")
def critic() -> Critic:
    return Critic(make_model(), image_size=96, batch_size=4)


@pytest.mark.parametrize("kind", KINDS)
def test_critic_load_image_refuses_special_files(tmp_path: Path, kind: str):
    with plant({kind: tmp_path / "x.png"}) as planted:
        path = planted.path(kind)
        with pytest.raises(UnreadableImage, match=f"not a regular file: {path} is .*{KIND_WORDS[kind]}") as refused:
            load_image(path)
        assert refused.value.kind == "not a regular file"


def test_scanning_a_folder_reports_special_files_as_skipped_and_scores_the_rest(tmp_path: Path, critic: Critic):
    folder = tmp_path / "designs"
    (folder / "sub").mkdir(parents=True)
    picture(1).save(folder / "good.png")
    picture(2).save(folder / "sub" / "also.png")
    where = {"fifo": folder / "sub" / "pipe.jpg", "socket": folder / "sock.png", "device": folder / "dev.jpg"}
    with plant(where) as planted:
        sources = expand_sources([str(folder)])
        assert set(planted.paths.values()) <= set(sources)  # found by the scan, not dropped unseen
        items = {Path(i.source).name: i for i in critic.score_sources(sources)}
    assert items["good.png"].score is not None and items["also.png"].score is not None
    for kind, path in planted.paths.items():
        assert items[path.name].score is None and items[path.name].error.startswith("not a regular file:")
        assert KIND_WORDS[kind] in items[path.name].error


def test_aesthetic_score_on_a_fifo_skips_it_with_the_reason_and_returns(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    register_model(home, crop=96, resize=108)
    folder = tmp_path / "designs"
    folder.mkdir()
    picture(4).save(folder / "good.png")
    where = {"fifo": tmp_path / "fifo.jpg", "socket": folder / "inner.jpg"}
    with plant(where) as planted:
        done = subprocess.run(
            [sys.executable, "-m", "cli", "score", str(planted.paths["fifo"]), str(folder), "--json"],
            cwd=ROOT, env={**os.environ, "AESTHETIC_HOME": str(home), "PYTHONPATH": str(ROOT)},
            capture_output=True, text=True, timeout=300,
        )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [Path(r["path"]).name for r in doc["results"]] == ["good.png"]
    skipped = {Path(s["path"]).name: s["error"] for s in doc["skipped"]}
    assert skipped == {
        "fifo.jpg": f"not a regular file: {planted.paths['fifo']} is a FIFO (named pipe)",
        "inner.jpg": f"not a regular file: {planted.paths['socket']} is a socket",
    }
    assert f"skipped {planted.paths['fifo']}: not a regular file" in done.stderr
