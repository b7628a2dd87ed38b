"""A full disk under AESTHETIC_HOME stops a stage with one clear error, leaves no temporary file and no
unrecorded crop, keeps the warehouse consistent, and a re-run after space is freed completes.

Two ways to fill the disk: a small tmpfs mounted for the test (needs root; skipped where mount is refused),
and, on every machine, ENOSPC injected at the OS-call boundary: `open` for writing returns files whose
write() raises OSError(ENOSPC) once a byte budget is spent, as the kernel does (DuckDB and Arrow write
through their own C++ files, as does anything handed the raw descriptor; those fill only on the tmpfs).
"""

from __future__ import annotations

import builtins
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import dagster as dg
import pytest

from assets.ava import AvaConfig, ava_images
from assets.shards import kuler_shards
from cli.main import main
from common.shard_format import INDEX_NAME
from ingest.ava import AvaSettings, ingest_ava
from ingest.crop_folder import lock_path
from ingest.crops import sha256_file
from ingest.kuler import KulerSettings, ingest_kuler
from ingest.paths import NoSpaceLeft, Paths
from ingest.sac import SacSettings, ingest_sac
from ingest.sample_data import SampleReport
from ingest.shards import ShardSettings, build_shards
from pipelines.resources import build_resources
from tests.helpers.shards import add_images, materialize_shards
from tests.helpers.tmpfs import mounted_tmpfs
from warehouse.db import connect


class _DiskBudget:
    """Bytes the injected disk still takes; None: unlimited (space freed)."""

    def __init__(self, left: int | None) -> None:
        self.left = left


class _FillingFile:
    """A real file whose write() fails like a full disk once the shared budget is spent: the part that fits is
    written, then OSError(ENOSPC) (a write() on an open file names no file, as the kernel's does not)."""

    def __init__(self, fh, budget: _DiskBudget) -> None:
        self._fh, self._budget = fh, budget

    def write(self, data) -> int:
        raw = data.encode() if isinstance(data, str) else memoryview(data).cast("B")
        if self._budget.left is not None and len(raw) > self._budget.left:
            fits = self._budget.left
            self._budget.left = 0
            if fits:
                self._fh.write(data[:fits])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if self._budget.left is not None:
            self._budget.left -= len(raw)
        return self._fh.write(data)

    def __getattr__(self, name: str):
        return getattr(self._fh, name)

    def __enter__(self) -> _FillingFile:
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> _DiskBudget:
    """The budget of every file this process opens for writing from now on (set `.left`; None frees the disk)."""
    budget = _DiskBudget(None)
    real_open = builtins.open

    def filling_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return _FillingFile(fh, budget) if any(m in mode for m in "wax+") else fh

    monkeypatch.setattr(builtins, "open", filling_open)
    return budget


def _copy_raw(sample_raw: SampleReport, tmp_path: Path, *datasets: str) -> Path:
    raw = tmp_path / "raw"
    for dataset in datasets:
        shutil.copytree(sample_raw.out / dataset, raw / dataset)
    return raw


def _temporaries(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.name.endswith(".tmp"))


def assert_consistent(home: Path, dataset: str) -> set[str]:
    """Every images row's crop exists with its recorded sha256 and has a histogram; no crop lacks a row.
    Returns the recorded image ids."""
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        rows = conn.execute("SELECT image_id, path, sha256 FROM images WHERE dataset = ?", [dataset]).fetchall()
        histograms = {i for (i,) in conn.execute("SELECT image_id FROM histograms WHERE dataset = ?",
                                                 [dataset]).fetchall()}
    for image_id, path, sha in rows:
        assert sha256_file(home / path) == sha, image_id
    assert {i for i, _, _ in rows} <= histograms
    crops = {p.name for p in (home / "images" / dataset).glob("*.jpg")}
    assert crops == {Path(p).name for _, p, _ in rows}, "crops on disk that no images row records"
    return {i for i, _, _ in rows}


def _lines(raw: Path) -> int:
    return sum(1 for line in (raw / "ava" / "AVA.txt").read_text().splitlines() if line.strip())


def _accounted(home: Path, dataset: str) -> int:
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        return conn.execute("SELECT (SELECT count(*) FROM images WHERE dataset = ?)"
                            " + (SELECT count(*) FROM rejects WHERE dataset = ?)", [dataset, dataset]).fetchone()[0]


# ----------------------------------------------------------------------------- injected ENOSPC, every machine


