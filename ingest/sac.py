"""SAC (Simulacra Aesthetic Captions): snapshot files, image sources, and one snapshot end to end.

A snapshot is one copy of the public SQLite file (`sac_public_2022_06_29.sqlite`, or a later one
dropped into `$AESTHETIC_RAW/sac/inbox/`). `ingest_snapshot` merges it into the warehouse:

1. one transaction: unseen (sid, iid) ratings -> sac_ratings, bad rows -> rejects, images whose
   histogram is now stale -> sac_pending_votes (to be added to a stored histogram) or
   sac_pending_histograms (to be counted from all the image's ratings), where the ratings table ended ->
   sac_rating_boundaries (warehouse/sac.py, SQL in warehouse/sac_*.sql). A snapshot that appends to an
   earlier one's file is read from that one's last rowid on;
2. no connection held: crop the images that have no crop yet (ingest/crops.py), from
   `$AESTHETIC_RAW/sac/images/` or straight out of the public tarball;
3. one transaction: images rows, image rejects, histograms of the stale and newly cropped images.
   When nothing needs cropping (a backfill of ratings alone), step 3 runs inside step 1's transaction.

A kill between the steps loses nothing: step 1's work is committed with its pending marks, step 3 of
any later run picks them up, and crops are written atomically.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from common.atomic import atomic_path
from common.bounds import bounded, bounded_like, check_ranges, setting
from common.regular_files import NotRegularFile, OutsideRoot, open_regular, under_root
from ingest.crop_folder import crop_folder
from ingest.crops import CROP_WORKERS, CropJob, CropResult, CropSpec, RejectedImage, crop_many, sha256_file
from ingest.labels import SOFTMAX_TEMPERATURE
from ingest.paths import Connect, Log, Paths, no_log
from ingest.sac_studio import studio_summary
from ingest.shrink_guard import guard_shrink
from ingest.splits import three_way_split
from ingest.sqlite_files import SqliteFileError, check_sqlite_file
from warehouse.db import checkpoint, transaction
from warehouse.records import ImageRow, Reject, accepted_among, clear_rejects, count_images, upsert_images
from warehouse.sac import (
    DATASET,
    Candidate,
    RatingCounts,
    crop_candidates,
    image_boundary,
    insert_new_ratings,
    log_snapshot,
    mean_scores,
    merge_pending_histograms,
    new_ingest_id,
    record_new_rejects,
    record_rating_rejects,
    remember_boundary,
    remember_image_boundary,
    stage_snapshot,
    with_snapshot,
)

if TYPE_CHECKING:
    import duckdb

# Where the public tarball keeps the database and the images.
TAR_PREFIX = "home/jdp/simulacra-aesthetic-captions/"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
SPLIT_SALT = "sac"
INBOX = "inbox"
# Crop this many images per process-pool round: bounds the bytes held when reading from a tarball.
CROP_BATCH = 512

ImageEnd = tuple[int, int, str] | None  # warehouse/sac.image_boundary


@dataclass(frozen=True)
class Snapshot:
    key: str  # the dynamic partition key: sanitised file stem + content hash
    path: Path
    sha256: str


def snapshot_key(path: str | Path, sha256: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem).strip("._-") or "snapshot"
    return f"{stem}-{sha256[:12]}"


def read_snapshot(path: str | Path) -> Snapshot:
    path = Path(path).resolve()
    sha = sha256_file(path)
    return Snapshot(snapshot_key(path, sha), path, sha)


def inbox_files(inbox: Path) -> list[Path]:
    """SQLite files waiting in the inbox; dot-names are skipped (copy to `.name`, then rename in)."""
    if not inbox.is_dir():
        return []
    return sorted(p for p in inbox.iterdir() if p.suffix == ".sqlite" and not p.name.startswith(".") and p.is_file())


def find_snapshot(inbox: Path, key: str) -> Snapshot:
    """The inbox file whose name and content make `key`; hashes only the files whose name fits."""
    for path in inbox_files(inbox):
        if key.startswith(snapshot_key(path, "")) and (snap := read_snapshot(path)).key == key:
            return snap
    raise FileNotFoundError(
        f"no snapshot {key!r} in {inbox}: the file was renamed, changed or removed after the sensor saw it"
    )


def tarballs(sac_dir: Path) -> list[Path]:
    # Not is_file(): a FIFO named like a tarball fails the stage by name when opened, rather than being passed over.
    return sorted(p for p in sac_dir.glob("*") if not p.is_dir() and p.name.endswith(TAR_SUFFIXES))


def _member_name(member: tarfile.TarInfo) -> str:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    return name


def drop_databases(sac_dir: Path, scratch: Path) -> list[Path]:
    """The drop's SQLite file(s): `sac/*.sqlite`, else the ones inside the public tarball (extracted once)."""
    # Not is_file(): a FIFO or socket named *.sqlite is reported as unreadable by the stage, not passed over.
    found = sorted(p for p in sac_dir.glob("*.sqlite") if not p.is_dir())
    if found:
        return found
    for tar_path in tarballs(sac_dir):
        with open_regular(tar_path) as raw, tarfile.open(fileobj=raw) as tar:
            for member in tar:
                name = _member_name(member)
                rel = name[len(TAR_PREFIX):] if name.startswith(TAR_PREFIX) else None
                # Only regular files directly under the prefix: never a link, never a climbing name.
                if not rel or "/" in rel or not rel.endswith(".sqlite") or not member.isfile():
                    continue
                dest = scratch / rel
                if not (dest.is_file() and dest.stat().st_size == member.size):
                    with atomic_path(dest) as tmp, tar.extractfile(member) as src, open(tmp, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                found.append(dest)
    if not found:
        raise FileNotFoundError(
            f"no SAC database in {sac_dir}: put sac_public_2022_06_29.sqlite (or the public tarball, members "
            f"under {TAR_PREFIX}) there, or set AESTHETIC_RAW to the folder that holds sac/"
        )
    return sorted(found)


def unsafe_path_reason(path: str | None) -> str | None:
    """Why a paths.path value may not be opened, or None. Checked before any file is touched."""
    if path is None or not path.strip():
        return "missing: no paths row for this image"
    if "\x00" in path or "\\" in path:
        return f"unsafe path: {path!r} has a NUL or backslash"
    pure = PurePosixPath(path)
    if pure.is_absolute():
        return f"unsafe path: {path!r} is absolute"
    if ".." in pure.parts:
        return f"unsafe path: {path!r} climbs out of the image root with '..'"
    return None


Located = tuple[Candidate, "str | bytes | RejectedImage", str]


class ImageSources:
    """The images of a drop: files under `sac/images/`, then members of the public tarball(s)."""

    def __init__(self, sac_dir: Path) -> None:
        self.root = sac_dir / "images"
        self.tars = tarballs(sac_dir)

    def describe(self) -> str:
        return ", ".join([str(self.root), *map(str, self.tars)])

    def locate(self, candidates: Iterable[Candidate]) -> Iterator[Located]:
        """(candidate, file path | bytes | RejectedImage, source label) for candidates with safe paths."""
        root = self.root.resolve()
        # Several images may name the same file: each gets it (none may end neither cropped nor rejected).
        wanted: dict[str, list[Candidate]] = {}
        for c in candidates:
            assert c.path is not None and unsafe_path_reason(c.path) is None, "check unsafe_path_reason first"
            path = self.root / c.path
            if os.path.lexists(path):
                try:
                    located: str | RejectedImage = str(under_root(root, c.path, ""))
                except OutsideRoot as exc:
                    located = RejectedImage(f"unsafe path: {exc} (link)")
                yield c, located, str(path)
            else:
                wanted.setdefault(TAR_PREFIX + str(PurePosixPath(c.path)), []).append(c)
        for tar_path in self.tars:
            if not wanted:
                break
            with open_regular(tar_path) as raw, tarfile.open(fileobj=raw) as tar:
                for member in tar:
                    named = wanted.pop(_member_name(member), None)
                    if named is None:
                        continue
                    label = f"{tar_path}:{member.name}"
                    if member.issym() or member.islnk():
                        found = RejectedImage(f"unsafe path: {member.name} is a link inside {tar_path.name}")
                    elif not member.isfile():
                        found = RejectedImage(f"not an image: {member.name} is not a regular file")
                    else:
                        with tar.extractfile(member) as fh:
                            found = fh.read()
                    for c in named:
                        yield c, found, label
                    if not wanted:
                        break
        for named in wanted.values():
            for c in named:
                yield c, RejectedImage(f"missing: {c.path} is in none of {self.describe()}"), c.path or ""


@dataclass
class IngestReport:
    snapshot: str
    images_read: int = 0
    ratings: RatingCounts = field(default_factory=lambda: RatingCounts({}))  # the rows read (see next)
    ratings_after_rowid: int | None = None  # only rows past it were read (an earlier snapshot had them); None: all
    images_after_rowid: int | None = None  # only images past it were staged (as for ratings); None: all
    ratings_new: int = 0
    rating_rejects_new: int = 0
    images_added: int = 0
    images_rejected: int = 0
    histograms_written: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)  # where the seconds went
    studio: dict | None = None  # a studio snapshot's picks against the critic (ingest/sac_studio.py); else None

    @property
    def histograms_updated(self) -> int:
        """Histograms rebuilt for images that already had a crop (new ratings on old images)."""
        return max(self.histograms_written - self.images_added, 0)


