"""The training reader over real shards: shapes, labels, node/worker splits, resampled epochs, http and pipe: URLs."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import webdataset as wds
from PIL import Image

from assets.shards import ava_shards, sac_shards
from nima_train.data import (
    SampleShuffle,
    ShardList,
    decode_image,
    decode_jpg,
    index_path,
    make_dataset,
    make_loader,
    set_epoch,
    shard_urls,
    shard_urls_for,
    split_transform,
)
from nima_train.transforms import eval_transform, normalize, random_crop_flip
from tests.helpers.http import quiet_file_server, serving
from tests.helpers.shards import add_images, materialize_shards
from warehouse.db import connect

N_AVA, N_SAC = 30, 18


@pytest.fixture(scope="module")
def shards_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("reader") / "home"
    add_images(home, "ava", [str(i) for i in range(N_AVA)], seed=11)
    add_images(home, "sac", [str(i) for i in range(N_SAC)], seed=12)
    assert materialize_shards(home, [ava_shards, sac_shards], {"max_samples_per_shard": 3}).success
    return home


def warehouse_targets(home: Path, split: str, dataset: str | None = None) -> list[tuple[float, ...]]:
    with connect(home / "warehouse.duckdb") as conn:
        rows = conn.execute(
            "SELECT h.p_normalized FROM histograms h JOIN images i USING (dataset, image_id)"
            " WHERE i.split = ? AND (? IS NULL OR dataset = ?)",
            [split, dataset, dataset],
        ).fetchall()
    return sorted(tuple(round(x, 5) for x in r[0]) for r in rows)


def seen_targets(batches: list) -> list[tuple[float, ...]]:
    return sorted(tuple(round(x, 5) for x in row.tolist()) for _, t in batches for row in t)


def test_eval_loader_yields_every_sample_of_both_datasets_once_as_normalised_tensors(shards_home: Path) -> None:
    urls = shard_urls_for(shards_home / "shards", ["ava", "sac"], "train")
    batches = list(make_loader(urls, train=False, batch_size=4, num_workers=0))
    images, targets = batches[0]
    assert images.shape == (4, 3, 224, 224) and images.dtype == torch.float32
    assert targets.shape == (4, 10) and torch.allclose(targets.sum(1), torch.ones(4), atol=1e-6)
    assert -3 < float(images.mean()) < 3 and float(images.std()) > 0.1  # ImageNet-normalised, not 0..255
    assert seen_targets(batches) == warehouse_targets(shards_home, "train")


def test_uint8_batches_normalised_on_device_equal_the_float_pipeline(shards_home: Path) -> None:
    urls = shard_urls(index_path(shards_home / "shards", "sac", "val"))
    (floats, t1), *_ = make_loader(urls, train=False, batch_size=4, num_workers=0)
    (raw, t2), *_ = make_loader(urls, train=False, batch_size=4, num_workers=0, uint8=True)
    assert raw.dtype == torch.uint8 and torch.equal(t1, t2)
    assert torch.allclose(split_transform(train=False)[1](raw), floats, atol=1e-5)


def test_train_loader_with_two_workers_splits_shards_so_each_sample_comes_once(shards_home: Path) -> None:
    urls = shard_urls_for(shards_home / "shards", ["ava", "sac"], "train")
    loader = make_loader(urls, train=True, batch_size=1, num_workers=2, shuffle_buffer=10, seed=3)
    assert seen_targets(list(loader)) == warehouse_targets(shards_home, "train")


@pytest.mark.parametrize("uint8", [True, False], ids=["uint8", "float32"])
def test_batches_kept_from_worker_loaders_equal_the_in_process_ones(shards_home: Path, uint8: bool) -> None:
    # Workers recycle batch memory (nima_train/batch_memory.py); keeping every batch must not let a later batch
    # overwrite an earlier one, even past the ring's slots (about 20 batches per worker here).
    urls = shard_urls_for(shards_home / "shards", ["ava", "sac"], "train")

    def by_target(workers: int) -> dict[tuple[float, ...], torch.Tensor]:
        batches = list(make_loader(urls, train=False, batch_size=1, num_workers=workers, uint8=uint8))
        assert all(type(batch) is list for batch in batches)  # as with no workers
        return {tuple(round(x, 5) for x in t[0].tolist()): images[0] for images, t in batches}

    kept, expected = by_target(2), by_target(0)
    assert len(kept) == len(warehouse_targets(shards_home, "train")) > 2 * 8
    assert kept.keys() == expected.keys()
    assert all(torch.equal(kept[k], expected[k]) for k in kept)


def test_split_by_node_gives_ranks_disjoint_shards_that_cover_the_split(
    shards_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = shard_urls(index_path(shards_home / "shards", "ava", "train"))
    assert len(urls) >= 4
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        per_rank.append(seen_targets(list(make_dataset(urls, train=True, batch_size=1, seed=5))))
    assert per_rank[0] and per_rank[1]
    assert sorted(per_rank[0] + per_rank[1]) == warehouse_targets(shards_home, "train", "ava")
    assert not set(per_rank[0]) & set(per_rank[1])


def orders_by_epoch(urls: list[str], shuffle_buffer: int, seed: int, epochs: tuple[int, ...]) -> dict[int, list]:
    """The targets in the order one dataset yields them, per epoch (a list of passes for an epoch run twice)."""
    ds = make_dataset(urls, train=True, batch_size=1, shuffle_buffer=shuffle_buffer, seed=seed)
    order: dict[int, list] = {}
    for epoch in epochs:
        set_epoch(ds, epoch)
        order.setdefault(epoch, []).append([tuple(t[0].tolist()) for _, t in ds])
    return order


@pytest.mark.parametrize("shuffle_buffer", [0, 8], ids=["shards-only", "with-sample-buffer"])
def test_set_epoch_reshuffles_identically_for_a_given_seed(shards_home: Path, shuffle_buffer: int) -> None:
    urls = shard_urls(index_path(shards_home / "shards", "ava", "train"))
    order = orders_by_epoch(urls, shuffle_buffer, seed=9, epochs=(0, 1, 0))
    assert order[0][0] == order[0][1]
    assert order[0][0] != order[1][0] and sorted(order[0][0]) == sorted(order[1][0])


def test_the_sample_buffer_moves_samples_across_shard_boundaries(shards_home: Path) -> None:
    urls = shard_urls(index_path(shards_home / "shards", "ava", "train"))
    assert orders_by_epoch(urls, 8, seed=4, epochs=(0,)) != orders_by_epoch(urls, 0, seed=4, epochs=(0,))


@pytest.mark.parametrize("n", [0, 3, 10, 25, 400])
def test_sample_shuffle_sends_on_every_sample_once(n: int) -> None:
    shuffle = SampleShuffle(ShardList(["unused"]), bufsize=20, initial=5)
    out = list(shuffle(iter(range(n))))
    assert sorted(out) == list(range(n))
    if n >= 25:
        assert out != list(range(n))
        # Output starts once `initial` are in, and the buffer never holds more than bufsize: by the k-th sample
        # sent on, at most k + 1 + 20 have been taken.
        assert out[0] <= 5 and all(sample <= k + 20 for k, sample in enumerate(out))


def test_resampled_mode_gives_every_rank_the_same_fixed_number_of_batches(
    shards_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = shard_urls_for(shards_home / "shards", ["ava", "sac"], "train")
    counts = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        loader = make_loader(urls, train=True, batch_size=4, num_workers=2, resampled=True, epoch_samples=96)
        batches = list(loader)
        assert all(images.shape == (4, 3, 224, 224) for images, _ in batches)
        counts.append(len(batches))
    assert counts == [96 // (2 * 4)] * 2
    with pytest.raises(ValueError, match="epoch_samples"):
        make_loader(urls, train=True, resampled=True)


@pytest.fixture
def http_base(shards_home: Path) -> Iterator[str]:
    with serving(quiet_file_server(shards_home / "shards")) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/"


def test_shards_read_over_http_and_pipe_urls_match_local_ones(shards_home: Path, http_base: str) -> None:
    local = shard_urls_for(shards_home / "shards", "sac", "val")
    remote = shard_urls_for(http_base, "sac", "val")
    assert all(u.startswith(http_base) for u in remote) and len(remote) == len(local)
    piped = [f"pipe:cat {u}" for u in local]
    results = [
        seen_targets(list(make_loader(u, train=False, batch_size=2, num_workers=0))) for u in (local, remote, piped)
    ]
    assert results[0] == results[1] == results[2] == warehouse_targets(shards_home, "val", "sac")
    assert len(results[0]) > 0


def test_missing_index_and_empty_url_list_fail_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        shard_urls_for(tmp_path, "ava", "train")
    with pytest.raises(ValueError, match="no shard URLs"):
        make_dataset([], train=True)


def test_tensor_decode_and_centre_crop_give_the_pil_path_pixels_within_one_level(shards_home: Path) -> None:
    urls = shard_urls(index_path(shards_home / "shards", "ava", "train"))
    jpgs = [s["jpg"] for s in wds.WebDataset(urls, shardshuffle=False)]
    (raw, _), *_ = make_loader(urls, train=False, batch_size=len(jpgs), num_workers=0, uint8=True)
    pil_crop, pil_full = split_transform(train=False)[0], eval_transform(224)
    via_pil = torch.stack([torch.as_tensor(pil_crop(decode_jpg(b))) for b in jpgs])
    assert raw.shape == via_pil.shape == (len(jpgs), 3, 224, 224)
    assert int((raw.int() - via_pil.int()).abs().max()) <= 1
    floats = torch.stack([pil_full(decode_jpg(b)) for b in jpgs])
    assert torch.allclose(normalize(raw), floats, atol=1.01 / 255 / min(0.229, 0.224, 0.225))


def test_random_crop_flip_takes_a_uniform_224_window_flipped_half_the_time() -> None:
    rows, cols = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    image = torch.stack([rows, cols, rows]).to(torch.uint8)  # each pixel names its own position
    tops, lefts, flips = set(), set(), 0
    torch.manual_seed(0)
    for _ in range(200):
        out = random_crop_flip(image, 224)
        top, flipped = int(out[0, 0, 0]), int(out[1, 0, 0]) > int(out[1, 0, -1])
        left = int(out[1, 0, -1 if flipped else 0])
        window = image[:, top : top + 224, left : left + 224]
        assert torch.equal(out, window.flip(-1) if flipped else window)
        tops.add(top), lefts.add(left)
        flips += flipped
    assert 60 < flips < 140 and min(tops) >= 0 and max(tops) <= 32 and len(tops) > 20 and len(lefts) > 20
    assert random_crop_flip(image[:, :200, :180], 224).shape == (3, 224, 224)  # padded like v2's pad_if_needed


def _tar_of(path: Path, images: dict[str, bytes]) -> str:
    meta = json.dumps({"target": [0.1] * 10}).encode()
    with wds.TarWriter(str(path)) as sink:
        for key, data in images.items():
            sink.write({"__key__": key, "jpg": data, "json": meta})
    return str(path)


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def test_images_decode_jpeg_cannot_read_go_through_pil_and_broken_ones_still_raise(tmp_path: Path) -> None:
    rgb = Image.radial_gradient("L").resize((256, 256)).convert("RGB")
    good = {"png": _encoded(rgb, "PNG"), "grey": _encoded(rgb.convert("L"), "JPEG")}
    assert decode_image(good["png"]).shape == decode_image(good["grey"]).shape == (3, 256, 256)
    (images, _), *_ = make_dataset([_tar_of(tmp_path / "ok.tar", good)], train=False, batch_size=2, uint8=True)
    expected = torch.stack([torch.as_tensor(split_transform(False)[0](decode_jpg(good[k]))) for k in good])
    assert int((images.int() - expected.int()).abs().max()) <= 1
    jpeg = _encoded(rgb, "JPEG")
    with pytest.raises(OSError, match="truncated"):
        decode_image(jpeg[: len(jpeg) // 2])
    with pytest.raises(OSError):
        list(make_dataset([_tar_of(tmp_path / "bad.tar", {"bad": b"not an image"})], train=False))
