"""AVA cropped straight from real archives (zipfile, tarfile, pyarrow and py7zr wrote them), never extracted:
the same crops as from a folder, reruns without image work, new versions re-cropping only what changed, and
unsafe, linked, missing and corrupt members each named."""

from __future__ import annotations

import os
import shutil
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest import archives
from ingest.archives import (
    ArchiveError,
    ParquetColumns,
    member_id,
    parquet_sources,
    seven_zip_sources,
    unsafe_name,
    volumes,
    zip_sources,
)
from ingest.ava import AvaSettings, ingest_ava
from ingest.fetch import FetchFailure, Source
from ingest.paths import Paths
from ingest.sample_data import SampleReport
from tests.helpers.archives import photos, split_volumes, write_7z, write_parquet, write_tar, write_zip
from warehouse.db import connect

MODES = ["zip", "parquet", "tar", "7z", "7z-split"]


@pytest.fixture
def raw(sample_raw: SampleReport, tmp_path: Path) -> Path:
    """A private copy of the session's AVA drop (with its planted faults)."""
    out = tmp_path / "raw"
    shutil.copytree(sample_raw.out / "ava", out / "ava")
    return out


def pack(mode: str, files: list[Path], where: Path, name: str = "ava") -> Path:
    """files packed as the public copies are; returns what `source` names."""
    where.mkdir(parents=True, exist_ok=True)
    if mode == "zip":
        return write_zip(where / f"{name}.zip", files)
    if mode == "parquet":
        return write_parquet(where / f"{name}.parquet", files)
    if mode == "tar":
        return write_tar(where / f"{name}.tar.gz", files)
    archive = write_7z(where / f"{name}.7z", files)
    if mode == "7z-split":
        return split_volumes(archive, 3)[0]
    return archive


def acquisition(mode: str) -> str:
    return "7z" if mode.startswith("7z") else mode


def run(home: Path, raw: Path, **settings):
    paths = Paths(home, raw)
    return ingest_ava(paths, lambda: connect(home / "warehouse.duckdb"), AvaSettings(**settings))


def query(home: Path, sql: str, params: list | None = None) -> list[tuple]:
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()


def crops(home: Path) -> list[tuple]:
    return query(home, "SELECT image_id, split, width, sha256 FROM images ORDER BY ALL")


def reject_kinds(home: Path) -> list[tuple]:
    return query(home, "SELECT item_id, stage, split_part(reason, ':', 1) FROM rejects ORDER BY ALL")


def state_tables(home: Path) -> dict[str, list[tuple]]:
    tables = ["images", "histograms", "rejects", "ava_crop_state"]
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in tables}


@pytest.mark.parametrize("mode", MODES)
def test_each_archive_gives_the_crops_and_rejects_of_the_folder_and_reruns_without_image_work(raw, tmp_path, mode):
    source = pack(mode, photos(raw / "ava" / "images"), tmp_path / "archives")
    folder_home, archive_home = tmp_path / "folder", tmp_path / "archive"
    run(folder_home, raw, workers=1)
    report = run(archive_home, raw, acquisition=acquisition(mode), source=source, workers=1)
    assert crops(archive_home) == crops(folder_home) and crops(folder_home)
    assert reject_kinds(archive_home) == reject_kinds(folder_home)
    assert report.accepted + report.rejected == report.lines_read
    missing = query(archive_home, "SELECT reason FROM rejects WHERE stage = 'fetch'")
    assert missing and all(r.startswith("missing: no ") for (r,) in missing)
    source_path = query(archive_home, "SELECT source_path FROM images LIMIT 1")[0][0]
    assert source_path.startswith(str(source if mode != "7z-split" else source.with_suffix("")))
    before = state_tables(archive_home)
    again = run(archive_home, raw, acquisition=acquisition(mode), source=source, workers=1)
    assert again.cropped == 0 and again.images_written == 0 and again.up_to_date == report.cropped
    assert state_tables(archive_home) == before


