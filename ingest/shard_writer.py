"""Write one dataset/split of labelled crops as deterministic, incremental, crash-safe WebDataset shards.

Layout under `out_dir` (= $AESTHETIC_HOME/shards/<dataset>/<split>/):

    shard-000003-of-000008-<fp>.tar       samples <key>.jpg + <key>.json, members sorted, fixed tar headers
    shard-000003-of-000008-<fp>.parquet   one row per sample (key, dataset, image_id, split, counts, target, ...)
    index.json                            shard urls (relative to the index), nsamples, filesize, sha256

<fp> is the first 12 hex digits of the shard's content fingerprint (keys, crop sha256s, json bytes), so a
rewritten shard gets a new name and the index is the one commit point: until the new index replaces the old,
every file the old index names is still there, unchanged.

Placement: a sample's shard is the top bits of sha256(dataset, image_id) (ingest.splits.hash_fraction), with a
power-of-two number of buckets: the smallest that keeps every bucket within the sample-count and byte limits.
Changing one image therefore changes one bucket's content and one tar; only growth past a limit doubles the
bucket count (each bucket splits in two) and rewrites everything, which happens log2(n) times in a dataset's life.

Skipping: each Parquet sidecar records its tar's fingerprint, size and sha256. A shard whose wanted name
exists with a matching sidecar is kept untouched, so an interrupted run is completed by the next one rather than
redone.

Crash safety: every file is written under a dot-prefixed temporary name in the same folder, fsynced and
renamed into place (common/atomic.py); the tar goes first, its sidecar second, the index last, and files the
new index no longer names are deleted after it. A run killed at any point leaves only whole files at final names and a
consistent index (plus temp files, which the next run deletes).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from common.atomic import atomic_path, publish, remove_stale_temps, temp_path, write_atomic
from common.bounds import Range, bounded, check_ranges
from common.shard_format import INDEX_NAME
from common.tarwrite import HashingWriter, escape_key, tar_member_info
from ingest.splits import hash_fraction

if TYPE_CHECKING:
    import pyarrow as pa

FORMAT_VERSION = 1
DEFAULT_MAX_SAMPLES = 5000
DEFAULT_MAX_BYTES = 1_000_000_000
_BLOCK = tarfile.BLOCKSIZE
_MAX_LEVEL = 40  # 2**40 buckets: far more than any dataset has samples
_SHARD_RE = re.compile(r"^shard-\d{6}-of-\d{6}-[0-9a-f]{12}\.(tar|parquet)$")
_TEMP_RE = re.compile(r"^\.(shard-[0-9a-f\-of]+\.(?:tar|parquet)|index\.json)\.(?P<pid>\d+)\.tmp$")


@dataclass(frozen=True)
class ShardSample:
    """One labelled crop, as read from the warehouse."""

    dataset: str
    image_id: str
    split: str
    path: str  # the crop file on disk
    sha256: str  # of the crop file, as the warehouse recorded it
    counts: tuple[int, ...]
    target: tuple[float, ...]
    mean: float
    std: float

    @property
    def key(self) -> str:
        return sample_key(self.dataset, self.image_id)

    def json_bytes(self) -> bytes:
        doc = {
            "dataset": self.dataset,
            "image_id": self.image_id,
            "split": self.split,
            "counts": [int(c) for c in self.counts],
            "target": [float(t) for t in self.target],
            "mean": float(self.mean),
            "std": float(self.std),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class ShardLimits:
    max_samples: int = bounded(DEFAULT_MAX_SAMPLES, Range(1, 1_000_000, "samples per tar: a reader holds a "
                                                                      "shard's keys, and the index lists each tar"))
    max_bytes: int = bounded(DEFAULT_MAX_BYTES, Range(4 * _BLOCK, 2**36, "bytes per tar: at least one sample's "
                                                                        "headers, at most 64 GiB a reader streams"))

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class ShardInfo:
    name: str  # file name of the tar, relative to the split folder
    bucket: int
    n_buckets: int
    nsamples: int
    filesize: int
    sha256: str
    fingerprint: str


@dataclass(frozen=True)
class SampleFailure:
    """A sample that could not go into its shard; image_id is the warehouse's id, reason 'kind: details'."""

    image_id: str
    reason: str


