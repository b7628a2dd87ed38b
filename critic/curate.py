"""Curate a WebDataset corpus with the critic: score every sample, find near-duplicates, keep the best.

    aesthetic curate SHARD_URL... --out DIR [--model REF] [--min-score S] [--dedupe/--no-dedupe] [--allow-pipe]
    torchrun --nnodes N --nproc-per-node K -m cli curate SHARD_URL... --out DIR   # the same, on N*K ranks

Two steps (docs/curation.md holds the contract and the layout of DIR):
1. Score. Input shards are split by rank (shard i goes to rank i % world size) and, within a rank, by DataLoader
   worker. Workers read shards through the training reader's fast path (nima_train.tarstream: a local shard is
   mapped in memory; nima_train.data.decode_image: libjpeg-turbo), crop each image as the dataset stages store it
   (the centred square at 256 px), hash it and cut the model's input; the rank's main process runs the critic on
   batches that never cross a shard, so a sample's scores do not depend on how shards were spread over ranks and
   workers. Each finished shard becomes DIR/scores/<name>.parquet, written atomically, its schema metadata naming
   the model version and the input's identity; a re-run skips the shards whose record matches.
2. Filter, once, on rank 0 after every rank is done: the threshold, near-duplicate clusters (critic.neardup),
   DIR/manifest.parquet and the kept samples' shards in DIR/shards/. When any shard failed nothing of this is
   written: the run names the failed shards, and a re-run scores only those, then filters.

A run holds DIR alone and replaces or deletes only the files its manifest lists (critic/curate_output.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset

from common.atomic import atomic_path, write_atomic
from common.imaging import MAX_PIXELS, STORED_CROP, sha256_file
from common.remote import ReadLimits
from common.shard_format import INDEX_NAME
from common.tarwrite import HashingWriter, escape_key, tar_member_info
from critic import detectors
from critic.curate_output import MANIFEST_NAME, SHARDS_DIR, exclusive_output, owned_files, refuse_unowned
from critic.neardup import near_duplicate_pairs, perceptual_hash
from critic.scoring import Critic, UnreadableImage, probe_image
from critic.scoring import decode_image_sized as decode_crop_sized
from critic.settings import DETECTORS, DOMAINS, CurateSettings
from nima_train.data import ShardURLRefused, decode_image, refuse_pipe, resolve_shards
from nima_train.distributed import DistInfo, all_gather_strings, barrier
from nima_train.tarstream import DEFAULT_LIMITS, local_file, open_shard_stream, tar_samples
from nima_train.transforms import center_crop

FORMAT = 2  # 2: the quality detectors' columns
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
DECISIONS = ("kept", "low_score", "duplicate", "exact_duplicate", *DETECTORS, "unreadable")


@dataclass(frozen=True)
class InputShard:
    url: str
    index_sha256: str | None = None  # of the index.json that listed it; None for a shard given by itself
    error: str | None = None  # why it could not even be listed (a missing path, an unreachable index)

    @property
    def name(self) -> str:
        """The stem of its outputs: the shard's file name, escaped, plus a digest of the full URL (unique)."""
        base = urlparse(self.url).path.rstrip("/").rsplit("/", 1)[-1] or "shard"
        if self.url.startswith("pipe:"):
            base = "pipe"
        stem = base[:-4] if base.endswith(".tar") else base
        return f"{escape_key(stem)[:80]}-{hashlib.sha256(self.url.encode()).hexdigest()[:10]}"


@dataclass
class FilterOutcome:
    counts: dict[str, int]
    manifest: Path
    shards_dir: Path
    n_pairs: int
    clusters: list[list[str]]  # manifest keys of each duplicate cluster, its kept sample first
    kept_shards: list[str] = field(default_factory=list)
    detected: dict[str, int] = field(default_factory=dict)  # detector -> samples it fires on, asked for or not


@dataclass
class CurateResult:
    shards: list[InputShard]
    scored: list[str] = field(default_factory=list)  # urls scored by this run
    skipped: list[str] = field(default_factory=list)  # urls whose scores were already there
    failed: dict[str, str] = field(default_factory=dict)  # url -> reason (all ranks)
    outcome: FilterOutcome | None = None  # rank 0 only, and only when nothing failed