def _batched(items: Iterable, n: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


def split_for(c: Candidate) -> str:
    # By generation: the images of one prompt never straddle splits. No generation: the image alone.
    return three_way_split(str(c.gid) if c.gid is not None else f"iid:{c.iid}", SPLIT_SALT)


def _triage(candidates: Iterable[Candidate]) -> tuple[dict[str, list[Reject]], list[Candidate]]:
    """(rejects by stage, candidates to crop): ids that are not integers, images without votes and unsafe
    paths are rejected before any file is touched."""
    rejects: dict[str, list[Reject]] = {"parse": [], "ratings": [], "image": []}
    to_locate = []
    for c in candidates:
        if c.iid is None:
            rejects["parse"].append(Reject(c.raw_id, f"bad id: images.id {c.raw_id!r} is not an integer"))
        elif not c.has_votes:
            rejects["ratings"].append(Reject(str(c.iid), "no votes: no rating 1..10 for this image"))
        elif reason := unsafe_path_reason(c.path):
            rejects["image"].append(Reject(str(c.iid), reason))
        else:
            to_locate.append(c)
    return rejects, to_locate


@contextmanager
def _timed(steps: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        steps[name] = steps.get(name, 0.0) + time.perf_counter() - t0


@dataclass(frozen=True)
class SacSettings:
    """How SAC's ratings become targets and its images crops; which snapshots to merge."""

    temperature: float = bounded(1.0, SOFTMAX_TEMPERATURE, "p_softmax temperature; 1 reproduces the original "
                                                           "notebook's target")
    crop_size: int = bounded_like(CropSpec, "size", "side of the square crop, px")
    crop_mode: str = setting(CropSpec.mode, "center: centred square; squash: whole frame resized")
    workers: int = bounded(0, CROP_WORKERS, "crop processes; 0 = one per CPU core")
    allow_shrink: bool = setting(False, "let a run reject more than half of the accepted images "
                                        "(ingest/shrink_guard.py)")
    # The run's partitions (assets/sac.py supplies them, never the run config); empty: the drop's own sac/*.sqlite.
    snapshots: tuple[str, ...] = setting((), "inbox snapshot keys to merge")

    def __post_init__(self) -> None:
        check_ranges(self)
        _ = self.spec  # CropSpec refuses a crop_mode it does not know

    @property
    def spec(self) -> CropSpec:
        return CropSpec(size=self.crop_size, mode=self.crop_mode)


@dataclass
class SacReport:
    snapshots: list[IngestReport]
    mean_scores: list[float]  # of every SAC image in the warehouse afterwards
    unreadable: dict[str, str] = field(default_factory=dict)  # drop file -> why it was skipped


def ingest_sac(paths: Paths, connect: Connect, settings: SacSettings, batch: str | None = None,
               log: Log = no_log) -> SacReport:
    """The SAC stage: the configured inbox snapshots, or the drop's own databases, merged one after the other.

    Ratings are identified by (sid, iid) and snapshots by their content key, so rejects and rows carry those
    rather than the run's batch id. A full disk stops it with NoSpaceLeft; crops written but not recorded are
    removed (ingest/crop_folder.py).
    """
    with paths.full_disk_as_error(), crop_folder(paths, DATASET, connect, log):
        return _ingest_sac(paths, connect, settings, log)


def _ingest_sac(paths: Paths, connect: Connect, settings: SacSettings, log: Log) -> SacReport:
    sac_dir = paths.raw / DATASET
    if settings.snapshots:
        snapshots: list[Snapshot | Path] = [find_snapshot(sac_dir / INBOX, key) for key in settings.snapshots]
    else:
        snapshots = list(drop_databases(sac_dir, paths.home / "tmp" / DATASET))
    reports, unreadable = [], {}
    for item in snapshots:
        try:
            snapshot = item if isinstance(item, Snapshot) else read_snapshot(item)
            report = ingest_snapshot(paths, connect, settings, snapshot)
            report.studio = studio_summary(snapshot.path)
        except (SqliteFileError, NotRegularFile) as exc:
            if len(snapshots) == 1:
                raise
            # One bad file of several: the others are still merged; the metadata lists this one.
            unreadable[str(item.path if isinstance(item, Snapshot) else item)] = str(exc)
            log(f"sac: skipped {exc}")
            continue
        log(f"{snapshot.key}: {report}")
        reports.append(report)
    if not reports:
        raise SqliteFileError("no SAC database could be read: " + "; ".join(unreadable.values()))
    with connect() as conn:
        means = mean_scores(conn)
    return SacReport(reports, means, unreadable)


def ingest_snapshot(paths: Paths, connect: Connect, settings: SacSettings, snapshot: Snapshot) -> IngestReport:
    """Merge one snapshot into the warehouse (steps in the module docstring); safe to re-run."""
    import duckdb
    t0 = time.perf_counter()
    sources, images_dir, to_stored = ImageSources(paths.raw / DATASET), paths.images_dir(DATASET), paths.to_stored
    spec, workers = settings.spec, settings.workers or os.cpu_count()
    report = IngestReport(snapshot.key)
    steps = report.step_seconds
    ingest_id = new_ingest_id()

    def merge_ratings(conn: duckdb.DuckDBPyConnection) -> tuple[dict[str, list[Reject]], list[Candidate], ImageEnd]:
        with transaction(conn):
            with _timed(steps, "stage"):
                staged = stage_snapshot(conn)
            report.images_read, report.ratings = staged.images, staged.ratings
            report.ratings_after_rowid = staged.after_rowid
            report.images_after_rowid = staged.images_after_rowid
            with _timed(steps, "insert ratings"):
                report.ratings_new = insert_new_ratings(conn, snapshot.key, ingest_id, staged.tail_only)
            with _timed(steps, "rejects and crop candidates"):
                report.rating_rejects_new = record_rating_rejects(conn, snapshot.key, staged.tail_only)
                remember_boundary(conn, snapshot.key, staged)
                rejects, to_locate = _triage(crop_candidates(conn, staged))
                images_end = image_boundary(conn, staged)
            if not to_locate:
                # Nothing to crop (a backfill of ratings alone): step 3 joins this transaction, which saves
                # a second connection and commit.
                with _timed(steps, "histograms"):
                    _store_results(conn, snapshot, report, [], rejects, settings, images_end)
        return rejects, to_locate, images_end

    check_sqlite_file(snapshot.path)
    with connect() as conn:
        try:
            rejects, to_locate, images_end = with_snapshot(conn, snapshot.path, merge_ratings)
        except duckdb.Error as exc:  # DuckDB's own message names no file
            raise SqliteFileError(f"{snapshot.path}: reading this SAC snapshot failed: {exc}") from exc
        if not to_locate:
            with _timed(steps, "checkpoint"):
                checkpoint(conn, defer_vacuum_of="histograms")

    accepted = _crop(sources, to_locate, images_dir, to_stored, spec, workers, rejects["image"], steps)
    if to_locate:
        with connect() as conn:
            with _timed(steps, "histograms"):
                with transaction(conn):
                    _store_results(conn, snapshot, report, accepted, rejects, settings, images_end)
            with _timed(steps, "checkpoint"):
                checkpoint(conn, defer_vacuum_of="histograms")
    report.images_added = len(accepted)
    report.images_rejected = sum(len(items) for items in rejects.values())
    for items in rejects.values():
        for r in items:
            kind = r.reason.split(":", 1)[0]
            report.rejects_by_reason[kind] = report.rejects_by_reason.get(kind, 0) + 1
    for status, n in report.ratings.by_status.items():
        if status not in ("ok", "null"):
            report.rejects_by_reason[status] = report.rejects_by_reason.get(status, 0) + n
    report.seconds = time.perf_counter() - t0
    return report


def _crop(
    sources: ImageSources, to_locate: list[Candidate], images_dir: Path, to_stored: Callable[[str | Path], str],
    spec: CropSpec, workers: int | None, image_rejects: list[Reject], steps: dict[str, float],
) -> list[ImageRow]:
    """Step 2: crop the candidates (no connection held); the images rows of those accepted."""
    accepted: list[ImageRow] = []
    if not to_locate:
        return accepted
    with _timed(steps, "crops"):
        for chunk in _batched(sources.locate(to_locate), CROP_BATCH):
            jobs, meta = [], {}
            for c, source, label in chunk:
                if isinstance(source, RejectedImage):
                    image_rejects.append(Reject(str(c.iid), str(source)))
                    continue
                jobs.append(CropJob(str(c.iid), source, str(images_dir / f"{c.iid}.jpg")))
                meta[str(c.iid)] = (c, label)
            for job, outcome in crop_many(jobs, spec, workers):
                if isinstance(outcome, CropResult):
                    c, label = meta[job.item_id]
                    accepted.append(
                        ImageRow(job.item_id, split_for(c), label, to_stored(outcome.path),
                                 outcome.width, outcome.height, outcome.sha256)
                    )
                else:
                    image_rejects.append(Reject(job.item_id, str(outcome)))
    return accepted


def _store_results(
    conn: duckdb.DuckDBPyConnection, snapshot: Snapshot, report: IngestReport, accepted: list[ImageRow],
    rejects: dict[str, list[Reject]], settings: SacSettings, images_end: ImageEnd,
) -> None:
    """Step 3: images rows, image rejects, the histograms of stale and newly cropped images, and where the
    snapshot's images end (every image up to there is now cropped or rejected).

    The shrink guard comes first. Only images without a crop are candidates, so a SAC snapshot adds and never
    takes an accepted image away; the guard stops the transaction should that ever change."""
    reasons = {r.item_id: r.reason for items in rejects.values() for r in items}
    lost = {i: reasons[i] for i in accepted_among(conn, DATASET, reasons)}
    if lost:
        guard_shrink(DATASET, count_images(conn, DATASET), lost, settings.allow_shrink)
    accepted_ids = [r.image_id for r in accepted]
    upsert_images(conn, DATASET, accepted)
    # An item's rejects from an earlier snapshot give way to what happened to it now.
    clear_rejects(conn, DATASET, "image", accepted_ids + [r.item_id for r in rejects["ratings"]])
    clear_rejects(conn, DATASET, "ratings", accepted_ids + [r.item_id for r in rejects["image"]])
    for stage, items in rejects.items():
        record_new_rejects(conn, stage, items, snapshot.key)
    report.histograms_written = merge_pending_histograms(conn, accepted_ids, settings.temperature)
    remember_image_boundary(conn, snapshot.key, images_end)
    log_snapshot(conn, snapshot.key, str(snapshot.path), snapshot.sha256, report.ratings,
                 report.ratings_new, report.images_read)


def mean_score_plot_png(means: Sequence[float], title: str = "SAC mean scores") -> bytes:
    """A small histogram of mean scores as PNG bytes (for run metadata)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.4), dpi=80)
    try:
        ax.hist(list(means), bins=36, range=(1, 10), color="#4c72b0")
        ax.set_xlabel("mean score")
        ax.set_ylabel("images")
        ax.set_title(f"{title} (n={len(means)})", fontsize=9)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()