@dataclass
class SplitResult:
    dataset: str
    split: str
    out_dir: Path
    n_buckets: int
    shards: list[ShardInfo] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failures: list[SampleFailure] = field(default_factory=list)
    index_path: Path | None = None
    index_sha256: str = ""

    @property
    def n_samples(self) -> int:
        return sum(s.nsamples for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(s.filesize for s in self.shards)


def sample_key(dataset: str, image_id: str) -> str:
    """`<dataset>_<image_id>` with every character outside [A-Za-z0-9_-] %XX-escaped: no dots, no slashes."""
    return f"{dataset}_{escape_key(image_id)}"


def shard_name(bucket: int, n_buckets: int, content: str) -> str:
    """File name of a shard: its bucket, the bucket count and the start of its content fingerprint."""
    return f"shard-{bucket:06d}-of-{n_buckets:06d}-{content[:12]}.tar"


def _padded(n: int) -> int:
    return -(-n // _BLOCK) * _BLOCK


def _sample_tar_bytes(jpg_size: int, json_size: int) -> int:
    """Bytes a sample takes in a tar: a header block and padded data for each of its two members."""
    return 2 * _BLOCK + _padded(jpg_size) + _padded(json_size)


def _tar_overhead() -> int:
    # End-of-archive marker; the final record padding is at most one record.
    return 2 * _BLOCK + tarfile.RECORDSIZE


def bucket_fraction(dataset: str, image_id: str) -> float:
    return hash_fraction(str(image_id), salt=f"shard:{dataset}")


def bucket_for(fraction: float, n_buckets: int) -> int:
    """Top log2(n_buckets) bits of the id's hash: doubling n_buckets splits bucket b into 2b and 2b+1."""
    return int(fraction * n_buckets)


def bucket_of(dataset: str, image_id: str, n_buckets: int) -> int:
    return bucket_for(bucket_fraction(dataset, image_id), n_buckets)


def choose_n_buckets(fractions: Sequence[float], sizes: Sequence[int], limits: ShardLimits) -> int:
    """Smallest power of two whose buckets all fit the limits (a lone sample over max_bytes gets its own)."""
    for level in range(_MAX_LEVEL + 1):
        n = 1 << level
        counts: dict[int, int] = {}
        volume: dict[int, int] = {}
        for f, size in zip(fractions, sizes, strict=True):
            b = int(f * n)
            counts[b] = counts.get(b, 0) + 1
            volume[b] = volume.get(b, 0) + size
        if all(
            counts[b] <= limits.max_samples and (volume[b] + _tar_overhead() <= limits.max_bytes or counts[b] == 1)
            for b in counts
        ):
            return n
    raise ValueError(f"could not fit {len(fractions)} samples into shards within {limits}")


def fingerprint(entries: Iterable[tuple[str, str, bytes]]) -> str:
    """Content hash of a shard from (key, crop sha256, json bytes), in key order, plus the format version."""
    h = hashlib.sha256(f"webdataset-shard-v{FORMAT_VERSION}\n".encode())
    for key, crop_sha, js in entries:
        h.update(key.encode())
        h.update(b"\0")
        h.update(crop_sha.encode())
        h.update(b"\0")
        h.update(hashlib.sha256(js).digest())
    return h.hexdigest()




@functools.cache
def _sidecar_schema() -> pa.Schema:
    """Built on first use, so importing this module (the code location does) does not import pyarrow."""
    import pyarrow as pa

    return pa.schema(
        [
            ("key", pa.string()),
            ("dataset", pa.string()),
            ("image_id", pa.string()),
            ("split", pa.string()),
            ("counts", pa.list_(pa.int32())),
            ("target", pa.list_(pa.float64())),
            ("mean", pa.float64()),
            ("std", pa.float64()),
        ]
    )


def _sidecar_path(tar_path: Path) -> Path:
    return tar_path.with_suffix(".parquet")


def read_sidecar_meta(tar_path: Path) -> dict | None:
    """The shard facts stored in a sidecar's schema metadata, or None when missing or unreadable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _sidecar_path(tar_path)
    if not path.exists():
        return None
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[b"shard"])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None


def _write_sidecar(tar_path: Path, samples: Sequence[ShardSample], info: ShardInfo) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {
        "format": FORMAT_VERSION,
        "tar": tar_path.name,
        "nsamples": info.nsamples,
        "filesize": info.filesize,
        "sha256": info.sha256,
        "fingerprint": info.fingerprint,
    }
    table = pa.table(
        {
            "key": [s.key for s in samples],
            "dataset": [s.dataset for s in samples],
            "image_id": [s.image_id for s in samples],
            "split": [s.split for s in samples],
            "counts": [[int(c) for c in s.counts] for s in samples],
            "target": [[float(t) for t in s.target] for s in samples],
            "mean": [float(s.mean) for s in samples],
            "std": [float(s.std) for s in samples],
        },
        schema=_sidecar_schema().with_metadata({"shard": json.dumps(meta, sort_keys=True)}),
    )
    with atomic_path(_sidecar_path(tar_path), fsync=True) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _read_crop(sample: ShardSample) -> bytes:
    """The crop file's own bytes, checked against the warehouse's sha256; raises ValueError with a reason."""
    try:
        data = Path(sample.path).read_bytes()
    except FileNotFoundError as exc:
        raise ValueError(f"missing: crop {sample.path} does not exist") from exc
    except OSError as exc:
        raise ValueError(f"unreadable: crop {sample.path}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != sample.sha256:
        raise ValueError(f"changed: crop {sample.path} no longer matches the sha256 in the warehouse")
    return data


def write_shard(
    out_dir: Path, samples: Sequence[ShardSample], bucket: int, n_buckets: int
) -> tuple[ShardInfo | None, list[SampleFailure]]:
    """Write one tar (temp name, fsync, rename to its content name) and its sidecar; samples sorted by key.

    Samples whose crop cannot be read are left out and returned as failures; the fingerprint covers only
    what was written, so the next run rewrites this shard (and reports the failure again) until fixed.
    """
    failures: list[SampleFailure] = []
    written: list[ShardSample] = []
    entries: list[tuple[str, str, bytes]] = []
    # The tar's name holds its content's fingerprint, known only once it is written: a temporary under the
    # bucket's name first (what remove_stale_temps recognises), published under the final name below.
    tmp = temp_path(out_dir / f"shard-{bucket:06d}-of-{n_buckets:06d}.tar")
    try:
        with open(tmp, "wb") as fh:
            out = HashingWriter(fh)
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
                for s in samples:
                    try:
                        jpg = _read_crop(s)
                    except ValueError as exc:
                        failures.append(SampleFailure(s.image_id, str(exc)))
                        continue
                    js = s.json_bytes()
                    # Members of a sample are adjacent and in name order (jpg < json): what WebDataset groups.
                    tar.addfile(tar_member_info(f"{s.key}.jpg", len(jpg)), io.BytesIO(jpg))
                    tar.addfile(tar_member_info(f"{s.key}.json", len(js)), io.BytesIO(js))
                    written.append(s)
                    entries.append((s.key, s.sha256, js))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not written:
        tmp.unlink(missing_ok=True)
        return None, failures
    content = fingerprint(entries)
    tar_path = out_dir / shard_name(bucket, n_buckets, content)
    info = ShardInfo(
        name=tar_path.name,
        bucket=bucket,
        n_buckets=n_buckets,
        nsamples=len(written),
        filesize=out.n,
        sha256=out.sha.hexdigest(),
        fingerprint=content,
    )
    publish(tmp, tar_path, fsync=True)
    _write_sidecar(tar_path, written, info)
    return info, failures


def _kept_info(tar_path: Path, want: str, bucket: int, n_buckets: int) -> ShardInfo | None:
    """The existing shard's facts when its sidecar says it holds exactly `want` and the tar's size agrees."""
    meta = read_sidecar_meta(tar_path)
    if not meta or meta.get("fingerprint") != want or meta.get("format") != FORMAT_VERSION:
        return None
    try:
        size = tar_path.stat().st_size
    except FileNotFoundError:
        return None
    if size != meta.get("filesize"):
        return None
    return ShardInfo(tar_path.name, bucket, n_buckets, int(meta["nsamples"]), size, meta["sha256"], want)


def index_document(dataset: str, split: str, target: str, n_buckets: int, shards: Sequence[ShardInfo]) -> dict:
    """The index JSON: our fields plus wids' `shardlist` (url, nsamples) so wids-style readers work too."""
    return {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": f"{dataset}/{split}",
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "split": split,
        "target": target,
        "n_buckets": n_buckets,
        "nsamples": sum(s.nsamples for s in shards),
        "filesize": sum(s.filesize for s in shards),
        "shardlist": [
            {
                "url": s.name,
                "nsamples": s.nsamples,
                "filesize": s.filesize,
                "sha256": s.sha256,
                "bucket": s.bucket,
            }
            for s in shards
        ],
    }


def write_split(
    samples: Sequence[ShardSample],
    out_dir: str | Path,
    dataset: str,
    split: str,
    target: str = "p_normalized",
    limits: ShardLimits | None = None,
) -> SplitResult:
    """Bring out_dir's shards, sidecars and index in line with `samples` (all of one dataset/split).

    Two runs writing the same split (a group job beside the full pipeline) take turns on out_dir/.lock:
    each deletes the shards its own index no longer names, which would pull files from under the other.
    """
    limits = limits or ShardLimits()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _write_split_locked(samples, out_dir, dataset, split, target, limits)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_split_locked(
    samples: Sequence[ShardSample], out_dir: Path, dataset: str, split: str, target: str, limits: ShardLimits
) -> SplitResult:
    remove_stale_temps(out_dir, _TEMP_RE)
    for s in samples:
        if s.dataset != dataset or s.split != split:
            raise ValueError(f"sample {s.dataset}/{s.image_id} is in split {s.split!r}, not {dataset}/{split}")
    ordered = sorted(samples, key=lambda s: s.key)
    keys = [s.key for s in ordered]
    dupes = sorted({k for k, nxt in zip(keys, keys[1:], strict=False) if k == nxt})
    if dupes:
        raise ValueError(f"duplicate sample keys in {dataset}/{split}: {dupes[:5]}")

    def size_of(s: ShardSample) -> int:
        try:
            jpg = os.stat(s.path).st_size
        except OSError:
            jpg = 0  # will fail (and be reported) when the shard is written
        return _sample_tar_bytes(jpg, len(s.json_bytes()))

    fractions = [bucket_fraction(dataset, s.image_id) for s in ordered]
    n_buckets = choose_n_buckets(fractions, [size_of(s) for s in ordered], limits) if ordered else 1
    buckets: dict[int, list[ShardSample]] = {}
    for s, f in zip(ordered, fractions, strict=True):
        buckets.setdefault(bucket_for(f, n_buckets), []).append(s)

    result = SplitResult(dataset, split, out_dir, n_buckets)
    for b in sorted(buckets):
        members = buckets[b]
        want = fingerprint((s.key, s.sha256, s.json_bytes()) for s in members)
        info = _kept_info(out_dir / shard_name(b, n_buckets, want), want, b, n_buckets)
        if info is not None:
            result.kept.append(info.name)
        else:
            info, failures = write_shard(out_dir, members, b, n_buckets)
            result.failures.extend(failures)
            if info is None:  # every sample of the bucket failed: no tar for it
                continue
            result.written.append(info.name)
        result.shards.append(info)

    doc = index_document(dataset, split, target, n_buckets, result.shards)
    payload = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
    index_path = out_dir / INDEX_NAME
    write_atomic(index_path, payload, fsync=True)
    result.index_path = index_path
    result.index_sha256 = hashlib.sha256(payload).hexdigest()

    # Only now that the index no longer names them: shards of an old bucket count or of emptied buckets.
    live = {s.name for s in result.shards}
    for p in sorted(out_dir.iterdir()):
        m = _SHARD_RE.match(p.name)
        if m and p.with_suffix(".tar").name not in live:
            p.unlink(missing_ok=True)
            if p.suffix == ".tar":
                result.removed.append(p.name)
    return result
