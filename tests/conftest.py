"""Shared fixtures: small raw drops in the real formats, written once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.sample_data import SampleReport, write_sample_data

# `make test` runs the suite in several pytest-xdist workers: each gets its own folder under the homes the
# environment names (CI exports one AESTHETIC_HOME), so two tests at once never share a warehouse or an instance.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:
    for _var in ("AESTHETIC_HOME", "AESTHETIC_RAW", "DAGSTER_HOME"):
        if os.environ.get(_var):
            os.environ[_var] = str(Path(os.environ[_var]) / _WORKER)


@pytest.fixture(scope="session")
def sample_raw(tmp_path_factory: pytest.TempPathFactory) -> SampleReport:
    """AVA, SAC and Kuler drops with planted faults; treat as read-only (copy before changing)."""
    out = tmp_path_factory.mktemp("raw")
    return write_sample_data(out, ava=40, sac=24, kuler=40, seed=7, faults=True)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty AESTHETIC_HOME for one test."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow end-to-end modules first (the order is otherwise kept): under `make test`'s workers they start at
    once and the quick modules fill in beside them, instead of one of them running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
