"""A warehouse file that is not a readable DuckDB database (garbage bytes, a cut-off copy of a real one): every
caller gets one line naming the file and what to do (warehouse/db.py), a Dagster step fails with it, `aesthetic
score` exits 1 with it and no traceback, and the file is left as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from assets.kuler import kuler_images
from ingest.kuler import KulerSettings, ingest_kuler
from ingest.paths import Paths
from ingest.sample_data import SampleReport
from pipelines.resources import build_resources
from warehouse.db import WarehouseUnreadable, connect

ROOT = Path(__file__).resolve().parents[1]
LINE = "is not a readable DuckDB database ("
ADVICE = "restore it from a backup, or, for a demo home, run `make clean`"


@pytest.fixture(params=["garbage", "truncated"])
def damaged(request, sample_raw: SampleReport, tmp_path: Path) -> Path:
    """An AESTHETIC_HOME whose warehouse.duckdb is random bytes, or the first half of a real warehouse."""
    home = tmp_path / "home"
    warehouse = Paths(home, sample_raw.out).warehouse
    if request.param == "garbage":
        home.mkdir()
        warehouse.write_bytes(np.random.default_rng(0).bytes(256 * 1024))
    else:
        ingest_kuler(Paths(home, sample_raw.out), lambda: connect(warehouse), KulerSettings())
        data = warehouse.read_bytes()
        warehouse.write_bytes(data[: len(data) // 2])
    return home


def _one_line(message: str, warehouse: Path) -> None:
    assert "\n" not in message
    assert f"warehouse {warehouse} {LINE}" in message and ADVICE in message


def test_opening_a_damaged_warehouse_raises_one_line_naming_it_and_leaves_it_alone(damaged: Path):
    warehouse = damaged / "warehouse.duckdb"
    before = warehouse.read_bytes()
    for read_only in (True, False):
        with pytest.raises(WarehouseUnreadable) as info, connect(warehouse, read_only=read_only):
            pass
        _one_line(str(info.value), warehouse)
    assert warehouse.read_bytes() == before


def test_a_step_over_a_damaged_warehouse_fails_with_that_line(damaged: Path, sample_raw: SampleReport):
    warehouse = damaged / "warehouse.duckdb"
    before = warehouse.read_bytes()
    result = dg.materialize([kuler_images], resources=build_resources(home=damaged, raw=sample_raw.out),
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    _one_line(failure.step_failure_data.user_failure_data.description, warehouse)
    assert warehouse.read_bytes() == before


def test_aesthetic_score_over_a_damaged_warehouse_exits_1_with_that_line_and_no_traceback(damaged: Path,
                                                                                          tmp_path: Path):
    picture = tmp_path / "a.png"
    Image.new("RGB", (64, 64), (120, 30, 200)).save(picture)
    done = subprocess.run([sys.executable, "-m", "cli", "score", str(picture)], cwd=ROOT,
                          env={**os.environ, "AESTHETIC_HOME": str(damaged), "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stdout == ""
    assert "Traceback" not in done.stderr and done.stderr.startswith("aesthetic: warehouse ")
    _one_line(done.stderr.rstrip("\n"), damaged / "warehouse.duckdb")
