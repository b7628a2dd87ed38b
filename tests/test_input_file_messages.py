"""Damaged or unusual input files get messages that name the file and the fault: SAC files that are not SQLite or
are truncated, text lists with a BOM or in UTF-16 or Latin-1, tar members that are links. Real files throughout:
SQLite databases written with sqlite3, a real DuckDB warehouse, real tar archives."""

from __future__ import annotations

import io
import shutil
import tarfile
from functools import partial
from pathlib import Path

import pytest

from ingest.ava import AvaSettings, ingest_ava, parse_ava_txt, parse_names, read_id_list
from ingest.fetch import FetchFailure, Source, tar_sources
from ingest.paths import Paths
from ingest.sac import SacSettings, ingest_sac, ingest_snapshot, read_snapshot
from ingest.sample_data import SAC_DB_NAME, write_sample_data
from ingest.sqlite_files import SqliteFileError, check_sqlite_file
from tests.helpers.special_files import plant
from warehouse.db import connect


def _query(home: Path, sql: str, params: list | None = None) -> list[tuple]:
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()


# ------------------------------------------------------------------------------------------------------------- SAC


@pytest.fixture(scope="module")
def sac_drop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("sac") / "raw"
    write_sample_data(raw, ava=0, sac=8, kuler=0, seed=6)
    return raw


