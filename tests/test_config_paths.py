"""A name from a config (or a record) that must stay inside a folder is resolved, links included, and refused in one
line naming the value and the folder when it leaves it (common/regular_files.under_root). The file it points at
is never opened, so nothing of it reaches an error, a reject or the event log. Documented absolute sources (an
archive anywhere) stay allowed but must be regular files."""

from __future__ import annotations

import os
import shutil
from functools import partial
from pathlib import Path

import dagster as dg
import pytest

from assets.ava import ava_images
from common.regular_files import OutsideRoot, under_root
from ingest.ava import AvaSettings, ListFileError, ingest_ava, read_id_list
from ingest.paths import Paths
from ingest.sample_data import SampleReport, write_sample_data
from pipelines.resources import build_resources
from warehouse.db import connect

SECRET = "root:x:0:0:SECRET-FIRST-LINE:/root:/bin/bash"


@pytest.fixture
def raw(sample_raw: SampleReport, tmp_path: Path) -> Path:
    out = tmp_path / "raw"
    shutil.copytree(sample_raw.out / "ava", out / "ava")
    return out


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside the drop that no config may make the pipeline read."""
    path = tmp_path / "etc" / "passwd"
    path.parent.mkdir()
    path.write_text(SECRET + "\n")
    return path


def _run_ava(home: Path, raw: Path, **config) -> tuple[dg.ExecuteInJobResult, str]:
    """Materialise ava_images without raising; the run's result and every line of its event log as text."""
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([ava_images], resources=build_resources(home=home, raw=raw), instance=instance,
                            run_config={"ops": {"ava_images": {"config": config}}}, raise_on_error=False)
    log = "\n".join(f"{r.user_message}\n{r.dagster_event}" for r in instance.all_logs(result.run_id))
    return result, log


def _failure(result: dg.ExecuteInJobResult) -> str:
    (event,) = [e for e in result.all_events if e.is_step_failure]
    return event.step_failure_data.user_failure_data.description


def test_under_root_keeps_names_inside_their_folder_and_follows_links(tmp_path: Path, secret: Path):
    root = tmp_path / "lists"
    root.mkdir()
    (root / "a.jpgl").write_text("1\n")
    (root / "inside").symlink_to(root / "a.jpgl")
    (root / "outside").symlink_to(secret)
    assert under_root(root, "a.jpgl", "test_list") == (root / "a.jpgl").resolve()
    assert under_root(root, "inside", "test_list") == (root / "a.jpgl").resolve()
    for name in ("../etc/passwd", str(secret), "outside", "../../../../etc/passwd", ".", "", "a\0b"):
        with pytest.raises(OutsideRoot) as refused:
            under_root(root, name, "test_list")
        message = str(refused.value)
        assert message.startswith(f"test_list {name!r} resolves outside {root}") and "\n" not in message


@pytest.mark.parametrize("how", ["climbing", "absolute", "link"])
def test_a_test_list_outside_the_lists_folder_fails_in_one_line_before_any_work(how, raw, secret, tmp_path):
    lists = raw / "ava" / "aesthetics_image_lists"
    value = {"climbing": os.path.relpath(secret, lists), "absolute": str(secret), "link": "passwd.jpgl"}[how]
    if how == "link":
        (lists / value).symlink_to(secret)
    home = tmp_path / "home"
    home.mkdir()
    result, log = _run_ava(home, raw, test_list=value, workers=1)
    assert not result.success
    assert _failure(result) == f"ava: test_list {value!r} resolves outside {lists.resolve()}"
    assert SECRET not in log and "SECRET" not in log  # neither the file's line nor any of it
    assert list(home.iterdir()) == []  # no warehouse, no crops


def test_a_train_list_outside_the_lists_folder_is_refused_the_same_way(raw, secret, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    result, log = _run_ava(home, raw, train_list="../../../etc/passwd", workers=1)
    assert _failure(result).startswith("ava: train_list '../../../etc/passwd' resolves outside ")
    assert "SECRET" not in log and list(home.iterdir()) == []


def test_a_list_inside_its_folder_that_is_not_a_list_is_named_without_its_content(tmp_path: Path):
    path = tmp_path / "odd.jpgl"
    path.write_text(f"12\n{SECRET}\n")
    with pytest.raises(ListFileError) as refused:
        read_id_list(path)
    assert str(refused.value) == f"{path}:2: not an image id (a list holds one id a line)"
    path.write_bytes(b"12\n\xff" + SECRET.encode() + b"\n")
    with pytest.raises(ListFileError) as refused:
        read_id_list(path)
    assert "SECRET" not in str(refused.value)


def test_a_list_that_is_a_folder_fails_in_one_line_through_the_asset(raw, tmp_path):
    (raw / "ava" / "aesthetics_image_lists" / "folder.jpgl").mkdir()
    result, _ = _run_ava(tmp_path / "home", raw, test_list="folder.jpgl", workers=1)
    assert _failure(result).startswith("ava: AVA image list not a regular file: ") and "is a directory" in _failure(
        result)


def test_tags_linked_out_of_the_drop_are_a_reject_that_names_the_file_not_its_content(tmp_path: Path, secret: Path):
    raw, home = tmp_path / "raw", tmp_path / "home"
    write_sample_data(raw, ava=8, sac=0, kuler=0, seed=2)
    (raw / "ava" / "tags.txt").unlink()
    (raw / "ava" / "tags.txt").symlink_to(secret)
    report = ingest_ava(Paths(home, raw), partial(connect, home / "warehouse.duckdb"), AvaSettings(workers=1))
    assert report.accepted == 8 and report.tags == 0 and report.bad_name_lines == 1
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        rows = conn.execute("SELECT item_id, stage, reason FROM rejects WHERE dataset = 'ava'").fetchall()
        tags = conn.execute("SELECT count(*) FROM ava_tags").fetchone()
    assert rows == [("tags.txt", "names", f"unsafe path: 'tags.txt' resolves outside {(raw / 'ava').resolve()}")]
    assert tags == (0,)


def test_an_archive_anywhere_is_allowed_but_must_be_a_regular_file(raw, tmp_path):
    folder = tmp_path / "not-an-archive.zip"
    folder.mkdir()
    result, _ = _run_ava(tmp_path / "home", raw, acquisition="zip", source=str(folder), workers=1)
    assert _failure(result) == f"ava: zip archive unreadable: not a regular file: {folder} is a directory"
