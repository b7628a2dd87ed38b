"""Asset group `sac` (docs/sac.md): Simulacra Aesthetic Captions -> images, histograms, rejects.

`sac_snapshots` (group `sac_inbox`) is partitioned by snapshot file (a dynamic partition per new SQLite
file in `$AESTHETIC_RAW/sac/inbox/`, added by the sensor in pipelines/sensors.py); it has a group of its
own so that the `sac` group materialises without a partition. `sac_images` (group `sac`) ingests the
drop's own `sac/*.sqlite` and is the asset the shards depend on. Both merge through ingest/sac.py, so a
snapshot only adds ratings not seen before and rebuilds only the histograms they touch.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from assets.downloads import LIGHT, DownloadConfig, fetch_drop
from assets.metadata import markdown_image
from assets.resources import StorageResource, WarehouseResource
from assets.settings_config import settings_config
from common.agreement import agreement
from ingest.sac import INBOX, SacReport, SacSettings, inbox_files, ingest_sac, mean_score_plot_png, read_snapshot
from ingest.shrink_guard import ShrinkRefused
from ingest.sqlite_files import whole_by_header

# What the inbox sensor (pipelines/sensors.py) needs of the stage, so the code location imports only assets.
__all__ = ["INBOX", "inbox_files", "read_snapshot", "whole_by_header", "sac_snapshot_partitions", "sac_snapshots",
           "sac_images", "sac_download"]

sac_snapshot_partitions = dg.DynamicPartitionsDefinition(name="sac_snapshots")


class SacConfig(settings_config(SacSettings, "sac", exclude=("snapshots",))):
    """How SAC's ratings become targets and its images crops: SacSettings' fields (ingest/sac.py) but the
    snapshots, which are the run's partitions."""


@contextmanager
def _shrink_as_failure() -> Iterator[None]:
    try:
        yield
    except ShrinkRefused as exc:  # nothing was deleted; the line says why and what to do
        raise dg.Failure(description=str(exc)) from None


def _metadata(sac: SacReport) -> dict:
    reports, means = sac.snapshots, sac.mean_scores
    by_reason: dict[str, int] = {}
    for r in reports:
        for kind, n in r.rejects_by_reason.items():
            by_reason[kind] = by_reason.get(kind, 0) + n
    return {
        "snapshots": [r.snapshot for r in reports],
        "unreadable_files": dg.MetadataValue.json(sac.unreadable),  # skipped: not SQLite, truncated, a FIFO...
        "ratings_read": sum(r.ratings.read for r in reports),
        # per snapshot: "whole file", or "after rowid N" when it appended to an ingested snapshot's file
        "ratings_scanned": dg.MetadataValue.json({
            r.snapshot: "whole file" if r.ratings_after_rowid is None else f"after rowid {r.ratings_after_rowid}"
            for r in reports
        }),
        "images_staged": dg.MetadataValue.json({
            r.snapshot: "all" if r.images_after_rowid is None else f"after rowid {r.images_after_rowid}"
            for r in reports
        }),
        "ratings_ignored_null": sum(r.ratings.ignored for r in reports),
        "ratings_rejected": sum(r.ratings.rejected for r in reports),
        "ratings_new": sum(r.ratings_new for r in reports),
        "images_read": sum(r.images_read for r in reports),
        "images_added": sum(r.images_added for r in reports),
        "images_updated": sum(r.histograms_updated for r in reports),
        "images_rejected": sum(r.images_rejected for r in reports),
        "rejects_by_reason": dg.MetadataValue.json(by_reason),
        "sac_histograms_total": len(means),
        "mean_score_distribution": markdown_image(mean_score_plot_png(means), "SAC mean scores"),
        "seconds": round(sum(r.seconds for r in reports), 2),
        **_studio_metadata(reports),
    }


def _studio_metadata(reports: list) -> dict:
    """For studio snapshots (docs/critic.md): how often the person's picks agreed with the critic, and the rank
    the critic gave them, per snapshot and over the run; nothing for other snapshots."""
    studio = {r.snapshot: r.studio for r in reports if r.studio is not None}
    if not studio:
        return {}
    overall = agreement([rank for s in studio.values() for rank in s["pick_ranks"]])
    return {"studio": dg.MetadataValue.json(studio), "studio_picks": overall["picks"],
            "studio_agreed": overall["agreed"],
            "studio_agreement": dg.MetadataValue.float(overall["agreement"] if overall["picks"] else float("nan")),
            "studio_mean_pick_rank": dg.MetadataValue.float(overall["mean_pick_rank"] or float("nan"))}


@dg.asset(
    group_name="sac_inbox",
    partitions_def=sac_snapshot_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def sac_snapshots(
    context: dg.AssetExecutionContext, config: SacConfig, storage: StorageResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """A new snapshot of the SAC database from sac/inbox/: unseen ratings, their histograms, new crops.

    One partition per snapshot file, added by `sac_inbox_sensor`. By hand:
    `dagster asset materialize -m pipelines.definitions --select sac_snapshots --partition <key>`
    (keys are listed under the asset's Partitions tab), or a backfill of job `sac_backfill` in the UI.
    """
    with storage.full_disk_as_failure(), _shrink_as_failure():
        settings = config.settings(snapshots=tuple(context.partition_keys))
        report = ingest_sac(storage.paths(), warehouse.connect, settings, context.run.run_id, context.log.info)
    return dg.MaterializeResult(metadata=_metadata(report))


@dg.asset(group_name="sac", deps=[sac_snapshots, "sac_download"])
def sac_images(
    context: dg.AssetExecutionContext, config: SacConfig, storage: StorageResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """SAC crops under images/sac/ with their rating histograms, from the drop's sac/*.sqlite (or tarball)."""
    with storage.full_disk_as_failure(), _shrink_as_failure():
        report = ingest_sac(storage.paths(), warehouse.connect, config.settings(), context.run.run_id,
                            context.log.info)
    return dg.MaterializeResult(metadata=_metadata(report))


@dg.asset(group_name="sac", kinds={"http"}, op_tags=LIGHT)
def sac_download(context: dg.AssetExecutionContext, config: DownloadConfig,
                 storage: StorageResource) -> dg.MaterializeResult:
    """SAC's SQLite database and image tarball into $AESTHETIC_RAW/sac/ (the drop's own, not the inbox);
    nothing to do when no URL is configured."""
    return fetch_drop(context, config, storage, "sac")