def _bad_copies(good: Path, folder: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {
        "text": b"id,path\n1,a.png\n" * 40,
        "empty": b"",
        "half": data[: len(data) // 2],
        "header_cut": data[:50],
        # Header and length intact, the schema page overwritten: only DuckDB's sqlite scanner can tell.
        "garbage_pages": data[:100] + b"\xab" * 3996 + data[4096:],
    }
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, content in files.items():
        (folder / f"{name}.sqlite").write_bytes(content)
        out[name] = folder / f"{name}.sqlite"
    return out


def test_sac_files_that_are_not_sqlite_or_are_truncated_are_named_with_the_fault(sac_drop: Path, tmp_path: Path):
    bad = _bad_copies(sac_drop / "sac" / SAC_DB_NAME, tmp_path / "bad")
    check_sqlite_file(sac_drop / "sac" / SAC_DB_NAME)  # the real file passes
    expected = {
        "text": "not a SQLite database (it does not start with 'SQLite format 3')",
        "empty": "not a SQLite database (the file is empty)",
        "half": "truncated SQLite database (",
        "header_cut": "truncated SQLite database (50 bytes, shorter than its 100-byte header)",
    }
    home = tmp_path / "home"
    for name, fault in expected.items():
        with pytest.raises(SqliteFileError) as failed:
            ingest_snapshot(Paths(home, sac_drop), partial(connect, home / "warehouse.duckdb"),
                            SacSettings(workers=1), read_snapshot(bad[name]))
        assert str(failed.value).startswith(f"{bad[name].resolve()}: {fault}"), str(failed.value)
        assert "\n" not in str(failed.value)
    with pytest.raises(SqliteFileError, match=r"its header says \d+ pages of 4096 bytes"):
        check_sqlite_file(bad["half"])


def test_a_duckdb_error_reading_a_snapshot_names_the_file(sac_drop: Path, tmp_path: Path):
    bad = _bad_copies(sac_drop / "sac" / SAC_DB_NAME, tmp_path / "bad")["garbage_pages"]
    check_sqlite_file(bad)  # the header cannot tell
    home = tmp_path / "home"
    with pytest.raises(SqliteFileError, match=r"garbage_pages\.sqlite: reading this SAC snapshot failed: .*malformed"):
        ingest_snapshot(Paths(home, sac_drop), partial(connect, home / "warehouse.duckdb"), SacSettings(workers=1),
                        read_snapshot(bad))


def test_one_bad_sac_file_of_several_is_skipped_and_named_the_others_are_merged(sac_drop: Path, tmp_path: Path):
    raw = tmp_path / "raw"
    shutil.copytree(sac_drop, raw)
    (raw / "sac" / "zz_notes.sqlite").write_text("not a database\n")
    home = tmp_path / "home"
    report = ingest_sac(Paths(home, raw), partial(connect, home / "warehouse.duckdb"), SacSettings(workers=1))
    assert len(report.snapshots) == 1 and report.snapshots[0].images_added == 8
    (where, why), = report.unreadable.items()
    assert where.endswith("zz_notes.sqlite") and "not a SQLite database" in why
    assert _query(home, "SELECT count(*) FROM histograms WHERE dataset = 'sac'") == [(8,)]

    (raw / "sac" / SAC_DB_NAME).unlink()  # only the bad file left: the stage fails, naming it
    with pytest.raises(SqliteFileError, match=r"zz_notes\.sqlite: not a SQLite database"):
        ingest_sac(Paths(home, raw), partial(connect, home / "warehouse.duckdb"), SacSettings(workers=1))


# ------------------------------------------------------------------------------------------------------- text lists


AVA_LINES = "1 953619 0 1 2 5 9 12 7 3 1 0 4 0 1396\n2 953958 1 1 1 1 1 1 1 1 1 1 0 0 1396\n"


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be-bom"])
def test_ava_txt_with_a_bom_or_in_utf16_parses_every_line(tmp_path: Path, encoding: str):
    path = tmp_path / "AVA.txt"
    if encoding == "utf-16-be-bom":
        path.write_bytes(b"\xfe\xff" + AVA_LINES.encode("utf-16-be"))
    else:
        path.write_bytes(AVA_LINES.encode(encoding))
    parsed = parse_ava_txt(path)
    assert parsed.rejects == [] and [r.image_id for r in parsed.rows] == ["953619", "953958"]


def test_names_files_are_decoded_by_their_bom(tmp_path: Path):
    names = "1396 Green Things II\n1401 Café Crème\n1402 Smörgåsbord\n"
    for file, data in (("utf8.txt", names.encode("utf-8-sig")), ("le.txt", names.encode("utf-16")),
                       ("be.txt", b"\xfe\xff" + names.encode("utf-16-be"))):
        (tmp_path / file).write_bytes(data)
        rows, rejects = parse_names(tmp_path / file)
        assert rows == [(1396, "Green Things II"), (1401, "Café Crème"), (1402, "Smörgåsbord")] and rejects == []


def test_a_latin1_line_is_a_reject_with_file_line_and_bytes_and_the_other_lines_are_read(tmp_path: Path):
    path = tmp_path / "tags.txt"
    path.write_bytes(b"1 Abstract\n2 Caf\xe9\n3 Nature\n")
    rows, rejects = parse_names(path)
    assert rows == [(1, "Abstract"), (3, "Nature")]
    (reject,) = rejects
    assert (reject.item_id, reject.stage) == ("tags.txt:line:2", "names")
    assert reject.reason == "undecodable: tags.txt line 2 is not UTF-8 text: b'2 Caf\\xe9'"


def test_id_lists_with_a_bom_are_read(tmp_path: Path):
    path = tmp_path / "generic_test.jpgl"
    path.write_bytes("953619\r\n953958\r\n".encode("utf-8-sig"))
    assert read_id_list(path) == {"953619", "953958"}


def test_ava_stage_reads_bom_and_utf16_lists_and_files_undecodable_name_lines_as_rejects(tmp_path: Path):
    raw, home = tmp_path / "raw", tmp_path / "home"
    write_sample_data(raw, ava=8, sac=0, kuler=0, seed=2)
    ava = raw / "ava"
    ava_txt = (ava / "AVA.txt").read_text()
    (ava / "AVA.txt").write_bytes(ava_txt.encode("utf-8-sig"))
    (ava / "challenges.txt").write_bytes("1396 Green Things II\n1397 Café\n".encode("utf-16"))
    (ava / "tags.txt").write_bytes(b"1 Abstract\n2 Caf\xe9\n")  # Latin-1
    run = partial(ingest_ava, Paths(home, raw), partial(connect, home / "warehouse.duckdb"), AvaSettings(workers=1))
    report = run()
    assert report.lines_read == 8 and report.accepted == 8 and report.rejected == 0  # line 1 is not "not ASCII"
    assert report.bad_name_lines == 1
    assert _query(home, "SELECT * FROM ava_challenges ORDER BY 1") == [(1396, "Green Things II"), (1397, "Café")]
    assert _query(home, "SELECT * FROM ava_tags") == [(1, "Abstract")]
    assert _query(home, "SELECT item_id, stage, reason FROM rejects WHERE dataset = 'ava'") == [
        ("tags.txt:line:2", "names", "undecodable: tags.txt line 2 is not UTF-8 text: b'2 Caf\\xe9'")]

    (ava / "tags.txt").write_text("1 Abstract\n2 Café\n")  # fixed: the reject goes, the name comes
    run()
    assert _query(home, "SELECT count(*) FROM rejects WHERE dataset = 'ava'") == [(0,)]
    assert _query(home, "SELECT * FROM ava_tags ORDER BY 1") == [(1, "Abstract"), (2, "Café")]


# ------------------------------------------------------------------------------------------------------ tar members


def _jpeg() -> bytes:
    from tests.helpers.shards import source_jpeg

    return source_jpeg(1)


def test_tar_link_members_are_rejected_as_links_not_missing(tmp_path: Path):
    archive = tmp_path / "ava.tar"
    with tarfile.open(archive, "w") as tar:
        data = _jpeg()
        info = tarfile.TarInfo("images/10.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for name, kind in (("images/11.jpg", tarfile.SYMTYPE), ("images/12.jpg", tarfile.LNKTYPE)):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = kind, "images/10.jpg" if kind == tarfile.LNKTYPE else "/etc/passwd"
            tar.addfile(link)
        folder = tarfile.TarInfo("images/13.jpg")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
    out = {r.item_id: r for r in tar_sources(archive, ["10", "11", "12", "13", "14"])}
    assert isinstance(out["10"], Source) and out["10"].data == data
    assert out["11"].reason == (f"link: member images/11.jpg in {archive} is a symbolic link to '/etc/passwd'; "
                                "links are not followed")
    assert out["12"].reason == (f"link: member images/12.jpg in {archive} is a hard link to 'images/10.jpg'; "
                                "links are not followed")
    assert out["13"].reason == f"not a regular file: member images/13.jpg in {archive} is a directory"
    assert out["14"].reason.startswith("missing: no member 14.jpg")


def test_a_tar_archive_that_is_a_fifo_fails_its_items_with_the_reason_without_blocking(tmp_path: Path):
    with plant({"fifo": tmp_path / "ava.tar"}) as planted:
        out = list(tar_sources(planted.path("fifo"), ["1", "2"]))
    assert all(isinstance(r, FetchFailure) for r in out) and len(out) == 2
    assert all("not a regular file:" in r.reason and "FIFO" in r.reason for r in out)