def _is_remote(ref: str) -> bool:
    return urlparse(ref).scheme.lower() in ("http", "https")


def _single_shard(ref: str) -> bool:
    return ref.startswith("pipe:") or (_is_remote(ref) and urlparse(ref).path.endswith(".tar"))


def input_shards(refs: Sequence[str], allow_pipe: bool = False) -> list[InputShard]:
    """The shards named by refs, resolved with the reader's rules (nima_train.data.resolve_shards): local
    .tar files, http(s) .tar URLs, `pipe:` commands (only with allow_pipe), split folders and index.json files
    (local or http). ShardURLRefused for a URL the rules refuse; a ref that cannot be listed (missing, an
    unreachable index) comes back as an InputShard with its error, so the other shards still run."""
    out: list[InputShard] = []
    for ref in map(str, refs):
        if _single_shard(ref):
            refuse_pipe(ref, allow_pipe, "the shards given")
            out.append(InputShard(ref))
            continue
        path = Path(ref)
        if not _is_remote(ref) and path.suffix == ".tar":
            out.append(InputShard(str(path.resolve()) if path.exists() else ref,
                                  error=None if path.exists() else f"missing: {ref} does not exist"))
            continue
        try:
            found = resolve_shards([ref], allow_pipe)
        except ShardURLRefused:
            raise
        except (OSError, ValueError) as exc:
            out.append(InputShard(ref, error=f"unlisted: {exc}"))
            continue
        digest = next(iter(found.index_sha256.values()), None)
        out += [InputShard(u if _is_remote(u) or u.startswith("pipe:") else str(Path(u).resolve()), digest)
                for u in found.urls]
    return out


def shard_identity(shard: InputShard, limits: ReadLimits = DEFAULT_LIMITS) -> str:
    """What a re-run compares: the listing index's sha256, or the shard's own size and sha256 (a shard given by
    URL is read within `limits`, as the reader reads it)."""
    if shard.index_sha256:
        return f"index-sha256:{shard.index_sha256}"
    path = local_file(shard.url)
    if path is not None:
        return f"size:{Path(path).stat().st_size} sha256:{sha256_file(path)}"
    h, size = hashlib.sha256(), 0
    stream = open_shard_stream(shard.url, limits)
    try:
        while block := stream.read(1 << 20):
            h.update(block)
            size += len(block)
    finally:
        stream.close()
    return f"size:{size} sha256:{h.hexdigest()}"


def scores_path(out_dir: Path, shard: InputShard) -> Path:
    return out_dir / "scores" / f"{shard.name}.parquet"


def _scores_meta(path: Path) -> dict | None:
    try:
        return json.loads((pq.read_schema(path).metadata or {})[b"curation"])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None


def is_done(out_dir: Path, shard: InputShard, model_version: str, identity: str) -> bool:
    meta = _scores_meta(scores_path(out_dir, shard))
    return bool(meta) and meta.get("format") == FORMAT and meta.get("model") == model_version and \
        meta.get("input") == identity


class UniqueKeys:
    """Hands out each key once: base itself, or for a repeat the first of base-2, base-3 ... not taken yet.

    A counter per base remembers where its last search stopped, so n repeats of one key cost O(n) rather than a
    walk from -2 for each (O(n^2)): every suffix the search steps over is a name already taken, and each taken
    name is stepped over at most once (it is base-n for one base and one n only).
    """

    def __init__(self) -> None:
        self._taken: set[str] = set()
        self._next: dict[str, int] = {}

    def __call__(self, base: str) -> str:
        key = base
        if key in self._taken:
            n = self._next.get(base, 2)
            while f"{base}-{n}" in self._taken:
                n += 1
            self._next[base] = n + 1
            key = f"{base}-{n}"
        self._taken.add(key)
        return key


def keyed_samples(samples: Iterator[dict]) -> Iterator[tuple[str, dict]]:
    """(key, sample): the sample's key escaped (no dots, no path separators) and unique within the shard."""
    unique = UniqueKeys()
    for sample in samples:
        yield unique(escape_key(sample["__key__"])), sample


