"""Crop jobs for the dataset stages: write crops atomically, in a process pool, never raising per item.

The pixels themselves (verify, orient, convert, crop, encode) are common/imaging.py, shared with the
critic; its names are re-exported here for the stages.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass

from common.atomic import write_atomic
from common.bounds import Range
from common.imaging import (  # noqa: F401 (re-exported for the dataset stages)
    MAX_PIXELS,
    CropSpec,
    RejectedImage,
    crop_image,
    encode_jpeg,
    sha256_bytes,
    sha256_file,
)
from common.regular_files import NotRegularFile, read_regular_file

# The crop stages' process count: 0 means one per core; each process holds a decoded photo, and past 64 more
# only adds memory.
CROP_WORKERS = Range(0, 64, "crop processes, 0: one per core; each holds a decoded photo")


@dataclass(frozen=True)
class CropResult:
    item_id: str
    path: str  # where the crop was written
    width: int
    height: int
    sha256: str
    source_width: int
    source_height: int
    file_size: int = 0  # of the crop file as written (stat after the rename)
    file_mtime_ns: int = 0


class ArchiveMember:
    """A member of an archive that the crop worker reads itself (ingest/archives.py); str() names it."""

    def read(self) -> bytes:
        raise NotImplementedError


@dataclass(frozen=True)
class CropJob:
    item_id: str
    source: str | bytes | ArchiveMember  # a file path, the encoded bytes themselves, or an archive member
    dest: str


def run_crop_job(job: CropJob, spec: CropSpec) -> CropResult | RejectedImage:
    """One job, never raising for a bad image: returns the result or the RejectedImage."""
    try:
        if isinstance(job.source, bytes):
            data, label = job.source, job.item_id
        elif not isinstance(job.source, str):  # read here, in the worker: members are read in parallel
            data, label = job.source.read(), str(job.source)
        else:
            try:
                data = read_regular_file(job.source)
            except FileNotFoundError:
                return RejectedImage(f"missing: {job.source} does not exist")
            except NotRegularFile as exc:  # a FIFO, socket, device or directory: never read (a FIFO would block)
                return RejectedImage(str(exc))
            except OSError as exc:
                return RejectedImage(f"unreadable: {job.source}: {exc.strerror or exc}")
            label = job.source
        out, (sw, sh) = crop_image(data, spec, label)
        encoded = encode_jpeg(out, spec.quality)
        write_atomic(job.dest, encoded)
        written = os.stat(job.dest)
        return CropResult(job.item_id, job.dest, out.width, out.height, sha256_bytes(encoded), sw, sh,
                          written.st_size, written.st_mtime_ns)
    except RejectedImage as exc:
        return exc


def _run_chunk(args: tuple[list[CropJob], CropSpec]) -> list[CropResult | RejectedImage]:
    jobs, spec = args
    return [run_crop_job(job, spec) for job in jobs]


def _ready() -> None:
    """A no-op task: submitted once per worker, it makes the pool start its processes now."""


def crop_pool(workers: int, warm: bool = False) -> ProcessPoolExecutor:
    """A process pool for crop jobs, its workers forked from a forkserver that has imported this module.

    Not plain fork: the caller may be a Dagster step process running threads, and forking a threaded process
    can copy a held lock into the child and hang it. Not spawn either: a spawned worker re-imports the
    parent's __main__ (the `dagster` command, and with it all of Dagster) before its first job, where a
    forkserver imports only its preload list, once. warm=True starts the workers now, so their start-up
    overlaps with the caller's own work instead of delaying the first batch.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    if warm:
        for _ in range(workers):
            pool.submit(_ready)
    return pool


def chunked(jobs: Sequence[CropJob], chunk_size: int) -> list[list[CropJob]]:
    return [list(jobs[i : i + chunk_size]) for i in range(0, len(jobs), chunk_size)]


def submit_crops(
    jobs: Sequence[CropJob], spec: CropSpec, pool: Executor | None, chunk_size: int = 64
) -> Iterator[tuple[CropJob, CropResult | RejectedImage]]:
    """Send the jobs to the pool now (inline when pool is None) and return an iterator over (job, outcome)
    in input order: the caller can do other work, such as writing the previous batch, while they run."""
    chunks = chunked(jobs, chunk_size)
    if pool is None:
        results: Iterable[list[CropResult | RejectedImage]] = [_run_chunk((c, spec)) for c in chunks]
    else:
        results = pool.map(_run_chunk, [(c, spec) for c in chunks])  # submits every chunk before returning
    return (pair for chunk, outcomes in zip(chunks, results, strict=True)
            for pair in zip(chunk, outcomes, strict=True))


def crop_many(
    jobs: Iterable[CropJob],
    spec: CropSpec,
    workers: int | None = None,
    chunk_size: int = 64,
) -> Iterator[tuple[CropJob, CropResult | RejectedImage]]:
    """Crop jobs over a pool of its own (inline for workers=1 or one chunk), yielding (job, outcome) in input
    order; the pool is shut down when the iteration ends."""
    jobs = list(jobs)
    workers = workers or os.cpu_count() or 1
    pool = None
    if workers > 1 and len(jobs) > chunk_size:
        pool = crop_pool(min(workers, -(-len(jobs) // chunk_size)))
    try:
        yield from submit_crops(jobs, spec, pool, chunk_size)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
