"""The training reader: WebDataset shards -> batches of (image tensor (B,3,224,224), target tensor (B,10)).

Shards are written by the `shards` asset group (ingest/shards.py) under $AESTHETIC_HOME/shards/<dataset>/<split>/
with an index.json per split. Typical use:

    urls = shard_urls_for(home / "shards", ["ava", "sac"], "train")
    loader = make_loader(urls, train=True, batch_size=64, num_workers=8, epoch_samples=200_000)
    for epoch in range(n):
        set_epoch(loader, epoch)
        for images, targets in loader: ...

Shard order is shuffled identically on every rank (same seed and epoch), then `split_by_node` and
`split_by_worker` give each rank and DataLoader worker a disjoint slice. In resampled mode (DDP training) the
shard stream is drawn with replacement and every rank yields exactly epoch_samples // (world_size * batch_size)
batches, so no rank waits on another at the end of an epoch. A URL is anything webdataset opens: a local path,
http(s)://, or `pipe:` + a command that writes the tar to stdout (e.g. `pipe:aws s3 cp s3://b/x.tar -`).
"""

from __future__ import annotations

import io
import json
import os
import random
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import islice
from pathlib import Path
from urllib.parse import urljoin, urlparse

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset
from torchvision.transforms import v2

from nima_train.transforms import center_crop, eval_transform, normalize, random_crop_flip, train_transform

try:  # deprecated since torchvision 0.29 (for TorchCodec); when a release drops it, PIL decodes everything
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - depends on the installed torchvision
    decode_jpeg = None

INDEX_NAME = "index.json"


def _is_remote(ref: str) -> bool:
    return urlparse(ref).scheme in ("http", "https", "file")


def load_index(index: str | Path) -> dict:
    """An index.json from a local path or an http(s) URL."""
    ref = str(index)
    if _is_remote(ref):
        with urllib.request.urlopen(ref, timeout=60) as resp:
            return json.loads(resp.read())
    return json.loads(Path(ref).read_text())


def shard_urls(index: str | Path) -> list[str]:
    """The shard URLs an index lists, resolved against the index's own location (folder or URL)."""
    ref = str(index)
    doc = load_index(ref)
    urls = []
    for entry in doc["shardlist"]:
        url = entry["url"]
        if _is_remote(url) or url.startswith("pipe:") or os.path.isabs(url):
            urls.append(url)
        elif _is_remote(ref):
            urls.append(urljoin(ref, url))
        else:
            urls.append(str(Path(ref).parent / url))
    return urls


def index_path(shards_root: str | Path, dataset: str, split: str) -> str:
    """Where the index of dataset/split lives under a shards root (a folder or an http base URL)."""
    root = str(shards_root)
    if _is_remote(root):
        return urljoin(root.rstrip("/") + "/", f"{dataset}/{split}/{INDEX_NAME}")
    return str(Path(root) / dataset / split / INDEX_NAME)


def shard_urls_for(shards_root: str | Path, datasets: str | Sequence[str], split: str) -> list[str]:
    """Expand one or more datasets' split into shard URLs, via their index files."""
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    urls: list[str] = []
    for name in names:
        urls += shard_urls(index_path(shards_root, name, split))
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


def decode_jpg(data: bytes) -> Image.Image:
    """PIL decode of the stored crop; errors propagate (a broken sample must not be silently swapped)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img if img.mode == "RGB" else img.convert("RGB")


JPEG_MAGIC = b"\xff\xd8\xff"


def decode_image(data: bytes) -> torch.Tensor:
    """The stored crop as a uint8 RGB (3,H,W) tensor: libjpeg-turbo straight to CHW for JPEG, PIL for the rest.

    Anything decode_jpeg refuses (not JPEG, a variant it lacks, a broken file) goes through PIL, so a broken
    sample still raises PIL's error (never silently swapped) and other formats still load.
    """
    if decode_jpeg is not None and data[:3] == JPEG_MAGIC:
        try:
            # bytearray: torch.frombuffer warns on read-only bytes (decode only reads; the copy is ~1% of its cost).
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError:
            pass
    return v2.functional.pil_to_tensor(decode_jpg(data))


def decode_target(data: bytes) -> torch.Tensor:
    target = json.loads(data)["target"]
    if len(target) != 10:
        raise ValueError(f"sample target has {len(target)} bins, expected 10")
    return torch.tensor(target, dtype=torch.float32)


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


def _sample_tuple(sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        return decode_image(sample["jpg"]), decode_target(sample["json"])
    except KeyError as exc:
        raise ValueError(f"sample {sample.get('__key__')!r} in {sample.get('__url__')} lacks {exc}") from exc


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
) -> wds.DataPipeline:
    """The batched pipeline; train: shard shuffle + sample shuffle + random crop/flip, eval: in order + centre crop.

    The default transforms are nima_train/transforms.py's tensor ones (random_crop_flip / center_crop on the
    decoded uint8 tensor, then `normalize` on whole batches): the same crops as train_transform/eval_transform
    without PIL. uint8=True yields uint8 image batches; normalise them with `normalize` (or
    split_transform(train)[1]) on the device. A custom `transform` gets each decoded image as a uint8 (3,H,W)
    tensor (torchvision v2 transforms take it as they take a PIL image) and its output is batched as is.
    """
    late: list = []
    if transform is None:
        transform = partial(random_crop_flip if train else center_crop, size=image_size)
        if not uint8:
            late.append(wds.map_tuple(normalize, _identity))  # one vectorised op per batch, not per image
    stages: list = [
        ShardList(urls, shuffle=train, resampled=resampled, seed=seed),
        wds.split_by_node,
        wds.split_by_worker,
        wds.tarfile_to_samples(),
    ]
    if train and shuffle_buffer > 0:
        stages.append(wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 500)))
    stages += [
        wds.map(_sample_tuple),
        wds.map_tuple(transform, _identity),
        # A short last batch is fine for eval; training keeps every step the same shape.
        wds.batched(batch_size, partial=not train),
        *late,
    ]
    return wds.DataPipeline(*stages)


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
) -> wds.WebLoader:
    """A WebLoader of (images, targets) batches. resampled=True needs epoch_samples (per epoch, all ranks)."""
    dataset = make_dataset(urls, train, batch_size, image_size, shuffle_buffer, resampled, seed, transform, uint8)
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


def take(loader: object, n: int) -> list:
    """The first n items of a loader (for smoke tests and benchmarks)."""
    return list(islice(iter(loader), n))
