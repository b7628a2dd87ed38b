"""Asset group `ava` (docs/ava.md): AVA.txt + photos -> images, histograms, rejects and crops."""
# No `from __future__ import annotations`: Dagster resolves the config and resource annotations at runtime.

from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.downloads import LIGHT, DownloadConfig, fetch_drop
from assets.metadata import markdown_image
from assets.resources import StorageResource, WarehouseResource
from common.atomic import write_atomic
from common.bounds import config_field
from common.regular_files import OutsideRoot
from ingest.archives import ArchiveError, ParquetColumns
from ingest.ava import (
    ACQUISITIONS,
    ARCHIVE_ACQUISITIONS,
    DEFAULT_TEST_LIST,
    AvaReport,
    AvaSettings,
    ListFileError,
    ingest_ava,
)
from ingest.crops import CropSpec
from ingest.fetch import HttpOptions
from ingest.shrink_guard import ShrinkRefused


class AvaConfig(dg.Config):
    """How AVA photos are acquired and cropped, and which official list pair sets the splits."""

    acquisition: str = Field("directory", description=f"one of {ACQUISITIONS}")
    source: str = Field(
        "",
        description="directory: folder of <id>.jpg (default $AESTHETIC_RAW/ava/images); tar, zip, 7z: the archive"
        " (7z: x.7z or its first volume x.7z.001), parquet: a file or a folder of shards; a bare file name is"
        " looked up in $AESTHETIC_RAW/ava/ (where ava_archive puts it); http: URL template with {image_id} and"
        " any AVA.txt column, e.g. {challenge_id}",
    )
    parquet_id_column: str = Field("image_id", description="parquet: column with the AVA id (or a file name);"
                                   " struct fields as image.path")
    parquet_image_column: str = Field("image", description="parquet: column with the encoded image bytes, or a"
                                      " struct with a `bytes` field (Hugging Face's Image)")
    crop_size: int = config_field(CropSpec, "size", "side of the square crop, px")
    crop_mode: str = Field("center", description="center: centred square; squash: whole frame resized")
    min_side: int = config_field(CropSpec, "min_side", "sources whose short side is under this are rejected")
    test_list: str = Field(DEFAULT_TEST_LIST, description="file under ava/aesthetics_image_lists/ naming test ids")
    train_list: str = Field("", description="e.g. animal_train.jpgl; empty: every id not in test_list is train/val")
    http_concurrency: int = config_field(HttpOptions, "concurrency", "http: requests in flight")
    http_timeout_s: float = config_field(HttpOptions, "timeout_s", "http: seconds one request may stall")
    http_retries: int = config_field(HttpOptions, "retries", "http: further tries after a failure that may pass")
    max_bytes: int = config_field(HttpOptions, "max_bytes", "largest source file accepted from an archive or http")
    workers: int = config_field(AvaSettings, "workers", "crop processes; 0 = all cores")
    allow_shrink: bool = Field(False, description="let this run reject more than half of the accepted images"
                               " (a drop that really shrank); off, such a run stops before deleting anything")

    def settings(self) -> AvaSettings:
        if self.acquisition not in ACQUISITIONS:
            raise dg.Failure(f"acquisition must be one of {ACQUISITIONS}, got {self.acquisition!r}")
        if self.acquisition != "directory" and not self.source:
            raise dg.Failure(f"acquisition {self.acquisition!r} needs `source` (archive path or URL template)")
        try:
            return self._settings()
        except ValueError as exc:  # a malformed URL template, a bad option: one line, not a traceback
            raise dg.Failure(description=f"ava: {exc}") from None

    def _settings(self) -> AvaSettings:
        return AvaSettings(
            acquisition=self.acquisition,
            images_dir=_path(self.source) if self.acquisition == "directory" and self.source else None,
            archive=_path(self.source) if self.acquisition in ARCHIVE_ACQUISITIONS else None,
            url_template=self.source if self.acquisition == "http" else "",
            http=HttpOptions(self.http_concurrency, self.http_timeout_s, self.http_retries, max_bytes=self.max_bytes),
            parquet=ParquetColumns(self.parquet_id_column, self.parquet_image_column),
            spec=CropSpec(size=self.crop_size, mode=self.crop_mode, min_side=self.min_side),
            test_list=self.test_list,
            train_list=self.train_list,
            workers=self.workers,
            allow_shrink=self.allow_shrink,
        )


def _path(text: str) -> Path:
    return Path(text).expanduser()


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