def test_a_full_disk_stops_ava_cleanly_and_a_rerun_after_freeing_space_completes(sample_raw, tmp_path, disk):
    raw, home = _copy_raw(sample_raw, tmp_path, "ava"), tmp_path / "home"
    paths, logged = Paths(home, raw), []
    settings = AvaSettings(workers=1, batch_size=2)  # inline crops: the injected disk is this process's
    crop_size = 40_000  # about one 256 px photo crop
    disk.left = 5 * crop_size
    with pytest.raises(NoSpaceLeft) as stopped:
        ingest_ava(paths, partial(connect, paths.warehouse), settings, log=logged.append)
    message = str(stopped.value)
    assert message.startswith(f"no space left on AESTHETIC_HOME ({paths.home}): ") and "\n" not in message
    assert f"No space left on device: '{paths.home / 'images' / 'ava'}" in message  # the file it was writing
    assert _temporaries(home) == []
    recorded = assert_consistent(home, "ava")
    assert recorded, "the batches written before the disk filled stay recorded"
    assert any("that no images row records (written by this run before it failed)" in line for line in logged)

    # Still full: the re-run fails the same way and leaves no more behind than the warehouse records.
    disk.left = 2 * crop_size
    with pytest.raises(NoSpaceLeft):
        ingest_ava(paths, partial(connect, paths.warehouse), settings)
    assert _temporaries(home) == [] and assert_consistent(home, "ava") >= recorded

    disk.left = None
    report = ingest_ava(paths, partial(connect, paths.warehouse), settings)
    assert report.accepted + report.rejected == report.lines_read == _lines(raw) == _accounted(home, "ava")
    assert len(assert_consistent(home, "ava")) == report.accepted and _temporaries(home) == []


def test_crops_a_killed_run_left_unrecorded_are_swept_by_the_next_run(sample_raw, tmp_path):
    raw, home = _copy_raw(sample_raw, tmp_path, "ava"), tmp_path / "home"
    paths = Paths(home, raw)
    ingest_ava(paths, partial(connect, paths.warehouse), AvaSettings(workers=1))
    folder = home / "images" / "ava"
    recorded = assert_consistent(home, "ava")
    # What a SIGKILL between cropping and recording leaves: crops without rows, a half-written temporary.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphans = [folder / "900001.jpg", folder / "900002.jpg", folder / f".900003.jpg.{dead.stdout.strip()}.tmp"]
    for orphan in orphans:
        shutil.copy(folder / f"{sorted(recorded)[0]}.jpg", orphan)

    # Another run holds the folder (a shared lock, as a writing run does): its crops look just like orphans,
    # so nothing is swept while it runs.
    import fcntl

    with open(lock_path(folder), "a") as other_run:
        fcntl.flock(other_run, fcntl.LOCK_SH)
        ingest_ava(paths, partial(connect, paths.warehouse), AvaSettings(workers=1))
        assert all(o.exists() for o in orphans)
    report = ingest_ava(paths, partial(connect, paths.warehouse), AvaSettings(workers=1))
    assert not any(o.exists() for o in orphans)
    assert report.cropped == 0 and assert_consistent(home, "ava") == recorded  # recorded crops untouched


