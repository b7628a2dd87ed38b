"""A shard writer killed with SIGKILL mid-tar leaves no partial tar at a final name; the next run completes it.

To kill it at a known point rather than by luck, one crop file is replaced by a named pipe: the writer process
blocks reading it while that shard's temporary tar is open and half written. The test then SIGKILLs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import webdataset as wds

from assets.shards import kuler_shards
from ingest.shard_writer import ShardLimits, bucket_of, choose_n_buckets, read_sidecar_meta
from ingest.splits import hash_fraction
from tests.helpers.shards import SPLITS, add_images, materialization, materialize_shards
from warehouse.db import connect
from warehouse.labels import upsert_histograms

ROOT = Path(__file__).resolve().parents[1]
WRITER = """
import functools, sys
from ingest.paths import Paths
from ingest.shards import ShardSettings, build_shards
from warehouse.db import connect
paths = Paths(sys.argv[1], sys.argv[1] + "/raw")
settings = ShardSettings("kuler", max_samples_per_shard=4)
build_shards(paths, functools.partial(connect, paths.warehouse), settings)
"""


def assert_only_whole_shards(folder: Path) -> None:
    """Every tar at a final name is complete: its bytes hash to what its sidecar and the index recorded."""
    index = json.loads((folder / "index.json").read_text())
    listed = {e["url"]: e for e in index["shardlist"]}
    for tar in folder.glob("*.tar"):
        meta = read_sidecar_meta(tar)
        data = tar.read_bytes()
        assert meta is not None and hashlib.sha256(data).hexdigest() == meta["sha256"], f"partial tar {tar.name}"
        assert len(list(wds.WebDataset(str(tar), shardshuffle=False))) == meta["nsamples"]
        if tar.name in listed:
            assert listed[tar.name]["sha256"] == meta["sha256"]
    for name in listed:  # the index never names a file that is missing
        assert (folder / name).exists()


def test_sigkill_mid_write_leaves_no_partial_tar_and_next_run_completes(home: Path) -> None:
    ids = [str(i) for i in range(40)]
    labels = add_images(home, "kuler", ids, seed=8)
    assert materialize_shards(home, [kuler_shards], {"max_samples_per_shard": 4}).success
    # New labels for every image, so the next run must rewrite every shard.
    with connect(home / "warehouse.duckdb") as conn:
        upsert_histograms(conn, "kuler", [(i, [c + 1 for c in counts]) for i, (_, counts) in labels.items()])

    train = sorted((i for i, (split, _) in labels.items() if split == "train"), key=int)
    fractions = [hash_fraction(i, salt="shard:kuler") for i in train]
    n_buckets = choose_n_buckets(fractions, [0] * len(train), ShardLimits(max_samples=4))
    # The image in the highest train bucket: every other train shard is written before the writer reaches it.
    victim = max(train, key=lambda i: (bucket_of("kuler", i, n_buckets), i))
    crop = home / "images" / "kuler" / f"{victim}.jpg"
    real_bytes = crop.read_bytes()
    crop.unlink()
    os.mkfifo(crop)

    folder = home / "shards" / "kuler" / "train"
    before = {p.name for p in folder.iterdir()}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(home)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        temp = []
        while not temp and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
            temp = [p for p in folder.glob(f".shard-{bucket_of('kuler', victim, n_buckets):06d}-*.tmp")]
        assert temp, f"writer never reached the victim's shard (exit code {proc.poll()})"
        time.sleep(0.2)  # let it block on the pipe with the temp tar open
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # Killed mid-tar: the temp file is there, no partial tar at a final name, the old index still whole.
    assert temp[0].exists()
    rewritten = {p.name for p in folder.glob("*.tar")} - before
    assert rewritten, "the killed run should have finished some shards before the victim's"
    assert_only_whole_shards(folder)

    crop.unlink()
    crop.write_bytes(real_bytes)
    mat = materialization(materialize_shards(home, [kuler_shards], {"max_samples_per_shard": 4}), "kuler_shards")
    # The shards the killed run finished are kept, not redone; the temp file is gone.
    assert mat.metadata["shards_kept"].value >= len(rewritten)
    assert not list(folder.glob(".*.tmp"))
    for split in SPLITS:
        assert_only_whole_shards(home / "shards" / "kuler" / split)
    docs = [
        json.loads(s["json"])
        for split in SPLITS
        for s in wds.WebDataset(
            [
                str(home / "shards/kuler" / split / e["url"])
                for e in json.loads((home / "shards/kuler" / split / "index.json").read_text())["shardlist"]
            ],
            shardshuffle=False,
        )
    ]
    assert sorted((d["image_id"] for d in docs), key=int) == ids
    assert all(d["counts"] == [c + 1 for c in labels[d["image_id"]][1]] for d in docs)
