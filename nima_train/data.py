"""The training reader: WebDataset shards -> batches of (image tensor (B,3,224,224), target tensor (B,10)).

Shards are written by the `shards` asset group (ingest/shards.py and ingest/shard_writer.py) under
$AESTHETIC_HOME/shards/<dataset>/<split>/ with an index.json per split. Typical use:

    urls = shard_urls_for(home / "shards", ["ava", "sac"], "train")
    loader = make_loader(urls, train=True, batch_size=64, num_workers=8, epoch_samples=200_000)
    for epoch in range(n):
        set_epoch(loader, epoch)
        for images, targets in loader: ...

Shard order is shuffled identically on every rank (same seed and epoch), then `split_by_node` and
`split_by_worker` give each rank and DataLoader worker a disjoint slice, and a sample shuffle buffer seeded from
(seed, epoch, rank, worker) mixes samples across shards, so the same seed gives the same sample order. In
resampled mode (DDP training) the shard stream is drawn with replacement and every rank yields exactly
epoch_samples // (world_size * batch_size) batches, so no rank waits on another at the end of an epoch. A URL is
a local path (or file: URL), http(s)://, or `pipe:` + a command that writes the tar to stdout (e.g.
`pipe:aws s3 cp s3://b/x.tar -`). Resolving shards runs no command unless the operator allows it: `pipe:` needs
allow_pipe (--allow-pipe), and an index fetched over http(s) may list http(s) shards only.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urljoin, urlparse
from urllib.request import url2pathname

import orjson
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset
from torchvision.transforms import v2

from common.regular_files import open_regular, read_regular_file
from common.remote import ReadLimits, read_capped
from common.shard_format import INDEX_NAME
from nima_train.batch_memory import RecycledBatch, worker_ring
from nima_train.tarstream import DEFAULT_LIMITS, open_shard_stream, tar_members, tar_samples
from nima_train.transforms import (
    center_crop,
    center_crop_params,
    eval_transform,
    normalize,
    random_crop_flip,
    random_crop_params,
    resize_short_side,
    train_transform,
)

try:  # deprecated since torchvision 0.29 (for TorchCodec); when a release drops it, PIL decodes everything
    from torchvision.io import ImageReadMode, decode_jpeg

    # The operator under torchvision.io.decode_jpeg: the Python wrapper adds a deprecation warning and an API-usage
    # log to every call, a cost the loader would pay per image.
    _DECODE_JPEG_OP = torch.ops.image.decode_jpeg
except (ImportError, AttributeError, RuntimeError):  # pragma: no cover - depends on the installed torchvision
    decode_jpeg = None


log = logging.getLogger(__name__)

Batch = RecycledBatch | tuple[torch.Tensor, torch.Tensor]  # (images, targets); see BatchBuilder.batch


PIPE_FLAG = "--allow-pipe"


class ShardURLRefused(ValueError):
    """A shard URL this run may not open; str(exc) names the URL, where it came from and what would allow it."""


def _scheme(ref: str) -> str:
    return urlparse(ref).scheme.lower()


def _is_remote(ref: str) -> bool:
    """Fetched over the network: http(s) only. A file: URL is local (see _local_path)."""
    return _scheme(ref) in ("http", "https")


def _local_path(ref: str) -> Path:
    """A local path given as a path or as a file: URL."""
    return Path(url2pathname(urlparse(ref).path)) if _scheme(ref) == "file" else Path(ref)


def refuse_pipe(url: str, allow_pipe: bool, source: str) -> None:
    """ShardURLRefused for a `pipe:` URL (a shell command) unless the operator allowed pipes."""
    if url.startswith("pipe:") and not allow_pipe:
        raise ShardURLRefused(
            f"refusing shard URL {url!r} from {source}: pipe: URLs run a shell command; "
            f"pass {PIPE_FLAG} (allow_pipe=True) to run it"
        )


def _listed_url(index: str, url: str, allow_pipe: bool) -> str:
    """One index entry resolved against the index's location, if that kind of index may list it.

    A fetched index names http(s) shards only: whoever serves it must not choose local files or commands.
    A local index may also name files (relative to its folder, absolute, or file: URLs) and, with allow_pipe,
    `pipe:` commands; any other scheme (webdataset's gopen would hand gs:, scp: ... to a command) is refused.
    """
    if _is_remote(index):
        resolved = urljoin(index, url)
        if not _is_remote(resolved):
            raise ShardURLRefused(
                f"refusing shard URL {url!r} listed by {index}: an index fetched over http(s) may list only "
                f"http(s) URLs ({PIPE_FLAG} does not apply to fetched indexes)"
            )
        return resolved
    if url.startswith("pipe:"):
        refuse_pipe(url, allow_pipe, f"index {index}")
        return url
    if _is_remote(url):
        return url
    scheme = _scheme(url)
    if scheme not in ("", "file"):
        raise ShardURLRefused(
            f"refusing shard URL {url!r} listed by {index}: a local index may list paths, file:, http(s) and "
            f"(with {PIPE_FLAG}) pipe: URLs, not {scheme}:"
        )
    path = _local_path(url)
    return str(path if path.is_absolute() else _local_path(index).parent / path)


def _index_bytes(index: str | Path, limits: ReadLimits = DEFAULT_LIMITS) -> bytes:
    ref = str(index)
    if _is_remote(ref):
        return read_capped(ref, limits, limits.max_index_bytes, "max_index_bytes")
    return read_regular_file(_local_path(ref))


def load_index(index: str | Path, limits: ReadLimits = DEFAULT_LIMITS) -> dict:
    """An index.json from a local path (or file: URL) or an http(s) URL (RemoteError past limits)."""
    return json.loads(_index_bytes(index, limits))


def shard_urls(index: str | Path, allow_pipe: bool = False, limits: ReadLimits = DEFAULT_LIMITS) -> list[str]:
    """The shard URLs an index lists, resolved against the index's own location (folder or URL); ShardURLRefused
    for an entry that kind of index may not list (see _listed_url)."""
    ref = str(index)
    return [_listed_url(ref, entry["url"], allow_pipe) for entry in load_index(ref, limits)["shardlist"]]


def index_path(shards_root: str | Path, dataset: str, split: str) -> str:
    """Where the index of dataset/split lives under a shards root (a folder or an http base URL)."""
    root = str(shards_root)
    if _is_remote(root):
        return urljoin(root.rstrip("/") + "/", f"{dataset}/{split}/{INDEX_NAME}")
    return str(_local_path(root) / dataset / split / INDEX_NAME)


def shard_urls_for(shards_root: str | Path, datasets: str | Sequence[str], split: str,
                   allow_pipe: bool = False, limits: ReadLimits = DEFAULT_LIMITS) -> list[str]:
    """Expand one or more datasets' split into shard URLs, via their index files."""
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    urls: list[str] = []
    for name in names:
        urls += shard_urls(index_path(shards_root, name, split), allow_pipe, limits)
    return urls


def total_samples(indexes: Sequence[str | Path]) -> int:
    return sum(int(load_index(i)["nsamples"]) for i in indexes)


class ShardList(IterableDataset):
    """Shard URLs in an order fixed by (seed, epoch): the same on every rank, so node/worker splits are disjoint.

    resampled=True draws URLs with replacement forever (the epoch length is set on the loader).
    """

    def __init__(self, urls: Sequence[str], shuffle: bool = True, resampled: bool = False, seed: int = 0) -> None:
        super().__init__()
        if not urls:
            raise ValueError("no shard URLs given (is the split empty, or the index missing?)")
        self.urls = list(urls)
        self.shuffle = shuffle
        self.resampled = resampled
        self.seed = seed
        self.epoch = 0

    def __iter__(self) -> Iterator[dict]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        if self.resampled:
            while True:
                yield {"url": self.urls[rng.randrange(len(self.urls))]}
        urls = list(self.urls)
        if self.shuffle:
            rng.shuffle(urls)
        for url in urls:
            yield {"url": url}


class SampleShuffle:
    """The pipeline stage that shuffles samples through a buffer of `bufsize`, seeded by the shard list's
    (seed, epoch) and this process's rank and DataLoader worker: a run with the same seed sees the same samples
    in the same order, and each epoch, rank and worker a different one (webdataset's `shuffle` seeds from the
    clock). Output starts once `initial` samples are in; the buffer then grows by one for every two samples
    taken until it holds `bufsize`, after which each new sample takes the place of a random one it sends on.
    """

    def __init__(self, shards: ShardList, bufsize: int, initial: int) -> None:
        self.shards, self.bufsize, self.initial = shards, bufsize, min(initial, bufsize)

    def __call__(self, samples: Iterator[dict]) -> Iterator[dict]:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        rng = random.Random(f"{self.shards.seed}:{self.shards.epoch}:{rank}:{worker}")
        draw = rng.random  # int(draw() * n): 93 ns against randint(0, n - 1)'s 293 (timeit), paid per sample
        buf: list[dict] = []
        taken = 0
        for sample in samples:
            if len(buf) < self.bufsize:
                buf.append(sample)
                taken += 1
                if len(buf) < self.initial or taken % 2:
                    continue  # fill to `initial` first; then, while growing, send one on for every two taken
                k = int(draw() * len(buf))
                out = buf[k]
                buf[k] = buf[-1]
                buf.pop()
            else:
                k = int(draw() * self.bufsize)
                out = buf[k]
                buf[k] = sample
            yield out
        rng.shuffle(buf)
        yield from buf


def drop_skipped(samples: Iterator[dict]) -> Iterator[dict]:
    """The pipeline stage that leaves out a sample with a member the reader skipped (over max_member_bytes),
    saying so in one log line naming the sample, its shard and the reason."""
    for sample in samples:
        if "__skipped__" in sample:
            log.warning("sample %s of %s left out: %s", sample["__key__"], sample["__url__"],
                        "; ".join(sample["__skipped__"]))
            continue
        yield sample


def decode_jpg(data: bytes | bytearray | memoryview) -> Image.Image:
    """PIL decode of the stored crop; errors propagate (a broken sample must not be silently swapped)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img if img.mode == "RGB" else img.convert("RGB")


JPEG_MAGIC = b"\xff\xd8\xff"


def jpeg_to_tensor(buffer: bytearray | memoryview) -> torch.Tensor:
    """libjpeg-turbo decode of JPEG bytes in a writable buffer (no copy) to a uint8 RGB (3,H,W) tensor; raises
    RuntimeError for anything it cannot decode. The layout in memory is (H,W,3), as libjpeg-turbo writes it."""
    return _DECODE_JPEG_OP(torch.frombuffer(buffer, dtype=torch.uint8), ImageReadMode.RGB.value, False)


def decode_image(data: bytes | bytearray | memoryview) -> torch.Tensor:
    """The stored crop as a uint8 RGB (3,H,W) tensor: libjpeg-turbo straight to CHW for JPEG, PIL for the rest.

    Anything decode_jpeg refuses (not JPEG, a variant it lacks, a broken file) goes through PIL, so a broken
    sample still raises PIL's error (never silently swapped) and other formats still load. A writable buffer (a
    local shard's memoryview, a bytearray) is decoded in place; bytes are copied first, as torch.frombuffer warns
    on read-only memory.
    """
    if decode_jpeg is not None and data[:3] == JPEG_MAGIC:
        writable = isinstance(data, bytearray) or (isinstance(data, memoryview) and not data.readonly)
        try:
            return jpeg_to_tensor(data if writable else bytearray(data))
        except RuntimeError:
            pass
    return v2.functional.pil_to_tensor(decode_jpg(data))


def target_values(data: bytes | memoryview) -> list[float]:
    """The 10-bin training target from a sample's json.

    orjson parses the json (a memoryview as is) several times faster than the json module, a cost every sample
    pays in the loader workers (docs/shards.md)."""
    target = orjson.loads(data)["target"]
    if len(target) != 10:
        raise ValueError(f"sample target has {len(target)} bins, expected 10")
    return target


def split_transform(train: bool, image_size: int = 224) -> tuple[v2.Compose, v2.Compose]:
    """The shared train/eval transform cut in two: (uint8 crop/flip for loader workers, float+normalise).

    For PIL images or tensors; make_dataset's default path uses the equivalent tensor functions of
    nima_train/transforms.py (random_crop_flip / center_crop, then normalize) instead.

    Shipping uint8 batches from workers moves 4x fewer bytes between processes and lets the GPU do the
    float conversion and normalisation: apply the second part to the batch after .to(device).
    """
    full = train_transform(image_size) if train else eval_transform(image_size)
    late = (v2.ToDtype, v2.Normalize)
    return (
        v2.Compose([t for t in full.transforms if not isinstance(t, late)]),
        v2.Compose([t for t in full.transforms if isinstance(t, late)]),
    )


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _sample_fields(sample: dict) -> tuple[bytes, list[float]]:
    """The image bytes and the target of a sample; a missing member or json field is an error naming the sample."""
    try:
        return sample["jpg"], target_values(sample["json"])
    except KeyError as exc:
        raise ValueError(f"sample {sample.get('__key__')!r} in {sample.get('__url__')} lacks {exc}") from exc


def _sample_tuple(sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
    jpg, target = _sample_fields(sample)
    return decode_image(jpg), torch.tensor(target, dtype=torch.float32)


class BatchBuilder:
    """Crops decoded images straight into one batch buffer: the default path's crop, flip and collation in one copy.

    The buffer is (B, size, size, 3) in memory, the layout decode_jpeg decodes into, so each crop is a run of
    contiguous row copies (a CHW stack of those crops is a strided gather, several times slower), and uint8 batches
    come out as (B, 3, size, size) views in channels_last memory format, which the model runs on anyway on a GPU.
    train: random crop + flip (random_crop_params); eval: short side to `resize`, then the centre crop. Images
    smaller than the crop take the per-image functions (random_crop_flip / center_crop pad them like v2 does).
    """

    def __init__(self, capacity: int, size: int, train: bool, uint8: bool = True, resize: int = 256,
                 recycle: bool = True) -> None:
        self.size, self.train, self.uint8, self.resize = size, train, uint8, resize
        # recycle=False: a fresh buffer per batch (what benchmarks/bench_loader.py --recycling compares against)
        self._ring = worker_ring() if recycle else None
        self._slot = -1
        crops = (capacity, size, size, 3)
        if uint8 and self._ring is not None:  # the crops are the batch: crop straight into a ring slot
            self._images, self._slot = self._ring.take(crops, torch.uint8)
        else:
            self._images = torch.empty(crops, dtype=torch.uint8)
        self._targets: list[list[float]] = []
        self._draws = torch.rand(capacity, 3).tolist() if train else None

    def __len__(self) -> int:
        return len(self._targets)

    def add(self, image: torch.Tensor, target: list[float]) -> None:
        """Crop a uint8 (3, H, W) image into the next slot of the batch."""
        out = self._images[len(self._targets)]
        size = self.size
        if not self.train:
            image = resize_short_side(image, self.resize)
        height, width = image.shape[-2:]
        if height < size or width < size:
            crop = random_crop_flip(image, size) if self.train else center_crop(image, size, self.resize)
            out.copy_(crop.permute(1, 2, 0))
        else:
            if self._draws is None:
                top, left, flip = center_crop_params(height, width, size)
            else:
                top, left, flip = random_crop_params(height, width, size, self._draws[len(self._targets)])
            window = image.permute(1, 2, 0)[top : top + size, left : left + size]
            out.copy_(window.flip(1) if flip else window)
        self._targets.append(target)

    def batch(self) -> Batch:
        """(images (n, 3, size, size), targets (n, 10)): uint8 as cropped, or float32 ImageNet-normalised.

        In a DataLoader worker the images are in a slot of the worker's ring (nima_train/batch_memory.py) and the
        pair comes as a RecycledBatch, which unpacks the same and reaches the main process as the plain pair.
        """
        n = len(self._targets)
        images = self._images[:n].permute(0, 3, 1, 2)
        if not self.uint8:
            # Float batches are plain NCHW: normalising into that layout is twice as fast as into channels_last.
            shape = (n, 3, self.size, self.size)
            if self._ring is None:
                images = normalize(images, out=torch.empty(shape))
            else:
                out, self._slot = self._ring.take(shape, torch.float32)
                images = normalize(images, out=out)
        targets = torch.tensor(self._targets, dtype=torch.float32)
        return (images, targets) if self._ring is None else self._ring.batch(images, targets, self._slot)


def crop_batches(
    samples: Iterator[dict], train: bool, batch_size: int, image_size: int, partial: bool, uint8: bool,
    recycle: bool = True,
) -> Iterator[Batch]:
    """The default path's pipeline stage: samples in, (images, targets) batches out (see BatchBuilder).

    Samples are decoded only once a whole batch of them is in hand, so the remainder a training worker drops
    at the end of its shards (partial=False) costs no decoding.
    """
    pending: list[tuple[bytes, list[float]]] = []
    for sample in samples:
        pending.append(_sample_fields(sample))
        if len(pending) == batch_size:
            yield _build_batch(pending, train, image_size, uint8, recycle)
            pending = []
    if pending and partial:
        yield _build_batch(pending, train, image_size, uint8, recycle)


def _build_batch(
    pending: list[tuple[bytes, list[float]]], train: bool, image_size: int, uint8: bool, recycle: bool = True
) -> Batch:
    builder = BatchBuilder(len(pending), image_size, train, uint8, recycle=recycle)
    for jpg, target in pending:
        builder.add(decode_image(jpg), target)
    return builder.batch()


def make_dataset(
    urls: Sequence[str],
    train: bool,
    batch_size: int = 64,
    image_size: int = 224,
    shuffle_buffer: int = 2000,
    resampled: bool = False,
    seed: int = 0,
    transform: Callable | None = None,
    uint8: bool = False,
    recycle_batches: bool = True,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> wds.DataPipeline:
    """The batched pipeline; train: shard shuffle + sample shuffle + random crop/flip, eval: in order + centre crop.

    The default path (transform=None) crops the decoded uint8 tensor into the batch with nima_train/transforms.py's
    crop parameters (the same crops as train_transform/eval_transform, without PIL) and normalises whole batches;
    its uint8 image batches are channels_last in memory. uint8=True yields uint8 image batches: normalise them with
    `normalize` (or split_transform(train)[1]) on the device. A custom `transform` gets each decoded image as a
    uint8 (3,H,W) tensor (torchvision v2 transforms take it as they take a PIL image) and its output is batched
    as is. `limits` bounds what is read of http(s) and pipe: shards (docs/shards.md, "Remote input").
    """
    shards = ShardList(urls, shuffle=train, resampled=resampled, seed=seed)
    stages: list = [
        shards,
        wds.split_by_node,
        wds.split_by_worker,
        partial(tar_samples, limits=limits),
        drop_skipped,
    ]
    if train and shuffle_buffer > 0:
        stages.append(SampleShuffle(shards, shuffle_buffer, initial=500))
    # A short last batch is fine for eval; training keeps every step the same shape.
    if transform is None:
        stages.append(partial(crop_batches, train=train, batch_size=batch_size, image_size=image_size,
                              partial=not train, uint8=uint8, recycle=recycle_batches))
    else:
        stages += [
            wds.map(_sample_tuple),
            wds.map_tuple(transform, _identity),
            wds.batched(batch_size, partial=not train),
        ]
    return wds.DataPipeline(*stages)


def batch_to_device(
    images: torch.Tensor, device: torch.device, memory_format: torch.memory_format = torch.preserve_format
) -> torch.Tensor:
    """A loader's image batch on `device` as float32, ImageNet-normalised: uint8 batches are normalised there,
    after the copy, so 4x fewer bytes cross from worker to host to device and the GPU does the arithmetic."""
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    return normalize(images) if images.dtype == torch.uint8 else images


def make_loader(
    urls: Sequence[str],
    train: bool,
    batch_size: int = 64,
    num_workers: int = 4,
    image_size: int = 224,
    shuffle_buffer: int = 2000,
    resampled: bool = False,
    epoch_samples: int | None = None,
    seed: int = 0,
    world_size: int | None = None,
    pin_memory: bool = False,
    transform: Callable | None = None,
    uint8: bool = False,
    recycle_batches: bool = True,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> wds.WebLoader:
    """A WebLoader of (images, targets) batches. resampled=True needs epoch_samples (per epoch, all ranks).
    recycle_batches=False gives every batch fresh shared memory instead of a recycled slot (batch_memory.py)."""
    dataset = make_dataset(urls, train, batch_size, image_size, shuffle_buffer, resampled, seed, transform, uint8,
                           recycle_batches, limits)
    loader = wds.WebLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,  # workers are re-forked each epoch and pick up set_epoch()
        prefetch_factor=4 if num_workers else None,
    )
    if resampled:
        if not epoch_samples:
            raise ValueError("resampled mode streams forever: give epoch_samples")
        world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
        loader = loader.with_epoch(max(1, epoch_samples // (world * batch_size)))
    elif epoch_samples:
        loader = loader.with_epoch(max(1, epoch_samples // batch_size))
    return loader


def _shard_list(loader_or_dataset: object) -> ShardList:
    pipeline = loader_or_dataset
    if isinstance(pipeline, wds.WebLoader):
        pipeline = pipeline.pipeline[0].dataset  # WebLoader wraps a DataLoader over our DataPipeline
    first = pipeline.pipeline[0]
    if not isinstance(first, ShardList):
        raise TypeError(f"not a make_loader/make_dataset pipeline: starts with {type(first).__name__}")
    return first


def set_epoch(loader_or_dataset: object, epoch: int) -> None:
    """Reshuffle shards (identically on every rank) for the next epoch."""
    _shard_list(loader_or_dataset).epoch = epoch


# ----------------------------------------------------------------------------- splits as the shards group writes them


@dataclass
class ShardSet:
    """Shard URLs to read and what they hold: sample count and the sha256 of each index read."""

    urls: list[str] = field(default_factory=list)
    n_samples: int = 0
    index_sha256: dict[str, str] = field(default_factory=dict)


def _add_index(out: ShardSet, index: str, allow_pipe: bool, limits: ReadLimits) -> None:
    raw = _index_bytes(index, limits)  # read once: what is listed, counted and hashed is one version of the file
    doc = json.loads(raw)
    out.urls += [_listed_url(index, entry["url"], allow_pipe) for entry in doc["shardlist"]]
    out.n_samples += int(doc["nsamples"])
    out.index_sha256[index] = hashlib.sha256(raw).hexdigest()


def _stream_samples(url: str, limits: ReadLimits) -> int:
    """The samples (json members) of one shard read as a stream: http(s) or pipe:, opened as the reader opens it."""
    stream = open_shard_stream(url, limits)
    try:
        return sum(1 for name, _ in tar_members(stream, url, limits.max_member_bytes) if name.endswith(".json"))
    finally:
        stream.close()


def resolve_shards(paths: Sequence[str | Path], allow_pipe: bool = False,
                   limits: ReadLimits = DEFAULT_LIMITS) -> ShardSet:
    """Split folders or their index.json (local paths, file: or http(s) URLs), as the shards group writes them,
    and single shards: local .tar files, http(s) .tar URLs and, with allow_pipe, `pipe:` commands. A single
    shard given by URL is read once here to count its samples. ShardURLRefused for a `pipe:` URL without
    allow_pipe, given here or listed by a local index, and for anything but http(s) listed by a fetched index.
    What is fetched stays within `limits` (RemoteError, one line, past a cap, a read timeout or the deadline)."""
    out = ShardSet()
    for ref in map(str, paths):
        if ref.startswith("pipe:") or (_is_remote(ref) and urlparse(ref).path.endswith(".tar")):
            refuse_pipe(ref, allow_pipe, "the shards given")
            out.urls.append(ref)
            out.n_samples += _stream_samples(ref, limits)
            continue
        if _is_remote(ref):
            _add_index(out, ref if urlparse(ref).path.endswith(INDEX_NAME) else f"{ref.rstrip('/')}/{INDEX_NAME}",
                       allow_pipe, limits)
            continue
        path = _local_path(ref)
        index = path / INDEX_NAME if path.is_dir() else path
        if index.name == INDEX_NAME and index.exists():
            _add_index(out, str(index), allow_pipe, limits)
        elif path.suffix == ".tar" and path.exists():
            out.urls.append(str(path))
            with open_regular(path) as fh, tarfile.open(fileobj=fh) as tar:  # headers only: a .json per sample
                out.n_samples += sum(1 for m in tar if m.name.endswith(".json"))
        else:
            raise FileNotFoundError(f"no shards at {path} (expected a split folder with {INDEX_NAME} or a .tar)")
    return out


def loader_transform(crop: int, resize: int, train: bool) -> Callable | None:
    """The per-image transform to give make_loader; None selects the reader's tensor crop path.

    At resize 256 (the stored crop size: the real GPU setting) the default path does the same crops as
    train_transform/eval_transform (random crop + flip / centre crop) by slicing the decoded tensor and
    normalises whole batches, which is much cheaper per image. Other sizes need a resize first: the v2 path.
    """
    if resize == 256:
        return None
    if train:  # smaller inputs: shrink the whole stored crop first, then crop as usual
        return v2.Compose([v2.Resize(resize, antialias=True), train_transform(crop)])
    return eval_transform(crop, resize)


def split_loader(urls: Sequence[str], *, train: bool, crop: int, resize: int, batch_size: int, workers: int,
                 shuffle_buffer: int = 0, seed: int = 0, world_size: int = 1, resampled: bool = False,
                 epoch_samples: int | None = None) -> wds.WebLoader:
    """(images, targets) batches of a training or evaluation split at the given input size, as training and
    evaluation read them: uint8 batches (normalised on the device) on the tensor crop path, float32 otherwise."""
    transform = loader_transform(crop, resize, train)
    return make_loader(
        list(urls), train=train, batch_size=batch_size, num_workers=workers, image_size=crop,
        shuffle_buffer=shuffle_buffer, resampled=resampled, epoch_samples=epoch_samples, seed=seed,
        world_size=world_size, transform=transform, uint8=transform is None,
    )
