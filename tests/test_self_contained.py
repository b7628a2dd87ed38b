"""The repository explains itself: no file it holds points a reader at a document that lives outside it
(docs/architecture.md, "Where the rest lives")."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Built from pieces, so that this file does not name them itself.
OUTSIDE = ("shared" + "/", "DESIGN" + ".md")


def _project_files() -> list[Path]:
    """Tracked files, and new ones not ignored: what a commit of this checkout would hold."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout of the project to list its files")
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def test_no_file_names_a_document_outside_the_repository():
    files = _project_files()
    assert len(files) > 100, f"only {len(files)} files listed: the listing itself is broken"
    hits = []
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        hits += [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for number, line in enumerate(text.splitlines(), 1) if any(word in line for word in OUTSIDE)]
    assert not hits, "point to docs/contract.md or docs/architecture.md instead:\n" + "\n".join(hits)
