"""Synthetic negatives: blank and broken renders labelled score 1, mixed into a colour model's training data.

The original notebook taught the critic that a blank canvas or a render that stopped half-way is the worst
design there is; `--negatives F` adds F x the training set's size of these, written once as a real shard.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from common.atomic import atomic_path


def negative_image(rng: random.Random, size: int = 256) -> Image.Image:
    """What the critic must score 1: a blank white canvas or a broken render (cut off, flat, noise)."""
    kind = rng.randrange(4)
    if kind == 0:
        return Image.new("RGB", (size, size), (255, 255, 255))
    if kind == 1:  # a render that stopped: white below a flat grey band
        img = Image.new("RGB", (size, size), (255, 255, 255))
        img.paste((128, 128, 128), (0, 0, size, rng.randrange(8, size // 2)))
        return img
    if kind == 2:  # a single flat colour
        return Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    noise = np.random.default_rng(rng.randrange(2**31)).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(noise, "RGB")


def write_negatives_shard(path: Path, n: int, seed: int) -> Path:
    """A real shard of n negatives labelled score 1 (the notebook's blank and broken renders), read like any other."""
    target = [1.0] + [0.0] * 9
    rng = random.Random(seed)
    with atomic_path(path) as tmp, wds.TarWriter(str(tmp)) as sink:
        for i in range(n):
            buf = io.BytesIO()
            negative_image(rng).save(buf, format="JPEG", quality=95)
            meta = {"dataset": "negatives", "image_id": str(i), "split": "train", "counts": [1] + [0] * 9,
                    "target": target, "mean": 1.0, "std": 0.0}
            sink.write({"__key__": f"negative_{i:06d}", "jpg": buf.getvalue(), "json": json.dumps(meta).encode()})
    return path
