"""The shard writer through the real `shards` assets: accounting, labels, keys, determinism, limits, sidecars."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import duckdb
import pytest
import webdataset as wds

from assets.shards import ava_shards, sac_shards
from common.tarwrite import FIXED_MTIME
from ingest.crops import sha256_file
from ingest.shard_writer import ShardLimits, ShardSample, sample_key, write_split
from tests.helpers.shards import SPLITS, add_images, files_bytes, materialization, materialize_shards
from warehouse.db import connect
from warehouse.shards import shard_rows

IDS = [str(i) for i in range(100, 130)] + ["7.5", "v1.2.3", "a/b", "ünï"]


def read_back(home: Path, dataset: str, split: str) -> list[dict]:
    """Every sample of a split, read with a plain webdataset.WebDataset over the index's shards."""
    folder = home / "shards" / dataset / split
    index = json.loads((folder / "index.json").read_text())
    urls = [str(folder / s["url"]) for s in index["shardlist"]]
    if not urls:
        return []
    return list(wds.WebDataset(urls, shardshuffle=False))


@pytest.fixture
def built(home: Path) -> tuple[Path, dict]:
    labels = add_images(home, "ava", IDS, seed=1)
    result = materialize_shards(home, [ava_shards], {"max_samples_per_shard": 4})
    assert result.success
    return home, labels


def test_every_image_lands_in_exactly_one_shard_of_its_split(built: tuple[Path, dict]) -> None:
    home, labels = built
    seen: dict[str, list[str]] = {}
    for split in SPLITS:
        for sample in read_back(home, "ava", split):
            doc = json.loads(sample["json"])
            assert doc["split"] == split
            seen.setdefault(doc["image_id"], []).append(sample["__url__"])
    assert sorted(seen) == sorted(IDS)
    assert all(len(urls) == 1 for urls in seen.values()), "an image appears in more than one shard"
    for image_id, (split, _) in labels.items():
        assert f"/ava/{split}/" in seen[image_id][0]


def test_shards_table_and_index_match_the_files(built: tuple[Path, dict]) -> None:
    home, _ = built
    with connect(home / "warehouse.duckdb") as conn:
        rows = shard_rows(conn, "ava")
    on_disk = sorted((home / "shards" / "ava").rglob("*.tar"))
    assert [home / r[0] for r in rows] == on_disk
    for path, split, n_samples, size, sha in rows:
        tar = home / path
        assert tar.parent.name == split
        assert tar.stat().st_size == size and sha256_file(tar) == sha
        assert n_samples == len([m for m in tarfile.open(tar).getmembers() if m.name.endswith(".json")])
        index = json.loads((tar.parent / "index.json").read_text())
        entry = next(e for e in index["shardlist"] if e["url"] == tar.name)
        assert (entry["nsamples"], entry["filesize"], entry["sha256"]) == (n_samples, size, sha)
        assert n_samples <= 4


def test_sample_json_labels_equal_the_warehouse_and_jpg_is_the_crop_file(built: tuple[Path, dict]) -> None:
    home, _ = built
    with connect(home / "warehouse.duckdb") as conn:
        truth = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT h.image_id, h.counts, h.p_normalized, h.mean, h.std, i.path FROM histograms h"
                " JOIN images i USING (dataset, image_id) WHERE dataset = 'ava'"
            ).fetchall()
        }
    n = 0
    for split in SPLITS:
        for sample in read_back(home, "ava", split):
            doc = json.loads(sample["json"])
            counts, target, mean, std, path = truth[doc["image_id"]]
            assert doc["dataset"] == "ava"
            assert doc["counts"] == list(counts)
            assert doc["target"] == pytest.approx(list(target), abs=0)
            assert (doc["mean"], doc["std"]) == (mean, std)
            assert sample["jpg"] == (home / path).read_bytes(), "jpg must be the crop's own bytes"
            n += 1
    assert n == len(IDS)


def test_keys_have_no_dots_and_stay_unique_for_ids_with_dots_and_slashes(built: tuple[Path, dict]) -> None:
    home, _ = built
    keys = [s["__key__"] for split in SPLITS for s in read_back(home, "ava", split)]
    assert len(keys) == len(set(keys)) == len(IDS)
    assert all("." not in k and "/" not in k for k in keys)
    assert sample_key("ava", "7.5") != sample_key("ava", "7_5")
    assert sample_key("ava", "7.5") == "ava_7%2E5"


def test_tar_headers_are_fixed_and_members_sorted(built: tuple[Path, dict]) -> None:
    home, _ = built
    for tar_path in (home / "shards" / "ava").rglob("*.tar"):
        members = tarfile.open(tar_path).getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert {(m.mtime, m.uid, m.gid, m.mode, m.uname, m.gname) for m in members} == {
            (FIXED_MTIME, 0, 0, 0o644, "", "")
        }