def _generated(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for k in range(1, n + 1):
        arr = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{k}.jpg", quality=80)
        out.append(folder / f"{k}.jpg")
    return out


def _drop(raw: Path, n: int) -> None:
    ava = raw / "ava"
    (ava / "aesthetics_image_lists").mkdir(parents=True, exist_ok=True)
    lines = [f"{k} {k} 1 2 3 4 5 6 5 4 3 2 0 0 {1390 + k % 7}" for k in range(1, n + 1)]
    (ava / "AVA.txt").write_text("\n".join(lines) + "\n")
    (ava / "aesthetics_image_lists" / "generic_test.jpgl").write_text("3\n7\n")


@pytest.mark.parametrize("mode", ["zip", "parquet"])
def test_workers_read_members_themselves_in_parallel(tmp_path, mode):
    raw = tmp_path / "raw"
    _drop(raw, 80)  # over the 64 crops below which the stage crops inline
    files = _generated(tmp_path / "photos", 80)
    source = pack(mode, files, tmp_path / "archives")
    archives._WORKER_ZIPS.clear()
    archives._WORKER_GROUP.clear()
    report = run(tmp_path / "home", raw, acquisition=mode, source=source, workers=2, batch_size=40, crop_size=32)
    assert (report.accepted, report.rejected, report.cropped) == (80, 0, 80)
    # This process listed the archive but read no member: the workers opened it and read them.
    assert not archives._WORKER_ZIPS and not archives._WORKER_GROUP
    direct = run(tmp_path / "folder", raw, source=tmp_path / "photos", workers=1, crop_size=32)
    assert direct.accepted == 80 and crops(tmp_path / "home") == crops(tmp_path / "folder")


def _repacked_with_one_change(mode: str, raw: Path, tmp_path: Path, changed: str) -> Path:
    """A second version of the archive at another path: the same photos (same files, same mtimes) but one."""
    second = tmp_path / "photos_v2"
    shutil.copytree(raw / "ava" / "images", second, copy_function=shutil.copy2)
    Image.new("RGB", (300, 200), (10, 200, 30)).save(second / f"{changed}.jpg", quality=90)
    return pack(mode, photos(second), tmp_path / "v2", name="ava_v2")


@pytest.mark.parametrize("mode", MODES)
def test_a_new_archive_version_decodes_only_the_members_whose_bytes_changed(raw, tmp_path, mode):
    home = tmp_path / "home"
    first = pack(mode, [p for p in photos(raw / "ava" / "images")], tmp_path / "v1")
    run(home, raw, acquisition=acquisition(mode), source=first, workers=1)
    sha_before = dict(query(home, "SELECT image_id, sha256 FROM images"))
    changed = sorted(sha_before)[3]
    second = _repacked_with_one_change(mode, raw, tmp_path, changed)
    report = run(home, raw, acquisition=acquisition(mode), source=second, workers=1)
    assert report.cropped == 1
    sha_after = dict(query(home, "SELECT image_id, sha256 FROM images"))
    assert sha_after[changed] != sha_before[changed]
    assert {k: v for k, v in sha_after.items() if k != changed} == {
        k: v for k, v in sha_before.items() if k != changed}


def test_crop_state_keyed_by_archive_path_from_before_the_redesign_is_cropped_again(raw, tmp_path):
    home = tmp_path / "home"
    archive = pack("tar", photos(raw / "ava" / "images"), tmp_path / "a")
    first = run(home, raw, acquisition="tar", source=archive, workers=1)
    with connect(home / "warehouse.duckdb") as conn:  # the key form written before 0.1's redesign
        conn.execute("UPDATE ava_crop_state SET source_key = ? || '::' || substr(source_key, 6)", [str(archive)])
    assert run(home, raw, acquisition="tar", source=archive, workers=1).cropped == first.cropped > 0


def _zip_with(members: dict[str, bytes], dest: Path, links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)  # ZipInfo keeps the name exactly as given
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = 0o120777 << 16  # a symbolic link, as Info-ZIP's -y stores it
            zf.writestr(info, target)
    return dest


def _jpeg(color: tuple[int, int, int] = (200, 100, 50)) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (80, 60), color).save(buf, "JPEG")
    return buf.getvalue()


def _answers(items) -> dict[str, Source | FetchFailure]:
    return {item.item_id: item for item in items}


def test_unsafe_and_linked_zip_members_are_rejected_as_such(tmp_path):
    archive = _zip_with({"../1.jpg": _jpeg(), "/abs/2.jpg": _jpeg(), "img\\..\\3.jpg": _jpeg(),
                         "C:/4.jpg": _jpeg(), "ok/6.jpg": _jpeg()}, tmp_path / "a.zip",
                        links={"images/5.jpg": "/etc/passwd"})
    got = _answers(zip_sources(archive, ["1", "2", "3", "4", "5", "6", "7"]))
    for item in "1234":
        assert got[item].reason.startswith("unsafe path: member"), got[item]
    assert got["5"].reason.startswith("link: member images/5.jpg") and "not followed" in got["5"].reason
    assert isinstance(got["6"], Source) and got["6"].ref.read() == _jpeg()
    assert got["7"].reason == f"missing: no member 7.jpg in {archive}"


