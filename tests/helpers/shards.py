"""Shared set-up for the shard tests: a real warehouse on tmp_path with real crops (no test functions here)."""

from __future__ import annotations

import io
from pathlib import Path

import dagster as dg
import numpy as np
from PIL import Image

from assets.resources import StorageResource
from ingest.crops import CropJob, CropSpec, run_crop_job
from pipelines.resources import build_resources
from warehouse.db import connect
from warehouse.labels import upsert_histograms
from warehouse.records import ImageRow, upsert_images

SPLITS = ("train", "val", "test")


def source_jpeg(seed: int, size: int = 96) -> bytes:
    """A smooth gradient photo-like image with a seeded colour and seeded blocks, so crops differ (in layout too:
    the shards stage's leakage search would take gradients alone for near-duplicates) and compress like photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(0, 255, 3)
    arr = np.stack([base[c] * (0.5 + 0.5 * np.sin(6 * x + c + seed) * y) for c in range(3)], axis=-1)
    for _ in range(4):
        x0, y0 = rng.integers(0, size * 3 // 4, 2)
        w, h = rng.integers(size // 8, size // 3, 2)
        arr[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def add_images(
    home: Path, dataset: str, ids: list[str], seed: int = 0, crop_size: int = 256
) -> dict[str, tuple[str, list[int]]]:
    """Crop generated images into the storage layout and upsert images + histograms; id -> (split, counts)."""
    storage = StorageResource(home=str(home), raw=str(home / "raw"))
    rng = np.random.default_rng(seed)
    rows, hists, out = [], [], {}
    for n, image_id in enumerate(ids):
        safe = image_id.replace("/", "_")
        dest = storage.images_dir(dataset) / f"{safe}.jpg"
        result = run_crop_job(CropJob(image_id, source_jpeg(seed * 1000 + n), str(dest)), CropSpec(size=crop_size))
        split = SPLITS[n % 3] if n % 5 else "train"
        rows.append(
            ImageRow(image_id, split, None, storage.to_stored(dest), result.width, result.height, result.sha256)
        )
        counts = [int(c) for c in rng.integers(0, 30, 10) + 1]
        hists.append((image_id, counts))
        out[image_id] = (split, counts)
    with connect(home / "warehouse.duckdb") as conn:
        upsert_images(conn, dataset, rows)
        upsert_histograms(conn, dataset, hists)
    return out


def materialize_shards(home: Path, assets: list, config: dict | None = None) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {a.key.path[-1]: {"config": config} for a in assets}} if config else None
    return dg.materialize(
        assets,
        resources=build_resources(home=home, raw=home / "raw"),
        instance=dg.DagsterInstance.ephemeral(),
        run_config=run_config,
    )


def materialization(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetMaterialization:
    mats = result.asset_materializations_for_node(name)
    assert len(mats) == 1
    return mats[0]


def files_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