def test_in_dagster_the_step_fails_with_the_full_disk_message(sample_raw, tmp_path, disk):
    raw, home = _copy_raw(sample_raw, tmp_path, "ava"), tmp_path / "home"
    disk.left = 100_000
    result = dg.materialize([ava_images], run_config=dg.RunConfig({"ava_images": AvaConfig(workers=1)}),
                            resources=build_resources(home=home, raw=raw), instance=dg.DagsterInstance.ephemeral(),
                            raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith(f"no space left on AESTHETIC_HOME ({home.resolve()}): ") and "\n" not in description
    assert description in failure.step_failure_data.error.message
    assert _temporaries(home) == [] and assert_consistent(home, "ava") == set()


def test_a_full_disk_stops_sac_and_kuler_cleanly_and_reruns_complete(sample_raw, tmp_path, disk):
    raw, home = _copy_raw(sample_raw, tmp_path, "sac", "kuler"), tmp_path / "home"
    paths = Paths(home, raw)
    stages = {"sac": partial(ingest_sac, settings=SacSettings(workers=1)),
              "kuler": partial(ingest_kuler, settings=KulerSettings())}
    for dataset, stage in stages.items():
        disk.left = 60_000
        with pytest.raises(NoSpaceLeft, match=rf"^no space left on AESTHETIC_HOME \({paths.home}\): "):
            stage(paths, partial(connect, paths.warehouse))
        assert _temporaries(home) == []
        assert_consistent(home, dataset)
        disk.left = None
        stage(paths, partial(connect, paths.warehouse))
        assert assert_consistent(home, dataset) and _temporaries(home) == []


def test_a_full_disk_stops_the_shards_with_the_old_index_intact_and_no_temporaries(home, disk):
    labels = add_images(home, "kuler", [str(i) for i in range(30)], seed=3)
    paths = Paths(home, home / "raw")
    settings = ShardSettings("kuler")
    assert materialize_shards(home, [kuler_shards], {"max_samples_per_shard": 4}).success
    indexes = {s: (home / "shards" / "kuler" / s / INDEX_NAME).read_bytes() for s in ("train", "val", "test")}
    from warehouse.labels import upsert_histograms

    with connect(home / "warehouse.duckdb") as conn:  # new labels: every shard must be written again
        upsert_histograms(conn, "kuler", [(i, [c + 1 for c in counts]) for i, (_, counts) in labels.items()])
    disk.left = 30_000
    with pytest.raises(NoSpaceLeft):
        build_shards(paths, partial(connect, paths.warehouse), settings)
    assert _temporaries(home) == []
    for split, before in indexes.items():  # the index was not replaced, and names only whole shards
        assert (home / "shards" / "kuler" / split / INDEX_NAME).read_bytes() == before
    disk.left = None
    report = build_shards(paths, partial(connect, paths.warehouse), settings)
    assert sum(r.n_samples for r in report.splits.values()) == len(labels) and _temporaries(home) == []


def test_the_cli_reports_a_full_disk_in_one_line(tmp_path, disk, capsys, monkeypatch) -> None:
    monkeypatch.setenv("AESTHETIC_HOME", str(tmp_path / "home"))
    disk.left = 500  # less than the Kuler .mat files need
    with pytest.raises(SystemExit) as stopped:
        main(["sample-data", "--out", str(tmp_path / "raw"), "--ava", "0", "--sac", "0", "--kuler", "5"])
    err = capsys.readouterr().err
    assert stopped.value.code == 1 and err.startswith("aesthetic: no space left on the device")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ----------------------------------------------------------------------------- a real small tmpfs


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs on tmp_path/disk, unmounted afterwards; skipped where mounting is not allowed."""
    with mounted_tmpfs(tmp_path / "disk", "24m") as mountpoint:
        yield mountpoint


def _fill(disk: Path, leave: int) -> Path:
    """Write a ballast file that leaves `leave` bytes free on disk."""
    ballast = disk / "ballast"
    free = shutil.disk_usage(disk).free
    with builtins.open(ballast, "wb") as fh:
        chunk = b"\0" * (1 << 20)
        todo = free - leave
        while todo > 0:
            fh.write(chunk[: min(len(chunk), todo)])
            todo -= len(chunk)
    return ballast


def test_on_a_small_tmpfs_every_stage_fails_cleanly_and_completes_once_space_is_freed(sample_raw, small_tmpfs):
    raw = _copy_raw(sample_raw, small_tmpfs.parent, "ava", "sac", "kuler")  # outside the small disk
    home = small_tmpfs / "home"
    paths = Paths(home, raw)
    with connect(paths.warehouse):
        pass  # the empty warehouse, migrated
    stages = {"ava": lambda p, c: ingest_ava(p, c, AvaSettings(workers=2, batch_size=4)),
              "sac": lambda p, c: ingest_sac(p, c, SacSettings(workers=2)),
              "kuler": lambda p, c: ingest_kuler(p, c, KulerSettings())}
    # Room for about 30 AVA crops: some batches are recorded before the crops, or DuckDB's log, fill it.
    ballast = _fill(small_tmpfs, 1_000_000)
    for dataset, stage in stages.items():
        for _attempt in range(2):  # a re-run on the still full disk must not leave more behind
            with pytest.raises(NoSpaceLeft, match=rf"^no space left on AESTHETIC_HOME \({paths.home}\): "):
                stage(paths, partial(connect, paths.warehouse))
            assert _temporaries(home) == []
            assert_consistent(home, dataset)
    ballast.unlink()
    for dataset, stage in stages.items():
        stage(paths, partial(connect, paths.warehouse))
        assert assert_consistent(home, dataset) and _temporaries(home) == []
    assert _accounted(home, "ava") == _lines(raw)

    # The shards: tars, Arrow sidecars and indexes on a disk that fills while they are written.
    ballast = _fill(small_tmpfs, 300_000)
    with pytest.raises(NoSpaceLeft, match=rf"^no space left on AESTHETIC_HOME \({paths.home}\): "):
        build_shards(paths, partial(connect, paths.warehouse), ShardSettings("ava"))
    assert _temporaries(home) == []
    ballast.unlink()
    report = build_shards(paths, partial(connect, paths.warehouse), ShardSettings("ava"))
    assert sum(r.n_samples for r in report.splits.values()) == len(assert_consistent(home, "ava"))
    assert _temporaries(home) == []