def test_a_corrupt_zip_member_is_an_image_reject_and_the_others_are_cropped(tmp_path):
    raw = tmp_path / "raw"
    _drop(raw, 3)
    good, bad = _jpeg((1, 2, 3)), _jpeg((200, 10, 10))
    archive = _zip_with({"AVA_dataset/image/1.jpg": good, "AVA_dataset/image/2.jpg": bad,
                         "AVA_dataset/image/3.jpg": good}, tmp_path / "a.zip")
    data = bytearray(archive.read_bytes())
    info = zipfile.ZipFile(archive).getinfo("AVA_dataset/image/2.jpg")
    start = info.header_offset + 30 + len(info.filename)  # the local header is 30 bytes plus the name
    data[start + info.compress_size // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    report = run(tmp_path / "home", raw, acquisition="zip", source=archive, workers=1, crop_size=32)
    (reason,) = query(tmp_path / "home", "SELECT reason FROM rejects WHERE item_id = '2'")[0]
    assert reason.startswith("corrupt member: ") and "2.jpg" in reason
    assert report.accepted == 2 and report.rejected == 1


def test_parquet_columns_are_configurable_and_a_wrong_one_is_one_clear_error(tmp_path):
    files = _generated(tmp_path / "photos", 5)
    archive = write_parquet(tmp_path / "a.parquet", files, row_group_size=2, id_column="name", image_column="jpeg",
                            struct=False)
    got = _answers(parquet_sources(archive, ["1", "5", "9"], ParquetColumns("name", "jpeg")))
    assert got["5"].ref.read() == files[4].read_bytes() and got["5"].size == files[4].stat().st_size
    assert got["9"].reason.startswith("missing: no row with name = 9")
    with pytest.raises(ArchiveError, match=r"has no id column 'image_id' \(columns: name, jpeg\)"):
        list(parquet_sources(archive, ["1"]))


def test_parquet_ids_may_be_file_names_and_row_groups_without_a_wanted_id_are_not_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    blobs = [_jpeg((k, k, k)) for k in range(6)]
    names = ["AVA_dataset/image/10.jpg", "11.jpg", "12", "x", None, "15.jpeg"]
    pq.write_table(pa.table({"image": pa.array([{"bytes": b, "path": n} for b, n in zip(blobs, names, strict=True)],
                                               pa.struct([("bytes", pa.binary()), ("path", pa.string())]))}),
                   tmp_path / "hf.parquet", row_group_size=2)
    got = _answers(parquet_sources(tmp_path / "hf.parquet", ["10", "12", "15"], ParquetColumns("image.path")))
    assert [got[i].ref.read() for i in ("10", "12", "15")] == [blobs[0], blobs[2], blobs[5]]
    assert {got[i].ref.row_group for i in got} == {0, 1, 2}
    got = _answers(parquet_sources(tmp_path / "hf.parquet", ["11"], ParquetColumns("image.path")))
    assert got["11"].ref.row_group == 0  # the later row groups were never opened for their bytes


def _patched_7z_name(archive: Path, old: str, new: str) -> None:
    """Rename a member inside a 7z written with a plain (unencoded) header, fixing the header's CRC: a way to
    get a name py7zr's writer refuses, as a hostile archive would carry it."""
    data = bytearray(archive.read_bytes())
    o, n = old.encode("utf-16-le"), new.encode("utf-16-le")
    assert len(o) == len(n) and data.count(o) == 1
    at = data.index(o)
    data[at : at + len(o)] = n
    offset, size = struct.unpack_from("<QQ", data, 12)
    header = bytes(data[32 + offset : 32 + offset + size])
    struct.pack_into("<I", data, 28, zlib.crc32(header))
    struct.pack_into("<I", data, 8, zlib.crc32(bytes(data[12:32])))
    archive.write_bytes(bytes(data))


def test_unsafe_and_linked_7z_members_are_rejected_as_such(tmp_path):
    import py7zr

    (tmp_path / "src").mkdir()
    for k in (1, 2):
        (tmp_path / "src" / f"{k}.jpg").write_bytes(_jpeg((k, 0, 0)))
    os.symlink("/etc/passwd", tmp_path / "src" / "3.jpg")
    archive = tmp_path / "a.7z"
    with py7zr.SevenZipFile(archive, "w") as sz:
        sz.set_encoded_header_mode(False)
        sz.write(tmp_path / "src" / "1.jpg", "aa/1.jpg")
        sz.write(tmp_path / "src" / "2.jpg", "ok/2.jpg")
        sz.write(tmp_path / "src" / "3.jpg", "ok/3.jpg")
    _patched_7z_name(archive, "aa/1.jpg", "../1.jpg")
    got = _answers(seven_zip_sources(archive, ["1", "2", "3", "4"]))
    assert got["1"].reason.startswith("unsafe path: member '../1.jpg'")
    assert got["2"].data == _jpeg((2, 0, 0))
    assert got["3"].reason.startswith("link: member ok/3.jpg")
    assert got["4"].reason.startswith("missing: no member 4.jpg")


def test_split_7z_volumes_are_found_from_any_volume_and_a_missing_one_is_named(tmp_path):
    files = _generated(tmp_path / "photos", 4)
    first = split_volumes(write_7z(tmp_path / "AVA.7z", files), 4)[0]
    assert volumes(tmp_path / "AVA.7z") == volumes(first) == volumes(tmp_path / "AVA.7z.003") == sorted(
        tmp_path.glob("AVA.7z.0*"))
    got = _answers(seven_zip_sources(tmp_path / "AVA.7z", ["2", "4"]))
    assert got["2"].data == files[1].read_bytes() and got["4"].data == files[3].read_bytes()
    (tmp_path / "AVA.7z.002").unlink()
    with pytest.raises(ArchiveError, match=r"7z volume AVA.7z.002 is missing"):
        list(seven_zip_sources(first, ["2"]))


@pytest.mark.parametrize("mode", ["zip", "parquet", "7z"])
def test_an_archive_that_is_a_fifo_or_missing_fails_in_one_line_without_blocking(tmp_path, mode):
    raw = tmp_path / "raw"
    _drop(raw, 2)
    fifo = tmp_path / f"a.{mode}"
    os.mkfifo(fifo)
    with pytest.raises(ArchiveError, match=r"not a regular file: .* is a FIFO"):
        run(tmp_path / "home", raw, acquisition=mode, source=fifo)
    with pytest.raises(ArchiveError, match="not found"):
        run(tmp_path / "home", raw, acquisition=mode, source=tmp_path / f"none.{mode}")


def test_a_bare_archive_name_is_looked_up_in_the_ava_drop(raw, tmp_path):
    pack("zip", photos(raw / "ava" / "images"), raw / "ava", name="AVA_dataset")
    report = run(tmp_path / "home", raw, acquisition="zip", source=Path("AVA_dataset.zip"), workers=1)
    assert report.accepted > 0


def test_no_shell_subprocess_or_pipe_is_involved_in_any_archive_mode(raw, tmp_path):
    events: list[tuple] = []
    watching = [False]

    def hook(event: str, args: tuple) -> None:
        if not watching[0]:
            return
        if event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork"):
            events.append((event, args))
        if event == "open" and isinstance(args[0], str) and args[0].startswith("pipe:"):
            events.append((event, args))

    sys.addaudithook(hook)  # hooks stay for the process; this one records only inside this test
    files = photos(raw / "ava" / "images")
    for mode in MODES:
        source = pack(mode, files, tmp_path / mode)
        watching[0] = True
        try:
            report = run(tmp_path / f"home_{mode}", raw, acquisition=acquisition(mode), source=source, workers=1)
        finally:
            watching[0] = False
        assert report.accepted > 0
    assert events == []


def test_names_and_ids_of_members():
    assert member_id("AVA_dataset/image/123.jpg") == "123" and member_id("images\\0042.JPEG") == "42"
    assert member_id("images/123.png") is None and member_id("images/x123.jpg") is None
    assert [unsafe_name(n) for n in ("a/../b.jpg", "/b.jpg", "\\b.jpg", "C:b.jpg", "a/b..jpg", "a\0b")] == [
        True, True, True, True, False, True]


def test_a_damaged_7z_stream_fails_the_members_not_reached_with_the_error(tmp_path):
    files = _generated(tmp_path / "photos", 6)
    archive = write_7z(tmp_path / "a.7z", files)
    data = bytearray(archive.read_bytes())
    data[32 + 3000] ^= 0xFF  # inside the packed stream, which starts after the 32-byte signature header
    archive.write_bytes(bytes(data))
    got = _answers(seven_zip_sources(archive, [str(k) for k in range(1, 7)]))
    failed = [item for item in got.values() if isinstance(item, FetchFailure)]
    assert failed and all(f.reason.startswith(f"archive unreadable: {archive} stopped before this item: ")
                          for f in failed)
    assert all(item.data == files[int(i) - 1].read_bytes() for i, item in got.items() if isinstance(item, Source))


def test_without_py7zr_a_7z_source_says_how_to_extract_it(tmp_path, monkeypatch):
    archive = write_7z(tmp_path / "AVA.7z", _generated(tmp_path / "photos", 1))
    monkeypatch.setitem(sys.modules, "py7zr", None)  # what `import py7zr` meets where it is not installed
    with pytest.raises(ArchiveError, match=r"needs the py7zr package .* or extract it once with 7-Zip \(`7z x "):
        list(seven_zip_sources(archive, ["1"]))