def test_rerun_keeps_every_shard_byte_identical_with_the_same_data_version(built: tuple[Path, dict]) -> None:
    home, _ = built
    before = files_bytes(home / "shards")
    first_version = None
    result = materialize_shards(home, [ava_shards], {"max_samples_per_shard": 4})
    mat = materialization(result, "ava_shards")
    assert mat.metadata["shards_written"].value == 0
    assert mat.metadata["shards_kept"].value == len([k for k in before if k.endswith(".tar")])
    assert files_bytes(home / "shards") == before
    first_version = mat.tags["dagster/data_version"]
    # A third run from scratch (shards folder deleted) rebuilds the very same bytes.
    for p in sorted((home / "shards").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    mat = materialization(materialize_shards(home, [ava_shards], {"max_samples_per_shard": 4}), "ava_shards")
    assert files_bytes(home / "shards") == before
    assert mat.tags["dagster/data_version"] == first_version


def test_target_config_switches_json_target_and_data_version(built: tuple[Path, dict]) -> None:
    home, _ = built
    plain = materialization(materialize_shards(home, [ava_shards], {"max_samples_per_shard": 4}), "ava_shards")
    soft = materialization(
        materialize_shards(home, [ava_shards], {"max_samples_per_shard": 4, "target": "p_softmax"}), "ava_shards"
    )
    assert soft.tags["dagster/data_version"] != plain.tags["dagster/data_version"]
    with connect(home / "warehouse.duckdb") as conn:
        softmax = dict(conn.execute("SELECT image_id, p_softmax FROM histograms WHERE dataset = 'ava'").fetchall())
    for sample in read_back(home, "ava", "train"):
        doc = json.loads(sample["json"])
        assert doc["target"] == list(softmax[doc["image_id"]])


def _sac_train_samples(home: Path, n: int, seed: int) -> list[ShardSample]:
    """n SAC images in the warehouse, and the train split of them as the writer's samples."""
    from warehouse.shards import labelled_images

    add_images(home, "sac", [str(i) for i in range(n)], seed=seed)
    with connect(home / "warehouse.duckdb") as conn:
        rows = labelled_images(conn, "sac", "train")
    return [
        ShardSample("sac", r.image_id, "train", str(home / r.path), r.sha256, r.counts, r.target, r.mean, r.std)
        for r in rows
    ]


def test_size_limits_hold_by_count_and_by_bytes(tmp_path: Path, home: Path) -> None:
    samples = _sac_train_samples(home, 40, seed=2)
    by_count = write_split(samples, tmp_path / "count", "sac", "train", limits=ShardLimits(max_samples=3))
    assert max(s.nsamples for s in by_count.shards) <= 3
    crop = max(Path(s.path).stat().st_size for s in samples)
    max_bytes = 4 * (crop + 3 * 512) + 2 * 512 + tarfile.RECORDSIZE
    by_bytes = write_split(samples, tmp_path / "bytes", "sac", "train", limits=ShardLimits(10_000, max_bytes))
    assert max(s.filesize for s in by_bytes.shards) <= max_bytes
    assert sum(s.nsamples for s in by_bytes.shards) == sum(s.nsamples for s in by_count.shards) == len(samples)
    assert len(by_bytes.shards) > 1


def test_sidecars_are_queryable_with_duckdb_read_parquet(built: tuple[Path, dict]) -> None:
    home, labels = built
    glob = str(home / "shards" / "ava" / "*" / "*.parquet")
    rows = duckdb.sql(
        f"SELECT image_id, split, counts, key FROM read_parquet('{glob}', filename = true) ORDER BY image_id"
    ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(IDS)
    for image_id, split, counts, key in rows:
        assert (split, list(counts)) == labels[image_id]
        assert key == sample_key("ava", image_id)
    per_split = dict(duckdb.sql(f"SELECT split, count(*) FROM read_parquet('{glob}') GROUP BY split").fetchall())
    assert per_split == {s: sum(1 for v in labels.values() if v[0] == s) for s in SPLITS}


def test_missing_crop_and_unlabelled_image_become_rejects_and_the_rest_is_written(home: Path) -> None:
    labels = add_images(home, "sac", [str(i) for i in range(12)], seed=3)
    (home / "images" / "sac" / "4.jpg").unlink()
    with connect(home / "warehouse.duckdb") as conn:
        conn.execute("DELETE FROM histograms WHERE dataset = 'sac' AND image_id = '5'")
    result = materialize_shards(home, [sac_shards])
    mat = materialization(result, "sac_shards")
    assert mat.metadata["rejected_by_reason"].data == {"missing": 1, "unlabelled": 1}
    assert mat.metadata["samples"].value == len(labels) - 2
    with connect(home / "warehouse.duckdb") as conn:
        rejects = dict(
            conn.execute("SELECT item_id, reason FROM rejects WHERE dataset = 'sac' AND stage = 'shards'").fetchall()
        )
    assert set(rejects) == {"4", "5"}
    assert rejects["4"].startswith("missing: ") and rejects["5"].startswith("unlabelled: ")
    written = {json.loads(s["json"])["image_id"] for split in SPLITS for s in read_back(home, "sac", split)}
    assert written == set(labels) - {"4", "5"}


def test_a_second_writer_of_the_same_split_waits_for_the_first(tmp_path: Path, home: Path) -> None:
    import fcntl
    import threading

    samples = _sac_train_samples(home, 6, seed=3)
    out = tmp_path / "split"
    out.mkdir()
    done = threading.Event()
    with open(out / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another run is mid-write
        writer = threading.Thread(target=lambda: (write_split(samples, out, "sac", "train"), done.set()))
        writer.start()
        assert not done.wait(0.5), "the second writer must not touch the split while the first holds it"
        assert not (out / "index.json").exists()
        fcntl.flock(held, fcntl.LOCK_UN)
    writer.join(30)
    assert done.is_set() and json.loads((out / "index.json").read_text())["shardlist"]