def printable(text: str) -> str:
    """A name read from a tar as valid text: bytes that are not UTF-8 shown as \\xNN (Parquet strings are UTF-8)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _non_utf8_member(sample: dict) -> bytes | None:
    """The first of the sample's member names (as the tar has them) that is not UTF-8, else None. Such a sample is
    not scored: its name cannot be stored or copied as text, and it is one sample's fault, not its shard's."""
    for ext in sorted(k for k in sample if not k.startswith("__")):
        name = f"{sample['__key__']}.{ext}"
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return name.encode("utf-8", "surrogateescape")
    return None


def _image_member(sample: dict) -> bytes | memoryview | None:
    return next((sample[e] for e in IMAGE_EXTENSIONS if e in sample), None)


def stored_crop(data: bytes | memoryview) -> torch.Tensor:
    """stored_crop_sized's crop."""
    return stored_crop_sized(data)[0]


def stored_crop_sized(data: bytes | memoryview) -> tuple[torch.Tensor, tuple[int, int]]:
    """The centred square of an image at 256 px as a uint8 (3, 256, 256) tensor, and the header's size (which
    the odd_size and odd_aspect detectors read); UnreadableImage with the reason.

    A 256 x 256 image (what the dataset stages store) is decoded as training decodes it (libjpeg-turbo for
    JPEG); any other goes through critic.scoring.decode_image, as `aesthetic score` crops it (verified, EXIF
    orientation, a JPEG decoded at draft size, the square resampled with Lanczos), so both give the same input.
    """
    probe = probe_image(bytes(data[:65536]), "image", MAX_PIXELS)  # the header is enough; None: decode_crop says why
    if probe is not None and (probe.width, probe.height) == (STORED_CROP, STORED_CROP):
        try:
            img = decode_image(data)
        except Exception as exc:  # noqa: BLE001 - Pillow and libjpeg raise many kinds; each is this sample's fault
            raise UnreadableImage(f"corrupt: {_first_line(exc)}") from exc
        if tuple(img.shape[-2:]) == (STORED_CROP, STORED_CROP):
            return img, (probe.width, probe.height)
    crop, size = decode_crop_sized(bytes(data), "image")
    return torch.from_numpy(np.array(crop)).permute(2, 0, 1).contiguous(), size


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


class _ShardScoring(IterableDataset):
    """Messages per shard, from whichever DataLoader worker owns it (shards[worker::workers]):
    ("skip", pos), ("batch", pos, keys, source keys, errors, hashes, images, detector measures) ...,
    ("done", pos, identity, error).
    A shard that fails part-way still sends its batches; its "done" carries the error and they are dropped."""

    def __init__(self, jobs: list[tuple[int, InputShard]], out_dir: Path, version: str, image_size: int,
                 resize: int, batch_size: int) -> None:
        super().__init__()
        self.jobs, self.out_dir, self.version = jobs, out_dir, version
        self.image_size, self.resize, self.batch_size = image_size, resize, batch_size

    def __iter__(self) -> Iterator[tuple]:
        info = torch.utils.data.get_worker_info()
        mine = self.jobs if info is None else self.jobs[info.id :: info.num_workers]
        for pos, shard in mine:
            yield from self._shard(pos, shard)

    def _shard(self, pos: int, shard: InputShard) -> Iterator[tuple]:
        if shard.error:
            yield ("done", pos, None, shard.error)
            return
        try:
            identity = shard_identity(shard)
            if is_done(self.out_dir, shard, self.version, identity):
                yield ("skip", pos)
                return
            pending: list[tuple[str, str, str | None, int | None]] = []
            images: list[torch.Tensor] = []
            for key, sample in keyed_samples(tar_samples([{"url": shard.url}])):
                pending.append(self._prepare(key, sample, images))
                if len(images) == self.batch_size:
                    yield self._batch(pos, pending, images)
                    pending, images = [], []
            if pending:
                yield self._batch(pos, pending, images)
        except Exception as exc:  # noqa: BLE001 - any failure to read the shard fails the shard, not the run
            yield ("done", pos, None, f"{type(exc).__name__}: {_first_line(exc)}")
            return
        yield ("done", pos, identity, None)

    def _prepare(self, key: str, sample: dict, images: list[torch.Tensor]) -> tuple:
        source = printable(sample["__key__"])
        bad_name = _non_utf8_member(sample)
        if bad_name is not None:
            return key, source, f"member name is not UTF-8: {bad_name!r}", None, None
        if "__skipped__" in sample:  # a member over the reader's max_member_bytes: that sample is unreadable
            return key, source, "; ".join(sample["__skipped__"]), None, None
        data = _image_member(sample)
        if data is None:
            members = ", ".join(sorted(k for k in sample if not k.startswith("__"))) or "nothing"
            return key, source, f"no image: none of {', '.join(IMAGE_EXTENSIONS)} (has {members})", None, None
        try:
            crop, size = stored_crop_sized(data)
        except UnreadableImage as exc:
            return key, source, str(exc), None, None
        pixels = crop.permute(1, 2, 0).numpy()
        phash = perceptual_hash(Image.fromarray(pixels))
        images.append(center_crop(crop, self.image_size, self.resize).contiguous())
        return key, source, None, phash, detectors.measure(pixels, *size)

    def _batch(self, pos: int, pending: list[tuple], images: list[torch.Tensor]) -> tuple:
        keys, sources, errors, hashes, measures = (list(c) for c in zip(*pending, strict=True))
        stacked = torch.stack(images) if images else torch.zeros((0, 3, self.image_size, self.image_size),
                                                                 dtype=torch.uint8)
        return ("batch", pos, keys, sources, errors, hashes, stacked, measures)


