"""`make demo` at a tiny size, end to end, exactly as a user runs it on a fresh checkout."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.helpers.dagster_services import ROOT
from warehouse.db import connect

pytestmark = pytest.mark.slow


def test_make_demo_writes_sample_data_runs_the_graph_and_prints_the_summary(tmp_path):
    home = tmp_path / "aesthetic"
    env = {k: v for k, v in os.environ.items() if k not in ("AESTHETIC_RAW", "DAGSTER_HOME")}
    env["AESTHETIC_HOME"] = str(home)
    proc = subprocess.run(
        ["make", "demo", "DEMO_ARGS=--ava 48 --sac 30 --kuler 40"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "sample data written to" in out
    assert "full_pipeline run" in out and "succeeded" in out
    for section in ["warehouse rows:", "rejects by reason:", "shards:", "evaluation:"]:
        assert section in out
    assert "make ui" in out and "http://127.0.0.1:3000" in out
    assert (home / "dagster" / "dagster.yaml").exists()
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        kinds = {r[0] for r in conn.execute("SELECT DISTINCT dataset FROM rejects").fetchall()}
        alias = conn.execute("SELECT version FROM model_aliases WHERE alias = 'production'").fetchone()
    assert kinds == {"ava", "sac", "kuler"}, "planted faults must end as rejects in every dataset"
    assert alias is not None
