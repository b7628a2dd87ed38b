"""Crop jobs for the dataset stages: write crops atomically, in a process pool, never raising per item.

The pixels themselves (verify, orient, convert, crop, encode) are nima_train/imaging.py, shared with the
critic; its names are re-exported here for the stages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nima_train.imaging import (  # noqa: F401 (re-exported for the dataset stages)
    MAX_PIXELS,
    CropSpec,
    RejectedImage,
    crop_image,
    encode_jpeg,
    sha256_bytes,
    sha256_file,
)


@dataclass(frozen=True)
class CropResult:
    item_id: str
    path: str  # where the crop was written
    width: int
    height: int
    sha256: str
    source_width: int
    source_height: int


@dataclass(frozen=True)
class CropJob:
    item_id: str
    source: str | bytes  # a file path, or the encoded bytes themselves
    dest: str


def write_atomic(dest: str | Path, data: bytes) -> None:
    """Write to a temporary name in the same folder and rename: a kill never leaves half a file."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, dest)


def run_crop_job(job: CropJob, spec: CropSpec) -> CropResult | RejectedImage:
    """One job, never raising for a bad image: returns the result or the RejectedImage."""
    try:
        if isinstance(job.source, bytes):
            data, label = job.source, job.item_id
        else:
            try:
                data = Path(job.source).read_bytes()
            except FileNotFoundError:
                return RejectedImage(f"missing: {job.source} does not exist")
            except IsADirectoryError:
                return RejectedImage(f"not an image: {job.source} is a directory")
            except PermissionError as exc:
                return RejectedImage(f"unreadable: {exc}")
            label = job.source
        out, (sw, sh) = crop_image(data, spec, label)
        encoded = encode_jpeg(out, spec.quality)
        write_atomic(job.dest, encoded)
        return CropResult(job.item_id, job.dest, out.width, out.height, sha256_bytes(encoded), sw, sh)
    except RejectedImage as exc:
        return exc


def _run_chunk(args: tuple[list[CropJob], CropSpec]) -> list[CropResult | RejectedImage]:
    jobs, spec = args
    return [run_crop_job(job, spec) for job in jobs]


def crop_many(
    jobs: Iterable[CropJob],
    spec: CropSpec,
    workers: int | None = None,
    chunk_size: int = 64,
    on_progress: Callable[[int], None] | None = None,
    pool: Executor | None = None,
) -> Iterator[tuple[CropJob, CropResult | RejectedImage]]:
    """Crop jobs over a process pool (workers=1 runs inline), yielding (job, outcome) in input order.

    Pass `pool` to reuse one executor across many calls (batches of a long run); it is left open.
    """
    jobs = list(jobs)
    workers = workers or os.cpu_count() or 1
    chunks = [jobs[i : i + chunk_size] for i in range(0, len(jobs), chunk_size)]
    own_pool = None
    if pool is not None and chunks:
        results = pool.map(_run_chunk, [(c, spec) for c in chunks])
    elif workers == 1 or len(chunks) <= 1:
        results = map(_run_chunk, [(c, spec) for c in chunks])
    else:
        own_pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)))
        results = own_pool.map(_run_chunk, [(c, spec) for c in chunks])
    try:
        for chunk, outcomes in zip(chunks, results, strict=True):
            yield from zip(chunk, outcomes, strict=True)
            if on_progress:
                on_progress(len(chunk))
    finally:
        if own_pool is not None:
            own_pool.shutdown(cancel_futures=True)