def _identity_collate(x):
    return x


@dataclass
class _Rows:
    keys: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    hashes: list[int | None] = field(default_factory=list)
    scored: list[int] = field(default_factory=list)  # row of each score below
    mean: list[np.ndarray] = field(default_factory=list)
    std: list[np.ndarray] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)
    calibrated: list[np.ndarray] = field(default_factory=list)
    percentile: list[np.ndarray] = field(default_factory=list)
    measures: list[dict | None] = field(default_factory=list)  # critic.detectors.measure, None when unreadable


def forward_batch(critic: Critic, images: torch.Tensor):
    """One batch of uint8 images through the critic's backend (bf16 and channels_last on CUDA)."""
    return critic.forward_uint8(images)


def _add_batch(rows: _Rows, critic: Critic, msg: tuple) -> None:
    _, _, keys, sources, errors, hashes, images = msg[:7]
    rows.measures += msg[7]
    start = len(rows.keys)
    rows.keys += keys
    rows.sources += sources
    rows.errors += errors
    rows.hashes += hashes
    rows.scored += [start + i for i, e in enumerate(errors) if e is None]
    if len(images):
        out = forward_batch(critic, images)
        rows.mean.append(out.mean.numpy())
        rows.std.append(out.std.numpy())
        rows.probs.append(out.probs.numpy())
        rows.features.append(out.features.numpy().astype(np.float16))
        rows.calibrated.append(out.calibrated.numpy())
        rows.percentile.append(out.percentile.numpy())


def _fixed_list(values: np.ndarray, n: int, at: list[int], width: int, dtype, pa_type) -> pa.Array:
    full = np.zeros((n, width), dtype=dtype)
    full[at] = values
    mask = np.ones(n, dtype=bool)
    mask[at] = False
    return pa.FixedSizeListArray.from_arrays(pa.array(full.reshape(-1), type=pa_type), width, mask=pa.array(mask))


def _column(values: np.ndarray, n: int, at: list[int]) -> pa.Array:
    full = np.zeros(n, dtype=np.float64)
    full[at] = values
    mask = np.ones(n, dtype=bool)
    mask[at] = False
    return pa.array(full, mask=mask)


def _cat(parts: list[np.ndarray], shape: tuple) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(shape, dtype=np.float32)


