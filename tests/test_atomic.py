"""One helper writes files whole or not at all, and it is the only code that renames a file into place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from common.atomic import atomic_path, publish, temp_path, write_atomic

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("assets", "pipelines", "cli", "ingest", "nima_train", "warehouse", "critic", "common", "benchmarks")


def _one_target(call: ast.Call) -> bool:
    """Called as Path.replace is: one positional argument, or the keyword `target` alone."""
    if call.keywords:
        return not call.args and [k.arg for k in call.keywords] == ["target"]
    return len(call.args) == 1


def _renames(tree: ast.AST) -> list[int]:
    """Lines calling os.replace / os.rename, x.rename(...), or x.replace(one argument): Path.replace takes one
    argument (`target`) where str.replace takes two and datetime.replace only keywords such as tzinfo=, so
    neither is counted."""
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name, owner = node.func.attr, node.func.value
        if name == "rename" or (name == "replace" and (
                (isinstance(owner, ast.Name) and owner.id == "os") or _one_target(node))):
            lines.append(node.lineno)
    return lines


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    dest = tmp_path / "deep" / "file.bin"
    write_atomic(dest, b"first")
    write_atomic(dest, b"second", fsync=True)
    assert dest.read_bytes() == b"second"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_publish_moves_a_temporary_named_after_another_file(tmp_path):
    tmp = temp_path(tmp_path / "shard.tar")
    assert tmp.parent == tmp_path and tmp.name.startswith(".shard.tar.") and tmp.name.endswith(".tmp")
    tmp.write_bytes(b"tar")
    publish(tmp, tmp_path / "shard-abc.tar", fsync=True)
    assert [p.name for p in tmp_path.iterdir()] == ["shard-abc.tar"]


def test_no_other_module_renames_a_file_into_place():
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "common" / "atomic.py":
                continue
            source = path.read_text()
            lines = source.splitlines()
            offenders += [f"{path.relative_to(ROOT)}:{n}: {lines[n - 1].strip()}" for n in _renames(ast.parse(source))]
    assert not offenders, "use common.atomic instead:\n" + "\n".join(offenders)
