"""Asset group `ava` (docs/ava.md): AVA.txt + photos -> images, histograms, rejects and crops."""
# No `from __future__ import annotations`: Dagster resolves the config and resource annotations at runtime.

import dagster as dg

from assets.downloads import LIGHT, DownloadConfig, fetch_drop
from assets.metadata import markdown_image
from assets.resources import StorageResource, WarehouseResource
from assets.settings_config import settings_config
from common.atomic import write_atomic
from common.regular_files import OutsideRoot
from ingest.archives import ArchiveError
from ingest.ava import AvaReport, AvaSettings, ListFileError, ingest_ava
from ingest.shrink_guard import ShrinkRefused


class AvaConfig(settings_config(AvaSettings, "ava", exclude=("val_fraction", "batch_size"))):
    """How AVA photos are acquired and cropped, and which official list pair sets the splits: AvaSettings'
    fields (ingest/ava.py), but the split rule and the batch size, which are the stage's own."""


def _metadata(report: AvaReport, preview: dg.MetadataValue, preview_path: str) -> dict:
    return {
        "lines_read": report.lines_read,
        "blank_lines": report.blank_lines,
        "accepted": report.accepted,
        "rejected": report.rejected,
        "rejected_by_reason": dg.MetadataValue.json(report.rejected_by_reason),
        "splits": dg.MetadataValue.json(report.splits),
        "cropped_this_run": report.cropped,
        "up_to_date": report.up_to_date,
        "images_per_s": dg.MetadataValue.float(round(report.images_per_s, 1)),
        "images_rows_written": report.images_written,
        "rejects_written": report.rejects_written,
        "tags": report.tags,
        "challenges": report.challenges,
        "name_lines_rejected": report.bad_name_lines,
        "preview": preview,
        "preview_path": dg.MetadataValue.path(preview_path),
    }


@dg.asset(group_name="ava", kinds={"duckdb", "pillow"}, deps=["ava_archive"])
def ava_images(
    context: dg.AssetExecutionContext, config: AvaConfig, storage: StorageResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """AVA ratings, splits, tags and square crops: every AVA.txt line ends in images+histograms or rejects."""
    preview_path = storage.reports_dir() / "ava_preview.png"
    with storage.full_disk_as_failure():
        try:
            report = ingest_ava(storage.paths(), warehouse.connect, config.settings(), context.run.run_id,
                                context.log.info)
        # The archive as a whole, or an image list the config names: nothing was changed, and the one-line message
        # names the file and what to do, never what the file holds.
        except (ArchiveError, ListFileError, OutsideRoot) as exc:
            raise dg.Failure(description=f"ava: {exc}") from None
        except ShrinkRefused as exc:  # nothing was deleted; the line says why and what to do
            raise dg.Failure(description=str(exc)) from None
        if report.preview_png:
            write_atomic(preview_path, report.preview_png)
    preview = markdown_image(report.preview_png, "AVA crops, lowest to highest mean score",
                             empty="no accepted images yet")
    context.log.info(
        f"ava: {report.accepted} accepted, {report.rejected} rejected of {report.lines_read} lines;"
        f" {report.cropped} cropped, {report.up_to_date} up to date"
    )
    return dg.MaterializeResult(metadata=_metadata(report, preview, str(preview_path)))


@dg.asset(group_name="ava", kinds={"http"}, op_tags=LIGHT)
def ava_archive(context: dg.AssetExecutionContext, config: DownloadConfig,
                storage: StorageResource) -> dg.MaterializeResult:
    """The AVA archive (AVA_dataset.zip, images.tar.gz, Parquet shards, 7z volumes) into $AESTHETIC_RAW/ava/;
    nothing to do when no URL is configured."""
    return fetch_drop(context, config, storage, "ava")
