"""What the download assets share: `ava_archive` (assets/ava.py), `sac_download` (assets/sac.py) and
`kuler_download` (assets/kuler.py), each in its dataset's group. Each fetches the configured URLs into its place
under $AESTHETIC_RAW (ingest/download.py); with no URL configured it does nothing and says so, so the demo, the
tests and full_pipeline run on the drops already there.
"""
# No `from __future__ import annotations`: Dagster resolves the config and resource annotations at runtime.

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field

from assets.resources import StorageResource
from common.bounds import config_field
from ingest.archives import ArchiveError
from ingest.download import DownloadError, DownloadSettings, DropFile, download_drop, public_url

# A download is I/O only and imports nothing heavy: pipelines/executor.py runs it in the run's own process beside
# the one stage step it feeds (`--select group:ava` stays a run without step subprocesses).
LIGHT = {"aesthetic/step": "light"}


class DownloadFile(dg.Config):
    url: str = Field(description="https URL (a Hugging Face resolve/ URL works as is)")
    sha256: str = Field("", description="expected SHA-256 (hex); empty: computed and recorded")
    size: int = config_field(DownloadSettings, "size", "expected bytes; 0: not checked")
    filename: str = Field("", description="name under the drop folder; empty: the URL's last path part")


class DownloadConfig(dg.Config):
    """What to fetch: `url` (with `sha256`, `size`) for one file, `files` for more (SAC's database and tarball,
    Kuler's two .mat files, 7z volumes). Nothing configured: nothing is fetched."""

    url: str = Field("", description="https URL of the file; empty: nothing to download")
    sha256: str = ""
    size: int = config_field(DownloadSettings, "size", "expected bytes; 0: not checked")
    filename: str = ""
    files: list[DownloadFile] = Field(default_factory=list, description="further files: url, sha256, size, filename")
    max_bytes: int = config_field(DownloadSettings, "max_bytes", "largest body accepted, per file")
    token_env: str = Field("", description="environment variable with a bearer token; empty: HF_TOKEN for "
                                           "huggingface.co URLs, none elsewhere")
    retries: int = config_field(DownloadSettings, "retries", "further tries without progress after a failure "
                                                            "that may pass")
    timeout_s: float = config_field(DownloadSettings, "timeout_s", "seconds a connection may stall")
    deadline_s: float = config_field(DownloadSettings, "deadline_s", "the longest one file's download may take in a "
                                     "run (every try); a part left by it is resumed by the next run")

    def wanted(self) -> list[DownloadFile]:
        first = [DownloadFile(url=self.url, sha256=self.sha256, size=self.size, filename=self.filename)]
        return (first if self.url else []) + list(self.files)


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
        for done in download_drop(dataset, [DropFile(f.url, f.filename, f.sha256, f.size) for f in files],
                                  storage.raw_path, announce, max_bytes=config.max_bytes,
                                  token_env=config.token_env, retries=config.retries, timeout_s=config.timeout_s,
                                  deadline_s=config.deadline_s):
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
