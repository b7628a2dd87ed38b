"""What the download assets share: `ava_archive` (assets/ava.py), `sac_download` (assets/sac.py) and
`kuler_download` (assets/kuler.py), each in its dataset's group. Each fetches the configured URLs into its place
under $AESTHETIC_RAW (ingest/download.py); with no URL configured it does nothing and says so, so the demo, the
tests and full_pipeline run on the drops already there.
"""
# No `from __future__ import annotations`: Dagster resolves the config and resource annotations at runtime.

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pydantic import Field

from assets.resources import StorageResource
from assets.settings_config import settings_config
from ingest.archives import ArchiveError
from ingest.download import DROP_OPTIONS, DownloadError, DownloadSettings, DropFile, download_drop, public_url

# A download is I/O only and imports nothing heavy: pipelines/executor.py runs it in the run's own process beside
# the one stage step it feeds (`--select group:ava` stays a run without step subprocesses).
LIGHT = {"aesthetic/step": "light"}


class DownloadFile(settings_config(DropFile, "download")):
    """One more file of the drop: DropFile's fields (ingest/download.py)."""


class DownloadConfig(settings_config(DownloadSettings, "download", exclude=("dest_dir", "backoff_s", "reserve_bytes"),
                                     url="")):
    """What to fetch: `url` (with `sha256`, `size`) for one file, `files` for more (SAC's database and tarball,
    Kuler's two .mat files, 7z volumes). Nothing configured: nothing is fetched. DownloadSettings' fields
    (ingest/download.py) but where the file goes, which is the dataset's drop."""

    files: list[DownloadFile] = Field(default_factory=list, description="further files: url, sha256, size, filename")

    def wanted(self) -> list[DropFile]:
        first = [DropFile(self.url, self.filename, self.sha256, self.size)] if self.url else []
        return first + [f.settings() for f in self.files]

    def options(self) -> dict[str, Any]:
        """What every file's download takes besides the file: max_bytes, token_env, retries, timeouts."""
        return {n: getattr(self, n) for n in DROP_OPTIONS if n in type(self).model_fields}


def fetch_drop(context: dg.AssetExecutionContext, config: DownloadConfig, storage: StorageResource,
               dataset: str) -> dg.MaterializeResult:
    """Download every configured file into $AESTHETIC_RAW/<dataset>/ and report each one."""
    files = config.wanted()
    dest_dir = storage.raw_path / dataset
    if not files:
        context.log.info(f"{dataset}: no download URL configured; using the drop in {dest_dir} as it is")
        return dg.MaterializeResult(metadata={"status": "not configured", "files": 0,
                                              "drop": dg.MetadataValue.path(str(dest_dir))})
    @contextmanager
    def announce(settings: DownloadSettings) -> Iterator[None]:
        context.log.info(f"{dataset}: {settings.filename} from {public_url(settings.url)}")
        yield None

    reports, placed = [], []
    try:
        for done in download_drop(dataset, files, storage.raw_path, announce, **config.options()):
            report = done.report
            context.log.info(f"{dataset}: {done.settings.filename} {report.status} ({report.checked_by}); "
                             f"{report.bytes_fetched / 1e6:.1f} MB at {report.mb_per_s:.1f} MB/s, "
                             f"{report.resumes} resumes")
            reports.append(report)
            placed += done.placed
            if dataset == "ava" and done.settings.filename.lower().endswith(".zip"):
                context.log.info(f"ava: from {done.settings.filename} placed {done.placed or 'nothing'}; "
                                 f"kept {done.kept or 'nothing'}")
    except (DownloadError, ArchiveError) as exc:
        raise dg.Failure(description=f"{dataset} download: {exc}") from None
    fetched = sum(r.bytes_fetched for r in reports)
    seconds = sum(r.seconds for r in reports)
    return dg.MaterializeResult(metadata={
        "status": "downloaded" if any(r.status == "downloaded" for r in reports) else "up to date",
        "files": len(reports),
        "bytes": sum(r.bytes for r in reports),
        "bytes_fetched": fetched,
        "mb_per_s": dg.MetadataValue.float(round(fetched / 1e6 / seconds, 2) if seconds else 0.0),
        "resumes": sum(r.resumes for r in reports),
        "retries": sum(r.retries for r in reports),
        "sha256": dg.MetadataValue.json({r.path.rsplit("/", 1)[-1]: r.sha256 for r in reports}),
        "downloads": dg.MetadataValue.json([r.as_metadata() for r in reports]),
        "texts_placed": dg.MetadataValue.json(placed),  # AVA.txt and lists copied out of a zip into the drop
        "drop": dg.MetadataValue.path(str(dest_dir)),
    })
