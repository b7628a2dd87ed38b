"""What a curate run may do to its output folder: hold it alone, and replace or delete only what curate wrote there.

- One run at a time: a run holds an exclusive flock on DIR/curate.lock (the file records the holder) from before
  it scores until it ends; a second run fails at once, naming the folder and the holder. Under torchrun rank 0
  holds it, and every rank learns its verdict before any work.
- Ownership: the manifest's metadata lists ("owns") the files of DIR/shards/ that curate wrote (index.json and
  the kept tars). A run replaces or deletes only those; any other file there is left alone, and a run that would
  have to replace one, or an input shard lying there, is refused with one line before any work.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from common.shard_format import INDEX_NAME
from nima_train.distributed import DistInfo, all_gather_strings
from nima_train.tarstream import local_file

LOCK_NAME = "curate.lock"
MANIFEST_NAME = "manifest.parquet"
SHARDS_DIR = "shards"


class OutputConflict(RuntimeError):
    """The output folder is held by another run, or this run would replace or delete a file it must not."""


@contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """Hold out_dir alone while the block runs (an exclusive flock on out_dir/curate.lock, not waited for).

    OutputConflict names the folder and the holder. The lock file stays (deleting it would let a run that opened
    it just before lock a file no one else sees); it is curate's own file. flock rather than fcntl record locks:
    a second open of the file in the same process conflicts too, and DataLoader workers forked while the lock is
    held do not hold it past an explicit unlock.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_NAME
    with open(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = fh.read().strip() or "it has not recorded itself yet"
            raise OutputConflict(f"{out_dir} is in use by another curate run ({holder}); wait for it to end or "
                                 f"choose another --out") from None
        fh.truncate(0)
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def owned_files(out_dir: Path) -> set[str]:
    """The names in out_dir/shards/ that curate wrote, from the manifest's metadata (none without a manifest).

    OutputConflict when out_dir holds a manifest.parquet that curate did not write, or one without the list (from
    before 0.1's redesign: what it owns is not recorded, docs/operating.md).
    """
    manifest = out_dir / MANIFEST_NAME
    if not manifest.exists():
        return set()
    try:
        meta = json.loads((pq.read_schema(manifest).metadata or {})[b"curation"])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        raise OutputConflict(f"{manifest} exists and was not written by curate (no curation metadata); move it "
                             f"away or choose another --out") from None
    if "owns" not in meta:
        raise OutputConflict(f"{manifest} was written by a curate from before 0.1's redesign and does not list the "
                             f"files it owns; choose a new --out or remove {out_dir}")
    return set(meta["owns"])


def refuse_unowned(folder: Path, names: Iterable[str], owned: set[str]) -> None:
    """OutputConflict naming the first of names that exists in folder and is not curate's to replace."""
    for name in sorted(set(names) - owned):
        if os.path.lexists(folder / name):
            raise OutputConflict(f"{folder / name} exists and was not written by curate into {folder.parent} (its "
                                 f"manifest does not list it); move it away or choose another --out")


def _input_paths(refs: Sequence[str], urls: Iterable[str]) -> set[Path]:
    """The local files this run reads: its shards, and the index.json of each folder or index given."""
    paths = {Path(p).resolve() for p in map(local_file, urls) if p is not None}
    for ref in map(str, refs):
        path = Path(ref)
        if "://" in ref or ref.startswith("pipe:") or not path.exists():
            continue
        paths.add((path / INDEX_NAME if path.is_dir() else path).resolve())
    return paths


def check_outputs(out_dir: Path, refs: Sequence[str], urls: Sequence[str], output_names: Iterable[str]) -> None:
    """Refuse (OutputConflict, one line) a run that would replace or delete a file curate did not write, or one of
    its own inputs; output_names: every tar the run may write in out_dir/shards/."""
    owned = owned_files(out_dir)
    folder = out_dir / SHARDS_DIR
    touched = owned | set(output_names) | {INDEX_NAME}
    resolved = folder.resolve()
    for path in sorted(_input_paths(refs, urls)):
        if path.parent == resolved and path.name in touched:
            raise OutputConflict(f"input {path} lies in {folder}, where this run would replace or delete it; copy "
                                 f"it elsewhere or choose another --out")
    refuse_unowned(folder, set(output_names) | {INDEX_NAME}, owned)


@contextmanager
def exclusive_output(out_dir: Path, refs: Sequence[str], urls: Sequence[str], output_names: Iterable[str],
                     dist_info: DistInfo) -> Iterator[None]:
    """Rank 0 locks out_dir and checks what the run would replace; every rank gets its verdict (OutputConflict on
    all of them, so all exit alike) before any work. The lock is held until the block ends."""
    with ExitStack() as stack:
        verdict = ""
        if dist_info.is_main:
            try:
                stack.enter_context(output_lock(out_dir))
                check_outputs(out_dir, refs, urls, output_names)
            except OutputConflict as exc:
                verdict = str(exc)
        verdict = all_gather_strings(verdict)[0]
        if verdict:
            raise OutputConflict(verdict)
        yield