def _write_scores(path: Path, shard: InputShard, rows: _Rows, critic: Critic, identity: str) -> None:
    n, at = len(rows.keys), rows.scored
    dim = rows.features[0].shape[1] if rows.features else critic.backend.feature_dim
    columns = {
        "key": pa.array(rows.keys, pa.string()),
        "source_key": pa.array(rows.sources, pa.string()),
        "shard": pa.array([shard.url] * n, pa.string()),
        "error": pa.array(rows.errors, pa.string()),
        "mean": _column(_cat(rows.mean, (0,)), n, at),
        "std": _column(_cat(rows.std, (0,)), n, at),
        "histogram": _fixed_list(_cat(rows.probs, (0, 10)), n, at, 10, np.float32, pa.float32()),
        "phash": pa.array(rows.hashes, pa.uint64()),
        "features": _fixed_list(_cat(rows.features, (0, dim)).astype(np.float16), n, at, dim, np.float16,
                                pa.float16()),
    }
    columns.update(detectors.arrow_columns(rows.measures))
    if critic.calibration is not None:
        columns["calibrated_mean"] = _column(_cat(rows.calibrated, (0,)), n, at)
        columns["percentile"] = _column(_cat(rows.percentile, (0,)), n, at)
    meta = {"format": FORMAT, "model": critic.version, "shard": shard.url, "input": identity, "rows": n,
            "calibrated": critic.calibration is not None}
    table = pa.table(columns).replace_schema_metadata({"curation": json.dumps(meta, sort_keys=True)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def score_shards(critic: Critic, shards: Sequence[InputShard], out_dir: str | Path, settings: CurateSettings,
                 dist_info: DistInfo | None = None) -> CurateResult:
    """Score this rank's share of the shards (step 1); the result lists this rank's shards only."""
    dist_info = dist_info or DistInfo()
    out_dir = Path(out_dir)
    (out_dir / "scores").mkdir(parents=True, exist_ok=True)
    jobs = [(i, s) for i, s in enumerate(shards) if i % dist_info.world_size == dist_info.rank]
    result = CurateResult(list(shards))
    if not jobs:
        return result
    dataset = _ShardScoring(jobs, out_dir, critic.version or "unversioned", critic.image_size, critic.resize,
                            settings.batch_size)
    workers = min(settings.workers, len(jobs))
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_identity_collate,
                        pin_memory=critic.device.type == "cuda", prefetch_factor=4 if workers else None)
    pending: dict[int, _Rows] = {}
    for msg in loader:
        kind, pos = msg[0], msg[1]
        shard = shards[pos]
        if kind == "skip":
            result.skipped.append(shard.url)
        elif kind == "batch":
            _add_batch(pending.setdefault(pos, _Rows()), critic, msg)
        else:
            rows = pending.pop(pos, _Rows())
            identity, error = msg[2], msg[3]
            if error:
                result.failed[shard.url] = error
            else:
                _write_scores(scores_path(out_dir, shard), shard, rows, critic, identity)
                result.scored.append(shard.url)
    return result


def curate(critic: Critic, refs: Sequence[str], out_dir: str | Path, settings: CurateSettings,
           dist_info: DistInfo | None = None) -> CurateResult:
    """Both steps on every rank: score this rank's shards, then (rank 0, once all are scored) filter.

    ShardURLRefused when a ref may not be opened (a pipe: without allow_pipe); OutputConflict when another run
    holds out_dir or this one would replace or delete a file it must not (critic.curate_output), both before any
    work. Failures are gathered from all ranks into result.failed on every rank, so every rank can exit with the
    same status.
    """
    dist_info = dist_info or DistInfo()
    out_dir = Path(out_dir)
    shards = input_shards(refs, settings.allow_pipe)
    with exclusive_output(out_dir, refs, [s.url for s in shards], [f"{s.name}.tar" for s in shards], dist_info):
        return _curate_held(critic, shards, out_dir, settings, dist_info)


def _curate_held(critic: Critic, shards: list[InputShard], out_dir: Path, settings: CurateSettings,
                 dist_info: DistInfo) -> CurateResult:
    result = score_shards(critic, shards, out_dir, settings, dist_info)
    mine = json.dumps({"failed": result.failed, "scored": result.scored, "skipped": result.skipped})
    for doc in map(json.loads, all_gather_strings(mine)):  # also the barrier: every rank has scored
        result.failed.update(doc["failed"])
        result.scored += [u for u in doc["scored"] if u not in result.scored]
        result.skipped += [u for u in doc["skipped"] if u not in result.skipped]
    failed_path = out_dir / "failed.json"
    try:
        if dist_info.is_main:
            if result.failed:
                write_atomic(failed_path, (json.dumps(result.failed, indent=1, sort_keys=True) + "\n").encode())
            else:
                failed_path.unlink(missing_ok=True)
                result.outcome = filter_corpus(out_dir, shards, critic.version or "unversioned",
                                               critic.calibration is not None, settings)
    finally:
        barrier()  # the other ranks exit only once rank 0 has filtered (torchrun ends a job at its first exit)
    return result


# ----------------------------------------------------------------------------------------------- step 2: filter


def _read_scores(out_dir: Path, shards: Sequence[InputShard]) -> list[pa.Table]:
    return [pq.read_table(scores_path(out_dir, s)) for s in shards]


def _corpus_keys(tables: Sequence[pa.Table]) -> list[str]:
    """Each shard's keys made unique across the corpus, in shard order (a repeat gets -2, -3 ...)."""
    unique = UniqueKeys()
    return [unique(k) for t in tables for k in t.column("key").to_pylist()]


def _numbers(tables: Sequence[pa.Table], name: str, dtype, fill) -> np.ndarray:
    import pyarrow.compute as pc

    parts = [pc.fill_null(t.column(name), fill).to_numpy() for t in tables]
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def _features(tables: Sequence[pa.Table], rows: np.ndarray) -> np.ndarray:
    parts = []
    for t in tables:
        col = t.column("features").combine_chunks()
        dim = col.type.list_size
        parts.append(col.values.to_numpy(zero_copy_only=False).reshape(len(col), dim))
    return np.concatenate(parts)[rows] if parts else np.zeros((0, 0), np.float16)


@dataclass
class _Decided:
    decision: list[str]
    reason: list[str | None]
    duplicate_of: list[str | None]
    n_pairs: int
    groups: list[list[str]]  # near-duplicate groups by key, the kept one first
    detected: list[list[tuple[str, str]]] = field(default_factory=list)  # per row: (detector, reason) that fire


def _detected(tables: Sequence[pa.Table], shards: Sequence[InputShard],
              settings: CurateSettings) -> list[list[tuple[str, str]]]:
    """Per row, every detector that fires at its shard's domain's thresholds (whether or not --detect asks)."""
    measures = detectors.rows_of(tables)
    domains = [settings.domain_of(s.url) for s, t in zip(shards, tables, strict=True) for _ in range(t.num_rows)]
    return [[] if m is None else detectors.fired(m, settings.thresholds(d)) for m, d in zip(measures, domains,
                                                                                            strict=True)]


def _decide_corpus(tables: Sequence[pa.Table], keys: list[str], values: np.ndarray, label: str,
                   settings: CurateSettings, detected: list[list[tuple[str, str]]]) -> _Decided:
    """Every sample's decision and reason, as critic/decision.py decides them on the readable samples."""
    from critic import decision as deciding

    errors = [e for t in tables for e in t.column("error").to_pylist()]
    hashes = [e for t in tables for e in t.column("pixel_hash").to_pylist()]
    enabled = settings.enabled
    readable = np.array([i for i, e in enumerate(errors) if e is None], dtype=np.int64)

    def pairs_of(local: list[int]) -> np.ndarray:
        rows = readable[np.asarray(local, dtype=np.int64)]
        return near_duplicate_pairs(_features(tables, rows), _numbers(tables, "phash", np.uint64, 0)[rows],
                                    settings.similarity, settings.max_hamming)

    firing = {i: [(n, why) for n, why in detected[i] if n in enabled] for i in readable.tolist()}
    d = deciding.decide(values[readable], values[readable], deciding.Thresholds(settings.min_score),
                        pairs_of=pairs_of if settings.dedupe else None,
                        detected=[[n for n, _ in firing[i]] for i in readable.tolist()],
                        pixel_hashes=[hashes[i] for i in readable.tolist()] if settings.dedupe else None)
    out = _Decided(["unreadable"] * len(keys), list(errors), [None] * len(keys), d.n_pairs,
                   [[keys[readable[m]] for m in g] for g in d.groups], detected)
    for local, i in enumerate(readable.tolist()):
        w = int(readable[d.winner.get(local, local)])
        if local in d.exact:
            first = keys[int(readable[d.exact[local]])]
            out.decision[i], out.duplicate_of[i] = "exact_duplicate", first
            out.reason[i] = f"the same decoded pixels as {first}"
        elif firing[i]:
            out.decision[i] = firing[i][0][0]
            out.reason[i] = "; ".join(why for _, why in firing[i])
        elif d.missed[local]:
            out.decision[i], out.reason[i] = "low_score", f"{label} {values[i]:.2f} below {settings.min_score:g}"
        elif w != i:
            out.decision[i], out.duplicate_of[i] = "duplicate", keys[w]
            out.reason[i] = f"near-duplicate of {keys[w]} ({label} {values[i]:.2f} <= {values[w]:.2f})"
        else:
            out.decision[i], out.reason[i] = "kept", f"{label} {values[i]:.2f}"
    return out


def filter_corpus(out_dir: str | Path, shards: Sequence[InputShard], model_version: str, calibrated: bool,
                  settings: CurateSettings) -> FilterOutcome:
    """Decide every sample (kept, low_score, duplicate, exact_duplicate, a detector's name, unreadable), write
    the manifest and the kept shards.
    Thresholds and near-duplicate ranking use the calibrated mean when the model has a calibration."""
    out_dir = Path(out_dir)
    tables = _read_scores(out_dir, shards)
    keys = _corpus_keys(tables)
    score_col = "calibrated_mean" if calibrated else "mean"
    d = _decide_corpus(tables, keys, _numbers(tables, score_col, np.float64, np.nan),
                       "calibrated mean" if calibrated else "mean", settings, _detected(tables, shards, settings))
    table = pa.table({
        "key": pa.array(keys, pa.string()),
        "shard": pa.array([s.url for s, t in zip(shards, tables, strict=True) for _ in range(t.num_rows)],
                          pa.string()),
        "decision": pa.array(d.decision, pa.string()),
        "duplicate_of": pa.array(d.duplicate_of, pa.string()),
        "reason": pa.array(d.reason, pa.string()),
        "source_key": pa.array([k for t in tables for k in t.column("source_key").to_pylist()], pa.string()),
        "detected": pa.array([",".join(n for n, _ in f) or None for f in d.detected], pa.string()),
    })
    meta = {"format": FORMAT, "model": model_version, "min_score": settings.min_score, "score": score_col,
            "dedupe": settings.dedupe, "similarity": settings.similarity, "max_hamming": settings.max_hamming,
            "detect": list(settings.enabled), "domain": settings.domain,
            "thresholds": {dom: settings.thresholds(dom) for dom in DOMAINS}}
    kept_by_shard = _kept_by_shard(tables, d.decision, keys)
    manifest, written = _publish(out_dir, shards, table, meta, kept_by_shard, tables)
    counts = {k: d.decision.count(k) for k in DECISIONS}
    fires = {n: sum(any(f == n for f, _ in row) for row in d.detected) for n in DETECTORS}
    return FilterOutcome(counts, manifest, out_dir / SHARDS_DIR, d.n_pairs, d.groups, written, fires)


def _kept_by_shard(tables: Sequence[pa.Table], decision: list[str], keys: list[str]) -> dict[int, dict[str, str]]:
    """Input shard position -> {its kept samples' keys in the shard: their manifest keys}."""
    kept_by_shard: dict[int, dict[str, str]] = {}
    row = 0
    for pos, t in enumerate(tables):
        for local_key in t.column("key").to_pylist():
            if decision[row] == "kept":
                kept_by_shard.setdefault(pos, {})[local_key] = keys[row]
            row += 1
    return kept_by_shard


def _write_manifest(path: Path, table: pa.Table, meta: dict, owns: set[str]) -> None:
    doc = {**meta, "owns": sorted(owns | {INDEX_NAME})}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata({"curation": json.dumps(doc, sort_keys=True)}), tmp,
                       compression="zstd")


