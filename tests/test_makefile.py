"""`make test` brings in what its tests need: the browser step installs Chromium or says in one line what to do."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")


def _bin_dir(tmp_path: Path, uid: int, tools: tuple[str, ...]) -> Path:
    """A PATH holding only a stub `id` (reporting uid) and stub executables named after tools."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {"id": f"#!/bin/sh\necho {uid}\n", **{tool: "#!/bin/sh\nexit 0\n" for tool in tools}}
    for name, body in stubs.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _make_browser(bin_dir: Path) -> subprocess.CompletedProcess:
    # A make of its own, not a sub-make of `make test` (whose MAKELEVEL and MAKEFLAGS it would inherit).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    env["PATH"] = str(bin_dir)
    return subprocess.run([MAKE, "-s", "browser"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_browser_step_stops_with_one_line_when_it_cannot_install(tmp_path):
    done = _make_browser(_bin_dir(tmp_path, uid=1000, tools=()))  # not root, no apt-get, no chromium
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and "apt-get install chromium chromium-driver" in lines[0], done.stderr
    assert lines[1].startswith("make: ***")  # make's own line saying the target failed


def test_browser_step_does_nothing_when_chromium_and_its_driver_are_there(tmp_path):
    done = _make_browser(_bin_dir(tmp_path, uid=1000, tools=("chromium", "chromedriver")))
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_make_test_runs_the_browser_step_before_pytest():
    plan = subprocess.run([MAKE, "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert plan.index("chromium-driver") < plan.index("pytest")


def _make_postgres(bin_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    env["PATH"] = str(bin_dir)
    return subprocess.run([MAKE, "-s", "postgres", f"PG_BIN_GLOB={bin_dir}/none/*"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_postgres_step_stops_with_one_line_when_it_cannot_install(tmp_path):
    done = _make_postgres(_bin_dir(tmp_path, uid=1000, tools=()))  # not root, no apt-get, no PostgreSQL
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and "apt-get install postgresql" in lines[0], done.stderr
    assert lines[1].startswith("make: ***")


def test_postgres_step_does_nothing_when_the_server_is_there(tmp_path):
    done = _make_postgres(_bin_dir(tmp_path, uid=1000, tools=("initdb",)))
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_make_test_installs_postgresql_before_pytest():
    plan = subprocess.run([MAKE, "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert plan.index("apt-get install -y -qq postgresql") < plan.index("pytest")
