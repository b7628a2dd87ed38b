"""Incremental rewrites: a changed image rewrites only its shard; growth past a limit re-buckets cleanly."""

from __future__ import annotations

import json
from pathlib import Path

from assets.shards import kuler_shards
from ingest.shard_writer import bucket_of
from tests.helpers.shards import SPLITS, add_images, files_bytes, materialization, materialize_shards
from warehouse.db import connect
from warehouse.labels import upsert_histograms

CONFIG = {"max_samples_per_shard": 4}


def test_changing_one_histogram_rewrites_only_the_shard_holding_it(home: Path) -> None:
    labels = add_images(home, "kuler", [str(i) for i in range(48)], seed=4)
    first = materialization(materialize_shards(home, [kuler_shards], CONFIG), "kuler_shards")
    before = files_bytes(home / "shards")
    n_tars = sum(1 for k in before if k.endswith(".tar"))
    assert n_tars > 4
    inodes_before = {p: p.stat().st_ino for p in (home / "shards").rglob("*.tar")}

    image_id = "17"
    split, counts = labels[image_id]
    with connect(home / "warehouse.duckdb") as conn:
        upsert_histograms(conn, "kuler", [(image_id, [c + 5 for c in counts])])
    second = materialization(materialize_shards(home, [kuler_shards], CONFIG), "kuler_shards")

    assert second.metadata["shards_written"].value == 1
    assert second.metadata["shards_kept"].value == n_tars - 1
    assert second.tags["dagster/data_version"] != first.tags["dagster/data_version"]
    after = files_bytes(home / "shards")
    index = json.loads((home / "shards" / "kuler" / split / "index.json").read_text())
    bucket = bucket_of("kuler", image_id, index["n_buckets"])
    tar = next(e["url"] for e in index["shardlist"] if e["bucket"] == bucket)
    old_tar = next(p for p in inodes_before if p.parent.name == split and p.name.startswith(tar[:22]))
    # Only the bucket's tar and sidecar (under a new content name) and its split's index changed.
    assert set(before) - set(after) == {
        f"kuler/{split}/{old_tar.name}",
        f"kuler/{split}/{old_tar.with_suffix('.parquet').name}",
    }
    assert set(after) - set(before) == {f"kuler/{split}/{tar}", f"kuler/{split}/{tar[:-4]}.parquet"}
    assert sorted(k for k in set(after) & set(before) if after[k] != before[k]) == [f"kuler/{split}/index.json"]
    # Kept tars are the very same files (same inode), never rewritten in place.
    for path, inode in inodes_before.items():
        if path != old_tar:
            assert path.stat().st_ino == inode
    # The rewritten shard carries the new label.
    with connect(home / "warehouse.duckdb") as conn:
        new_target = conn.execute(
            "SELECT p_normalized FROM histograms WHERE dataset = 'kuler' AND image_id = ?", [image_id]
        ).fetchone()[0]
    import webdataset as wds

    docs = [json.loads(s["json"]) for s in wds.WebDataset(str(home / "shards/kuler" / split / tar), shardshuffle=False)]
    assert next(d for d in docs if d["image_id"] == image_id)["target"] == list(new_target)


def test_growth_past_the_limit_splits_buckets_and_removes_the_old_shards(home: Path) -> None:
    add_images(home, "kuler", [str(i) for i in range(12)], seed=5)
    materialize_shards(home, [kuler_shards], {"max_samples_per_shard": 16})
    old = sorted((home / "shards" / "kuler" / "train").glob("*.tar"))
    add_images(home, "kuler", [str(i) for i in range(12, 80)], seed=6)
    mat = materialization(materialize_shards(home, [kuler_shards], {"max_samples_per_shard": 16}), "kuler_shards")
    assert mat.metadata["shards_removed"].value >= len(old) > 0
    total = 0
    for split in SPLITS:
        folder = home / "shards" / "kuler" / split
        index = json.loads((folder / "index.json").read_text())
        listed = sorted(e["url"] for e in index["shardlist"])
        assert listed == sorted(p.name for p in folder.glob("*.tar"))  # no orphans, nothing missing
        assert sorted(p.name for p in folder.glob("*.parquet")) == [u.replace(".tar", ".parquet") for u in listed]
        total += index["nsamples"]
    assert total == 80
