"""Tiny real WebDataset shards and train arguments for the training tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds

from ingest.sample_data import render_photo, votes_for


def write_tiny_shards(folder: Path, n: int, size: int = 64, per_shard: int = 8, seed: int = 0,
                      dataset: str = "ava", split: str = "train") -> list[Path]:
    """Real WebDataset shards of rendered photos whose votes follow their quality (like the sample data)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for start in range(0, n, per_shard):
        path = folder / f"{dataset}-{split}-{start // per_shard:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(start, min(n, start + per_shard)):
                q = float(rng.random())
                buf = io.BytesIO()
                render_photo(rng, q, size, size).save(buf, format="JPEG", quality=90)
                counts = votes_for(rng, q, 80)
                target = (counts / counts.sum()).tolist()
                scores = np.arange(1, 11)
                mean = float((scores * target).sum())
                std = float(np.sqrt(((scores - mean) ** 2 * target).sum()))
                meta = {"dataset": dataset, "image_id": str(i), "split": split, "counts": counts.tolist(),
                        "target": target, "mean": mean, "std": std}
                sink.write({"__key__": f"{dataset}_{i}", "jpg": buf.getvalue(), "json": json.dumps(meta).encode()})
        paths.append(path)
    shardlist = [{"url": p.name, "nsamples": min(per_shard, n - k * per_shard)} for k, p in enumerate(paths)]
    (folder / "index.json").write_text(json.dumps({"nsamples": n, "shardlist": shardlist}))
    return paths


def tiny_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--output-dir", str(out), "--weights", "none", "--crop", "32", "--resize", "36",
            "--batch-size", "8", "--workers", "0", "--no-progress", "--print-freq", "0", "--shuffle-buffer", "16",
            *extra]
