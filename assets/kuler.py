"""Asset group `kuler` (docs/kuler.md): colour themes -> swatches, histograms and rejects.

The work is in ingest/kuler.py (reading, labels, swatches) and warehouse/kuler.py (the diff sync);
this module only configures it and reports.
"""

# No `from __future__ import annotations` here: Dagster must see the real KulerConfig class, not a string.
import dagster as dg

from assets.downloads import LIGHT, DownloadConfig, fetch_drop
from assets.metadata import markdown_image
from assets.resources import StorageResource, WarehouseResource
from assets.settings_config import settings_config
from ingest.kuler import KulerSettings, ingest_kuler
from ingest.shrink_guard import ShrinkRefused


class KulerConfig(settings_config(KulerSettings, "kuler")):
    """Which release to read and how to turn its ratings into labels and swatches: KulerSettings' fields
    (ingest/kuler.py)."""


@dg.asset(group_name="kuler", kinds={"duckdb", "jpeg"}, deps=["kuler_download"])
def kuler_images(
    context: dg.AssetExecutionContext,
    config: KulerConfig,
    storage: StorageResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Kuler colour themes as 5-stripe swatches with 10-bin rating histograms; bad ratings go to rejects."""
    with storage.full_disk_as_failure():
        try:
            out = ingest_kuler(storage.paths(), warehouse.connect, config.settings(), context.run.run_id,
                               context.log.info)
        except ShrinkRefused as exc:  # nothing was deleted; the line says why and what to do
            raise dg.Failure(description=str(exc)) from None
    return dg.MaterializeResult(
        metadata={
            "release": out.release,
            "mapping": config.mapping,
            "labels": out.labels,
            "sources": dg.MetadataValue.json(out.sources),
            "themes_read": out.themes_read,
            "themes_accepted": out.themes_accepted,
            "themes_rejected": out.themes_rejected,
            "ratings_read": out.ratings_read,
            "ratings_kept": out.ratings_kept,
            "ratings_rejected": out.ratings_rejected,
            "rejects_by_reason": dg.MetadataValue.json(out.rejects_by_reason),
            "splits": dg.MetadataValue.json(out.splits),
            "mean_score": out.mean_score,
            "swatches_written": out.swatches_written,
            "swatches_unchanged": out.swatches_unchanged,
            "swatches_removed": out.swatches_removed,
            "jpeg_quality": dg.MetadataValue.json({str(q): n for q, n in out.jpeg_quality.items()}),
            "rows_written": dg.MetadataValue.json(vars(out.sync)),
            "images_dir": dg.MetadataValue.path(str(storage.images_dir("kuler"))),
            "preview": markdown_image(out.preview_png, "kuler swatches"),
            "preview_path": dg.MetadataValue.path(out.preview_path),
        }
    )


@dg.asset(group_name="kuler", kinds={"http"}, op_tags=LIGHT)
def kuler_download(context: dg.AssetExecutionContext, config: DownloadConfig,
                   storage: StorageResource) -> dg.MaterializeResult:
    """Kuler's .mat files into $AESTHETIC_RAW/kuler/; nothing to do when no URL is configured."""
    return fetch_drop(context, config, storage, "kuler")