def _publish(out_dir: Path, shards: Sequence[InputShard], table: pa.Table, meta: dict,
             kept_by_shard: dict[int, dict[str, str]], tables: Sequence[pa.Table]) -> tuple[Path, list[str]]:
    """The manifest and the kept shards. The manifest claims the tars before they are written (so a run killed
    in between leaves none that no manifest owns), and lists only the live ones once the others are deleted."""
    manifest, folder = out_dir / MANIFEST_NAME, out_dir / SHARDS_DIR
    owned = owned_files(out_dir)
    names = {f"{shards[pos].name}.tar" for pos in kept_by_shard}
    refuse_unowned(folder, names | {INDEX_NAME}, owned)
    _write_manifest(manifest, table, meta, owned | names)
    written = write_kept_shards(folder, shards, kept_by_shard, tables, owned)
    if owned - names - {INDEX_NAME}:
        _write_manifest(manifest, table, meta, names)
    return manifest, written


def _fingerprint(shard: InputShard, table: pa.Table, kept: dict[str, str]) -> str:
    meta = json.loads(table.schema.metadata[b"curation"])
    doc = {"format": FORMAT, "input": meta["input"], "url": shard.url, "kept": sorted(kept.items())}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def write_kept_shards(folder: Path, shards: Sequence[InputShard], kept_by_shard: dict[int, dict[str, str]],
                      tables: Sequence[pa.Table], owned: set[str] = frozenset()) -> list[str]:
    """One tar per input shard that kept anything (its samples in input order, every member copied under the
    sample's manifest key) and an index.json. A tar whose content is already there is kept; of the other tars
    only those in owned (what curate wrote here before) are deleted."""
    folder.mkdir(parents=True, exist_ok=True)
    index_file = folder / INDEX_NAME
    try:
        old = {e["url"]: e for e in json.loads(index_file.read_text())["shardlist"]}
    except (OSError, ValueError, KeyError):
        old = {}
    entries = []
    for pos in sorted(kept_by_shard):
        shard, kept = shards[pos], kept_by_shard[pos]
        name = f"{shard.name}.tar"
        fp = _fingerprint(shard, tables[pos], kept)
        prev = old.get(name)
        if prev and prev.get("fingerprint") == fp and (folder / name).is_file() and \
                (folder / name).stat().st_size == prev.get("filesize"):
            entries.append(prev)
            continue
        entries.append({"url": name, "nsamples": len(kept), "fingerprint": fp, **_write_tar(folder / name, shard,
                                                                                              kept)})
    doc = {"format": FORMAT, "nsamples": sum(e["nsamples"] for e in entries), "shardlist": entries}
    write_atomic(index_file, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    live = {e["url"] for e in entries}
    for name in sorted(owned - live - {INDEX_NAME}):
        (folder / name).unlink(missing_ok=True)
    return sorted(live)


def _write_tar(dest: Path, shard: InputShard, kept: dict[str, str]) -> dict:
    n = 0
    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        out = HashingWriter(fh)
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
            for local_key, sample in keyed_samples(tar_samples([{"url": shard.url}])):
                new_key = kept.get(local_key)
                if new_key is None:
                    continue
                for ext in sorted(k for k in sample if not k.startswith("__")):
                    data = bytes(sample[ext])
                    tar.addfile(tar_member_info(f"{new_key}.{ext}", len(data)), io.BytesIO(data))
                n += 1
    if n != len(kept):
        dest.unlink(missing_ok=True)
        raise RuntimeError(f"{shard.url} changed since it was scored: {n} of {len(kept)} kept samples found")
    return {"filesize": out.n, "sha256": out.sha.hexdigest()}


def score_histogram(values: np.ndarray, bins: int = 20) -> tuple[list[int], list[float]]:
    """Counts and edges of the scores over 1..10 (for metadata and the report)."""
    counts, edges = np.histogram(values[~np.isnan(values)], bins=bins, range=(1.0, 10.0))
    return counts.tolist(), [round(float(e), 3) for e in edges]


def describe_failures(failed: dict[str, str]) -> str:
    return "; ".join(f"{u} ({why})" for u, why in sorted(failed.items()))
