"""The crop folder a dataset stage holds while it writes (`images/<dataset>/` under AESTHETIC_HOME), and the
sweep that deletes crops no warehouse row records: what a run killed, or stopped by a full disk, between
writing crops and recording them leaves behind.

Kept apart from ingest/crops.py, which the crop workers preload: they need neither DuckDB nor the warehouse.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from common.atomic import remove_stale_temps
from ingest.paths import Connect, Log, Paths, no_log
from warehouse.records import image_paths


def lock_path(folder: Path) -> Path:
    """Beside the crop folder, not in it: the folder holds crops and nothing else."""
    return folder.with_name(f".{folder.name}.lock")


def sweep_unrecorded(folder: Path, recorded: Iterable[str]) -> list[str]:
    """Delete the crops (*.jpg) in folder that no recorded path names, and temporaries of dead writers; returns
    the names removed. A stage writes its crops as <id>.jpg in its own folder only, so the name decides."""
    keep = {os.path.basename(p) for p in recorded}
    removed = remove_stale_temps(folder)
    with os.scandir(folder) as entries:
        orphans = [e for e in entries if e.name.endswith(".jpg") and e.name not in keep and e.name[0] != "."
                   and e.is_file(follow_symlinks=False)]
    for entry in orphans:
        Path(entry.path).unlink(missing_ok=True)
    return removed + sorted(e.name for e in orphans)


def _alone(lock: IO[str]) -> bool:
    """Take the folder's lock exclusively if no other run holds it, without waiting."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def crop_folder(paths: Paths, dataset: str, connect: Connect, log: Log = no_log) -> Iterator[Path]:
    """images/<dataset>/ while one run of its stage writes crops there; crops that no `images` row records are
    deleted before the block and again when it raises.

    Runs of a stage do not wait for each other here (the warehouse's own lock orders their writes): each holds
    a shared flock on images/.<dataset>.lock while it writes. Sweeping takes that lock exclusively and is skipped while
    another run holds it, since that run's crops, written but not yet recorded, look exactly like orphans;
    the next run that finds the folder to itself sweeps them.
    """
    folder = paths.images_dir(dataset)
    folder.mkdir(parents=True, exist_ok=True)

    def sweep(what: str) -> None:
        with connect() as conn:
            recorded = image_paths(conn, dataset)
        removed = sweep_unrecorded(folder, recorded)
        if removed:
            log(f"{dataset}: removed {len(removed)} file(s) from {folder} that no images row records ({what})")

    with open(lock_path(folder), "a") as lock:
        if _alone(lock):
            sweep("left by an earlier run")
        else:
            log(f"{dataset}: another run is writing {folder}; unrecorded crops are left to a later run")
        fcntl.flock(lock, fcntl.LOCK_SH)  # a downgrade from exclusive: other runs may start from here on
        try:
            yield folder
        except BaseException:
            if _alone(lock):
                try:
                    sweep("written by this run before it failed")
                except Exception as exc:  # a full disk may refuse even this; the next run sweeps instead
                    log(f"{dataset}: unrecorded crops left for the next run ({type(exc).__name__}: {exc})")
            raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
