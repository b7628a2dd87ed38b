"""The SAC inbox sensor takes a snapshot only once it is whole: its SQLite header's page count x page size equals
its size, or its size and mtime held across two ticks (pipelines/sensors.py). Real SQLite files, a real instance,
Dagster's own sensor context; the ticks are explicit evaluations, so nothing depends on timing."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from ingest.sac import read_snapshot
from ingest.sample_data import SAC_DB_NAME, write_sample_data
from ingest.sqlite_files import whole_by_header
from pipelines.resources import build_resources


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    out = tmp_path / "raw"
    write_sample_data(out, ava=0, sac=10, kuler=0, seed=2, faults=True)
    (out / "sac" / "inbox").mkdir()
    return out


class Ticks:
    """Successive evaluations of the sensor, each with the cursor the previous one returned."""

    def __init__(self, raw: Path, home: Path) -> None:
        self.raw, self.home, self.cursor = raw, home, None
        self.instance = dg.DagsterInstance.ephemeral()

    def tick(self) -> list[str]:
        from pipelines.sensors import sac_inbox_sensor

        ctx = dg.build_sensor_context(instance=self.instance, cursor=self.cursor,
                                      resources=build_resources(self.home, self.raw))
        result = sac_inbox_sensor(ctx)
        self.cursor = result.cursor
        for request in result.dynamic_partitions_requests:  # what the daemon does with them
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return [r.partition_key for r in result.run_requests]


def test_a_snapshot_that_grows_between_ticks_gives_no_run_until_it_is_whole(raw: Path, tmp_path: Path):
    whole = (raw / "sac" / SAC_DB_NAME).read_bytes()
    assert len(whole) >= 3 * 4096
    copy = raw / "sac" / "inbox" / "sac_2022_07_01.sqlite"
    ticks = Ticks(raw, tmp_path / "home")
    copy.write_bytes(whole[:4096])  # a copy under its final name, a page so far
    assert ticks.tick() == []
    with copy.open("ab") as fh:
        fh.write(whole[4096:8192])
    assert ticks.tick() == []  # it grew since the last tick and its header says it is not whole yet
    with copy.open("ab") as fh:
        fh.write(whole[8192:])
    key = read_snapshot(copy).key
    assert ticks.tick() == [key]  # whole by its header: taken at once, one partition and one run
    assert ticks.tick() == []
    assert ticks.instance.get_dynamic_partitions("sac_snapshots") == [key]


def test_a_file_its_header_cannot_vouch_for_is_taken_once_unchanged_across_two_ticks(raw: Path, tmp_path: Path):
    odd = raw / "sac" / "inbox" / "odd.sqlite"
    odd.write_bytes((raw / "sac" / SAC_DB_NAME).read_bytes() + b"\0" * 16)  # longer than its pages
    assert not whole_by_header(odd)
    ticks = Ticks(raw, tmp_path / "home")
    assert ticks.tick() == []
    assert ticks.tick() == [read_snapshot(odd).key]
    assert ticks.tick() == []


def test_a_stalled_partial_copy_is_hashed_only_when_it_stops_changing(raw: Path, tmp_path: Path):
    whole = (raw / "sac" / SAC_DB_NAME).read_bytes()
    copy = raw / "sac" / "inbox" / "slow.sqlite"
    ticks = Ticks(raw, tmp_path / "home")
    runs = []
    for end in (4096, 8192, 8192 + 100):
        with copy.open("ab") as fh:
            fh.write(whole[copy.stat().st_size if copy.exists() else 0:end])
        runs.append(ticks.tick())
    assert runs == [[], [], []]
    assert ticks.tick() == [read_snapshot(copy).key]  # unchanged since the last tick: one run, the stage judges it


def test_whole_by_header_reads_the_page_count_only_when_the_header_vouches_for_it(raw: Path, tmp_path: Path):
    data = (raw / "sac" / SAC_DB_NAME).read_bytes()
    cases = {"whole": data, "cut": data[:-4096], "longer": data + b"\0" * 4096, "text": b"not a database\n" * 20,
             "stale count": data[:92] + bytes(4) + data[96:]}  # version-valid-for no longer matches the counter
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    assert {name: whole_by_header(tmp_path / name) for name in cases} == {
        "whole": True, "cut": False, "longer": False, "text": False, "stale count": False}
    assert not whole_by_header(tmp_path / "absent")
