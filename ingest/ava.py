"""AVA: ratings from AVA.txt, splits from the official lists, crops of the photos (docs/ava.md).

`ingest_ava` is the whole stage as a plain function; assets/ava.py only wires it
to Dagster. Every line of AVA.txt ends in exactly one place: an accepted image
(images + histograms) or one rejects row, so accepted + rejected = lines read.

Incremental: the crop state table remembers each item's source signature (where,
size, mtime), the crop settings and the outcome. An item whose signature, settings
and crop file are unchanged is not decoded again, and nothing is rewritten for it.
For an archive member "where" is its name in the archive (not the archive's path) and
the third part is the format's own change signature: the mtime of a tar member, the
CRC-32 of a zip or 7z member, the CRC-32 of a Parquet row's bytes (ingest/archives.py).
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from common.bounds import Range, bounded, bounded_like, check_ranges, setting
from common.contact_sheet import contact_sheet, open_cell, png_bytes
from common.regular_files import NotRegularFile, OutsideRoot, read_regular_file, under_root
from ingest.archives import ParquetColumns, parquet_sources, seven_zip_sources, zip_sources
from ingest.crop_folder import crop_folder
from ingest.crops import CROP_WORKERS, CropJob, CropResult, CropSpec, RejectedImage, crop_pool, submit_crops
from ingest.fetch import (
    FetchFailure,
    HttpOptions,
    Source,
    http_sources,
    local_sources,
    tar_sources,
    template_fields,
)
from ingest.paths import Connect, Log, Paths, no_log
from ingest.shrink_guard import guard_shrink, lost_items
from ingest.splits import hash_fraction
from ingest.text_lines import encoding_of, split_lines, text_lines
from warehouse import ava as wh
from warehouse.ava import DATASET, NAMES_STAGE
from warehouse.records import ImageRow

N_TOKENS = 15  # index, image id, ten vote counts, two tags, challenge id
VAL_FRACTION = 0.05
# Real AVA images have at most a few hundred votes each; far more is a corrupt line, and the
# counts must fit DuckDB's INTEGER[10] either way.
MAX_VOTES = 1_000_000
_INT32_MAX = 2**31 - 1
VAL_SALT = "ava-val"
DEFAULT_TEST_LIST = "generic_test.jpgl"
ACQUISITIONS = ("directory", "tar", "http", "zip", "parquet", "7z")
ARCHIVE_ACQUISITIONS = ("tar", "zip", "parquet", "7z")  # the photos come from `archive`
# A batch of fewer crops than this, with no pool started yet, is cropped inline: starting the workers would
# take longer than the crops.
INLINE_BELOW = 64
_LINE = re.compile(r"\d+(?: \d+){14}")


@dataclass(frozen=True)
class AvaRow:
    line: int
    image_id: str
    counts: tuple[int, ...]
    tag1: int
    tag2: int
    challenge_id: int
    index: int = 0  # the line's first column

    def fields(self) -> dict[str, int | str]:
        """What a URL template may name: every AVA.txt column, the line number, and challenge_range, the
        thousand-wide folder the original site grouped challenges in (challenge 1395 -> "1000-1999")."""
        low = self.challenge_id // 1000 * 1000
        return {"index": self.index, "image_id": self.image_id,
                **{f"c{k}": n for k, n in enumerate(self.counts, start=1)}, "tag1": self.tag1, "tag2": self.tag2,
                "challenge_id": self.challenge_id, "line": self.line, "challenge_range": f"{low}-{low + 999}"}


TEMPLATE_FIELDS = tuple(AvaRow(0, "0", (0,) * 10, 0, 0, 0).fields())


@dataclass
class ParsedRatings:
    rows: list[AvaRow] = field(default_factory=list)  # first occurrence of each id, zero-vote rows excluded
    rejects: list[wh.RejectRow] = field(default_factory=list)
    lines_read: int = 0
    blank_lines: int = 0


def _line_problem(text: str) -> str | None:
    tokens = text.split(" ")
    if len(tokens) != N_TOKENS:
        return f"unparsable: expected {N_TOKENS} integers separated by single spaces, got {len(tokens)} tokens"
    for k, token in enumerate(tokens, start=1):
        if not token.isascii() or not token.isdigit():
            return f"unparsable: token {k} {token[:20]!r} is not a non-negative integer"
    return None


def parse_ava_lines(lines: Iterable[bytes | str]) -> ParsedRatings:
    """Strict AVA.txt parsing; line numbers are 1-based. Blank lines carry no item and are only counted."""
    out = ParsedRatings()
    first_line: dict[str, int] = {}
    repeated: set[str] = set()
    for n, raw in enumerate(lines, start=1):
        if not raw.isascii():  # also for text: \d and int() would take other scripts' digits
            out.lines_read += 1
            reason = f"unparsable: line is not ASCII text: {raw[:40]!r}"
            out.rejects.append(wh.RejectRow(f"line:{n}", "parse", reason))
            continue
        text = (raw.decode("ascii") if isinstance(raw, bytes) else raw).strip("\r\n\t ")
        if not text:
            out.blank_lines += 1
            continue
        out.lines_read += 1
        problem = None if _LINE.fullmatch(text) else _line_problem(text)
        if problem:
            out.rejects.append(wh.RejectRow(f"line:{n}", "parse", problem))
            continue
        values = [int(t) for t in text.split(" ")]
        if max(values[12:]) > _INT32_MAX:  # tags and challenge land in INTEGER columns
            out.rejects.append(wh.RejectRow(f"line:{n}", "parse", "unparsable: a tag or challenge id is out of range"))
            continue
        image_id, counts = str(values[1]), tuple(values[2:12])
        if image_id in first_line:
            # The first occurrence wins; the first repeat is filed under the id itself (so a search
            # for the id finds it), any further repeat under its line so none overwrites another.
            item = f"line:{n}" if image_id in repeated else image_id
            repeated.add(image_id)
            reason = f"duplicate: image id {image_id} on line {n} repeats line {first_line[image_id]}; kept the first"
            out.rejects.append(wh.RejectRow(item, "parse", reason))
            continue
        first_line[image_id] = n
        if sum(counts) == 0:
            out.rejects.append(wh.RejectRow(image_id, "ratings", f"zero votes: all ten counts are 0 on line {n}"))
            continue
        if max(counts) > MAX_VOTES:
            reason = f"out of range: {max(counts)} votes for one score on line {n} (at most {MAX_VOTES})"
            out.rejects.append(wh.RejectRow(image_id, "ratings", reason))
            continue
        out.rows.append(AvaRow(n, image_id, counts, values[12], values[13], values[14], values[0]))
    return out


def parse_ava_txt(path: str | Path) -> ParsedRatings:
    """AVA.txt decoded by its BOM (UTF-8, UTF-16; UTF-8 without one): a line that does not decode, or is not
    ASCII, is an unparsable line like any other."""
    path = Path(path)
    try:
        data = read_regular_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"AVA ratings file not found: {path} (expected $AESTHETIC_RAW/ava/AVA.txt)") from None
    codec, skip = encoding_of(data)
    if codec == "utf-8":  # the lines must be ASCII anyway: the parser takes their bytes, with no decoding pass
        return parse_ava_lines(split_lines(data[skip:], b"\n"))
    return parse_ava_lines(line.text if line.text is not None else line.raw for line in text_lines(data))


def parse_names(path: str | Path) -> tuple[list[tuple[int, str]], list[wh.RejectRow]]:
    """tags.txt / challenges.txt: `id name`, split on the first space (names hold spaces); decoded by the BOM.
    Returns (rows, a 'names' reject per line that does not decode or parse, as `<file>:line:<n>`); a repeated
    id keeps the first."""
    path = Path(path)
    rows: dict[int, str] = {}
    rejects: list[wh.RejectRow] = []
    for line in text_lines(read_regular_file(path)):
        item = f"{path.name}:line:{line.number}"
        if line.text is None:
            rejects.append(wh.RejectRow(item, NAMES_STAGE, line.undecodable(path.name)))
            continue
        text = line.text.strip()
        if not text:
            continue
        head, _, name = text.partition(" ")
        if not head.isascii() or not head.isdigit() or int(head) > _INT32_MAX or not name.strip():
            reason = f"unparsable: {path.name} line {line.number} is not `id name`: {text[:60]!r}"
            rejects.append(wh.RejectRow(item, NAMES_STAGE, reason))
            continue
        rows.setdefault(int(head), name.strip())
    return sorted(rows.items()), rejects


class ListFileError(ValueError):
    """An image list the settings name that cannot be used: missing, not a regular file, or not one id a line.
    str(exc) is one line naming the file (and line), never its content: the name may be a typo for any file."""


def read_id_list(path: str | Path) -> set[str]:
    """An AVA .jpgl list: one image id a line. A line that is not an id is an error, not a guess."""
    path = Path(path)
    try:
        data = read_regular_file(path)
    except FileNotFoundError:
        raise ListFileError(f"AVA image list not found: {path}") from None
    except NotRegularFile as exc:
        raise ListFileError(f"AVA image list {exc}") from None
    ids = set()
    for line in text_lines(data):
        if line.text is None:
            raise ListFileError(f"{path}:{line.number}: not {line.encoding.upper()} text")
        token = line.text.strip()
        if not token:
            continue
        if not token.isascii() or not token.isdigit():
            raise ListFileError(f"{path}:{line.number}: not an image id (a list holds one id a line)")
        ids.add(str(int(token)))
    return ids


def list_files(ava_dir: Path, opts: AvaSettings) -> tuple[Path, Path | None]:
    """The test and train lists the settings name, inside ava/aesthetics_image_lists/ (OutsideRoot if not)."""
    lists = ava_dir / "aesthetics_image_lists"
    test = under_root(lists, opts.test_list, "test_list")
    return test, under_root(lists, opts.train_list, "train_list") if opts.train_list else None


def split_for(
    image_id: str, test_ids: set[str], train_ids: set[str] | None, val_fraction: float = VAL_FRACTION
) -> str | None:
    """'test' if listed as test; else, if train_ids is None or lists it, 'val' for a stable
    val_fraction of ids (sha256 of the id) and 'train' for the rest; None when no list names it."""
    if image_id in test_ids:
        return "test"
    if train_ids is not None and image_id not in train_ids:
        return None
    return "val" if hash_fraction(image_id, VAL_SALT) < val_fraction else "train"


@dataclass(frozen=True)
class AvaSettings:
    """How photos are acquired and cropped, and which list pair sets the splits. The drop itself is
    $AESTHETIC_RAW/ava (AVA.txt, tags.txt, challenges.txt, aesthetics_image_lists/, images/). Flat, with the
    names the run config and docs/contract.md use; the parts the stage hands on (`spec`, `http`, `parquet`, the
    source as a folder, archive or template) are composed from them."""

    acquisition: str = setting("directory", f"one of {ACQUISITIONS}")
    source: str = setting("", "directory: folder of <id>.jpg (default $AESTHETIC_RAW/ava/images); tar, zip, 7z: the "
                              "archive (7z: x.7z or its first volume x.7z.001), parquet: a file or a folder of shards; "
                              "a bare file name is looked up in $AESTHETIC_RAW/ava/ (where ava_archive puts it); "
                              "http: URL template with {image_id} and any AVA.txt column, e.g. {challenge_id}")
    parquet_id_column: str = setting(ParquetColumns.id, "parquet: column with the AVA id (or a file name); struct "
                                                        "fields as image.path")
    parquet_image_column: str = setting(ParquetColumns.image, "parquet: column with the encoded image bytes, or a "
                                                              "struct with a `bytes` field (Hugging Face's Image)")
    crop_size: int = bounded_like(CropSpec, "size", "side of the square crop, px")
    crop_mode: str = setting(CropSpec.mode, "center: centred square; squash: whole frame resized")
    min_side: int = bounded_like(CropSpec, "min_side", "sources whose short side is under this are rejected")
    test_list: str = setting(DEFAULT_TEST_LIST, "file under ava/aesthetics_image_lists/ naming test ids")
    train_list: str = setting("", "e.g. animal_train.jpgl; empty: every id not in test_list is train/val")
    http_concurrency: int = bounded_like(HttpOptions, "concurrency", "http: requests in flight")
    http_timeout_s: float = bounded_like(HttpOptions, "timeout_s", "http: seconds one request may stall")
    http_retries: int = bounded_like(HttpOptions, "retries", "http: further tries after a failure that may pass")
    max_bytes: int = bounded_like(HttpOptions, "max_bytes", "largest source file accepted from an archive or http")
    workers: int = bounded(0, CROP_WORKERS, "crop processes; 0 = all cores")
    allow_shrink: bool = setting(False, "let this run reject more than half of the accepted images (a drop that "
                                        "really shrank); off, such a run stops before deleting anything")
    # Not in the run config (assets/ava.py): the split rule and the memory of one batch are the stage's own.
    val_fraction: float = bounded(VAL_FRACTION, Range(0.0, 1.0, "a share of the train ids", hi_open=True))
    batch_size: int = bounded(2048, Range(1, 65536, "items cropped and written to the warehouse together: their "
                                                    "sources and crops are held at once"))

    def __post_init__(self) -> None:
        if self.acquisition not in ACQUISITIONS:
            raise ValueError(f"acquisition must be one of {ACQUISITIONS}, got {self.acquisition!r}")
        if self.acquisition != "directory" and not self.source:
            raise ValueError(f"acquisition {self.acquisition!r} needs `source` (archive path or URL template)")
        if self.acquisition == "http":
            unknown = [n for n in template_fields(self.url_template) if n not in TEMPLATE_FIELDS]
            if unknown:
                raise ValueError(f"URL template names {{{unknown[0]}}}; it may name {', '.join(TEMPLATE_FIELDS)}")
        check_ranges(self)
        _ = self.spec  # CropSpec refuses a crop_mode it does not know

    @property
    def images_dir(self) -> Path | None:
        """directory mode: the folder of photos; None: $AESTHETIC_RAW/ava/images."""
        return Path(self.source).expanduser() if self.acquisition == "directory" and self.source else None

    @property
    def archive(self) -> Path | None:
        """tar, zip, parquet (a file or a folder of shards) and 7z (a file or volume .001)."""
        return Path(self.source).expanduser() if self.acquisition in ARCHIVE_ACQUISITIONS else None

    @property
    def url_template(self) -> str:
        """http mode, e.g. https://host/ava/{image_id}.jpg; fetched files are kept under $AESTHETIC_HOME/downloads."""
        return str(self.source) if self.acquisition == "http" else ""

    @property
    def http(self) -> HttpOptions:
        return HttpOptions(self.http_concurrency, self.http_timeout_s, self.http_retries, max_bytes=self.max_bytes)

    @property
    def parquet(self) -> ParquetColumns:
        return ParquetColumns(self.parquet_id_column, self.parquet_image_column)

    @property
    def spec(self) -> CropSpec:
        return CropSpec(size=self.crop_size, mode=self.crop_mode, min_side=self.min_side)


def spec_key(spec: CropSpec) -> str:
    return f"{spec.size}/{spec.mode}/{spec.min_side}/q{spec.quality}"


@dataclass
class AvaReport:
    lines_read: int = 0
    blank_lines: int = 0
    accepted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  # "stage/kind" -> n
    splits: dict[str, int] = field(default_factory=dict)
    cropped: int = 0  # image work done this run (accepted or rejected)
    up_to_date: int = 0  # items skipped because source, settings and crop were unchanged
    crop_seconds: float = 0.0
    images_written: int = 0
    rejects_written: int = 0
    rejects_deleted: int = 0
    histograms_changed: int = 0
    tags: int = 0
    challenges: int = 0
    bad_name_lines: int = 0  # 'names' rejects: tags.txt / challenges.txt lines (or files) not read
    preview: list[tuple[str, str, float]] = field(default_factory=list)  # (image_id, crop path, mean)
    preview_png: bytes = b""  # contact sheet of those crops, lowest to highest mean

    @property
    def images_per_s(self) -> float:
        return self.cropped / self.crop_seconds if self.crop_seconds > 0 else 0.0


def archive_path(paths: Paths, archive: Path) -> Path:
    """A bare file name is a file in $AESTHETIC_RAW/ava/, where ava_archive and `aesthetic download ava` put
    it; a path with a folder is taken as it is."""
    return paths.raw / DATASET / archive if archive.parent == Path(".") else archive


def acquire(paths: Paths, settings: AvaSettings, ids: list[str], needs_data: Callable[[Source], bool],
            fields: Callable[[str], dict[str, int | str]] | None = None) -> Iterator[Source | FetchFailure]:
    """The sources of ids under the configured acquisition; fields(id) fills an http template's columns."""
    mode, cap = settings.acquisition, settings.http.max_bytes
    archive = archive_path(paths, settings.archive) if settings.archive else None
    if mode == "tar":
        return tar_sources(archive, ids, needs_data, max_bytes=cap)
    if mode == "zip":
        return zip_sources(archive, ids, max_bytes=cap)
    if mode == "parquet":
        return parquet_sources(archive, ids, settings.parquet, max_bytes=cap)
    if mode == "7z":
        return seven_zip_sources(archive, ids, needs_data, max_bytes=cap)
    if mode == "http":
        return http_sources(settings.url_template, ids, paths.downloads_dir(DATASET), settings.http, fields=fields)
    return local_sources(settings.images_dir or paths.raw / DATASET / "images", ids)


class _Cropper:
    """Batches of crop jobs over one process pool for the whole run.

    `submit` returns at once, so the stage writes one batch to the warehouse while the workers crop the
    next; `seconds` is the wall time from the first submit to the last outcome collected.
    """

    def __init__(self, spec: CropSpec, workers: int) -> None:
        self.spec, self.workers = spec, workers or os.cpu_count() or 1
        self.pool: Executor | None = None
        self.started: float | None = None
        self.seconds = 0.0

    def warm(self) -> None:
        """Start the workers now, so their start-up overlaps with listing the sources for the first batch."""
        if self.pool is None and self.workers > 1:
            self.pool = crop_pool(self.workers, warm=True)

    def submit(self, jobs: list[CropJob]) -> Iterator[tuple[CropJob, CropResult | RejectedImage]]:
        if self.started is None:
            self.started = time.perf_counter()
        chunk = max(1, min(64, len(jobs) // (self.workers * 4) or 1))
        if self.pool is None and self.workers > 1 and len(jobs) >= INLINE_BELOW:
            self.pool = crop_pool(self.workers)
        return submit_crops(jobs, self.spec, self.pool, chunk)

    def collected(self) -> None:
        """Called after a batch's last outcome: the crop clock runs to here."""
        self.seconds = time.perf_counter() - (self.started or time.perf_counter())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def assign_splits(rows: list[AvaRow], opts: AvaSettings,
                  ava_dir: Path) -> tuple[dict[str, tuple[str, AvaRow]], list[wh.RejectRow]]:
    """image_id -> (split, row) under the configured list pair; ids no list names are rejects (stage 'split')."""
    test_list, train_list = list_files(ava_dir, opts)
    test_ids = read_id_list(test_list)
    train_ids = read_id_list(train_list) if train_list else None
    wanted: dict[str, tuple[str, AvaRow]] = {}
    rejects = []
    for row in rows:
        split = split_for(row.image_id, test_ids, train_ids, opts.val_fraction)
        if split is None:
            reason = f"not listed: image id is in neither {opts.train_list} nor {opts.test_list}"
            rejects.append(wh.RejectRow(row.image_id, "split", reason))
        else:
            wanted[row.image_id] = (split, row)
    return wanted, rejects


def read_names(ava_dir: Path) -> tuple[dict[str, list[tuple[int, str]]], list[wh.RejectRow]]:
    """Rows for ava_tags and ava_challenges (empty when the file is absent), and the 'names' rejects: lines
    that do not decode or parse, and a file that cannot be read (its name as the item)."""
    names, rejects = {}, []
    for table, file in (("ava_tags", "tags.txt"), ("ava_challenges", "challenges.txt")):
        path = ava_dir / file
        rows: list[tuple[int, str]] = []
        if os.path.lexists(path):
            try:
                rows, bad = parse_names(under_root(ava_dir, file, ""))
            except OutsideRoot as exc:  # a link out of the drop: never read, so nothing of it is shown
                bad = [wh.RejectRow(file, NAMES_STAGE, f"unsafe path: {exc}")]
            except OSError as exc:  # a FIFO, a directory, a broken link, no permission: the names are unknown
                reason = str(exc) if isinstance(exc, NotRegularFile) else f"unreadable: {path}: {exc.strerror or exc}"
                bad = [wh.RejectRow(file, NAMES_STAGE, reason)]
            rejects += bad
        names[table] = rows
    return names, rejects


def ingest_ava(
    paths: Paths,
    connect: Connect,
    opts: AvaSettings,
    batch: str | None = None,
    log: Log = no_log,
) -> AvaReport:
    """The whole AVA stage: parse, split, acquire, crop what changed, and bring the warehouse in step.

    A full disk stops it with NoSpaceLeft; crops written but not recorded are removed (ingest/crop_folder.py).
    """
    list_files(paths.raw / DATASET, opts)  # a list named outside its folder stops the stage before any work
    with paths.full_disk_as_error(), crop_folder(paths, DATASET, connect, log):
        return _ingest_ava(paths, connect, opts, batch, log)


def _ingest_ava(paths: Paths, connect: Connect, opts: AvaSettings, batch: str | None, log: Log) -> AvaReport:
    report = AvaReport()
    ava_dir = paths.raw / DATASET
    parsed = parse_ava_txt(ava_dir / "AVA.txt")
    report.lines_read, report.blank_lines = parsed.lines_read, parsed.blank_lines
    wanted, split_rejects = assign_splits(parsed.rows, opts, ava_dir)
    names, name_rejects = read_names(ava_dir)
    report.bad_name_lines = len(name_rejects)
    for r in name_rejects[:10]:
        log(f"ava: {r.reason}")
    report.tags, report.challenges = len(names["ava_tags"]), len(names["ava_challenges"])
    with connect() as conn:
        known = _Known(wh.load_crop_state(conn), wh.accepted_ids(conn), spec_key(opts.spec), paths.from_stored)

    crops = _CropPipeline(paths, connect, opts, known, wanted, report, log)
    crops.rejects += [*parsed.rejects, *split_rejects]
    crops.run()
    rejects, accepted = crops.rejects, crops.accepted

    reasons = {r.item_id: r.reason for r in rejects}
    guard_shrink("ava", len(known.stored_ids),
                 lost_items(known.stored_ids, accepted, reasons, "gone: no longer in AVA.txt"), opts.allow_shrink)
    _sync_warehouse(paths, connect, report, names, wanted, crops, rejects + name_rejects, batch)
    _count_outcomes(report, accepted, rejects)
    return report


@dataclass(frozen=True)
class _Known:
    """What the warehouse held before the run: each item's crop state and the accepted ids."""

    states: dict[str, wh.CropState]
    stored_ids: set[str]
    spec: str  # spec_key of this run's crop settings
    from_stored: Callable[[str], Path]

    def up_to_date(self, src: Source) -> bool:
        """Source (by its state key, size and mtime), settings and crop file all as the state recorded them."""
        st = self.states.get(src.item_id)
        if st is None or (st.source_key, st.source_size, st.source_mtime_ns, st.spec) != (
                src.state_key, src.size, src.mtime_ns, self.spec):
            return False
        if st.outcome == "rejected":
            return True
        if src.item_id not in self.stored_ids or not st.crop_path:
            return False
        try:
            crop = self.from_stored(st.crop_path).stat()
        except OSError:
            return False
        return (crop.st_size, crop.st_mtime_ns) == (st.crop_size, st.crop_mtime_ns)


_Outcomes = Iterator[tuple[CropJob, CropResult | RejectedImage]]


class _CropPipeline:
    """Acquire each wanted item, crop what changed in batches, and write each batch's outcomes to the warehouse in
    one transaction. One batch is with the workers while the next is filled (at most one in flight beside it)."""

    def __init__(self, paths: Paths, connect: Connect, opts: AvaSettings, known: _Known,
                 wanted: dict[str, tuple[str, AvaRow]], report: AvaReport, log: Log) -> None:
        self.paths, self.connect, self.opts, self.known, self.wanted = paths, connect, opts, known, wanted
        self.report, self.log = report, log
        self.out_dir = paths.images_dir(DATASET)
        # Every crop is out_dir/<id>.jpg, a file this stage writes itself (never a link): its stored form is the
        # folder's, resolved once, plus the name, where to_stored would resolve each path again.
        self.stored_out_dir = paths.to_stored(self.out_dir)
        self.cropper = _Cropper(opts.spec, opts.workers)
        self.accepted: dict[str, tuple[str, tuple[int, ...]]] = {}
        self.rejects: list[wh.RejectRow] = []
        # Accepted images whose source turned bad: recorded only once the shrink guard has let the run go on.
        self.demoted: list[wh.CropState] = []
        self.pending: list[tuple[CropJob, Source]] = []
        self.in_flight: list[tuple[list[tuple[CropJob, Source]], _Outcomes]] = []

    def run(self) -> None:
        states, wanted = self.known.states, self.wanted
        if sum(1 for i in wanted if i not in states or states[i].spec != self.known.spec) >= INLINE_BELOW:
            self.cropper.warm()  # crops certainly to do: workers start while the sources are listed
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            for item in acquire(self.paths, self.opts, sorted(wanted, key=int),
                                lambda s: not self.known.up_to_date(s), lambda image_id: wanted[image_id][1].fields()):
                self._take(item)
            self._flush(final=True)
        finally:
            self.cropper.close()
        self.report.crop_seconds = self.cropper.seconds

    def _take(self, item: Source | FetchFailure) -> None:
        if isinstance(item, FetchFailure):
            self.rejects.append(wh.RejectRow(item.item_id, "fetch", item.reason))
            return
        split, row = self.wanted[item.item_id]
        if self.known.up_to_date(item):
            self.report.up_to_date += 1
            st = self.known.states[item.item_id]
            if st.outcome == "ok":
                self.accepted[item.item_id] = (split, row.counts)
            else:
                self.rejects.append(wh.RejectRow(item.item_id, "image", st.reason or "rejected: earlier run"))
            return
        source = item.data if item.data is not None else item.ref if item.ref is not None else item.path
        if source is None:  # an archive member skipped as unchanged whose crop changed meanwhile
            self.rejects.append(wh.RejectRow(item.item_id, "fetch", "changed: crop changed during the run; rerun"))
            return
        self.pending.append((CropJob(item.item_id, source, str(self.out_dir / f"{item.item_id}.jpg")), item))
        if len(self.pending) >= self.opts.batch_size:
            self._flush()

    def _flush(self, final: bool = False) -> None:
        """Send the pending batch to the workers, then write what they finished before it."""
        if self.pending:
            self.in_flight.append((list(self.pending), self.cropper.submit([job for job, _ in self.pending])))
            self.pending.clear()
        while len(self.in_flight) > (0 if final else 1):
            self._record(*self.in_flight.pop(0))

    def _record(self, batch: list[tuple[CropJob, Source]], outcomes: _Outcomes) -> None:
        """Collect one batch's outcomes and write them to the warehouse in one transaction."""
        sources = {job.item_id: src for job, src in batch}
        images, counts, new_states, dropped = [], [], [], []
        for job, outcome in outcomes:
            src = sources[job.item_id]
            split, row = self.wanted[job.item_id]
            signature = (src.state_key, src.size, src.mtime_ns, self.known.spec)
            if isinstance(outcome, CropResult):
                stored = f"{self.stored_out_dir}/{os.path.basename(outcome.path)}"
                source_path = (self.paths.to_stored(Path(src.path)) if self.opts.acquisition == "directory"
                               else src.key)
                images.append(ImageRow(job.item_id, split, source_path, stored, outcome.width, outcome.height,
                                       outcome.sha256))
                counts.append((job.item_id, row.counts))
                new_states.append(wh.CropState(job.item_id, *signature, "ok", None, stored, outcome.file_size,
                                               outcome.file_mtime_ns))
                self.accepted[job.item_id] = (split, row.counts)
                continue
            reason = str(outcome)
            self.rejects.append(wh.RejectRow(job.item_id, "image", reason))
            state = wh.CropState(job.item_id, *signature, "rejected", reason)
            if job.item_id in self.known.stored_ids:
                self.demoted.append(state)  # its row and crop go with sync_accepted's prune, after the guard
                continue
            new_states.append(state)
            dropped.append(job.item_id)
            Path(job.dest).unlink(missing_ok=True)  # an older crop of a source that is now bad
        self.cropper.collected()
        with self.connect() as conn:
            self.report.images_written += wh.write_crop_batch(conn, images, counts, new_states, dropped)
        self.report.cropped += len(batch)
        self.log(f"ava: {self.report.cropped} cropped ({self.report.up_to_date} up to date), "
                 f"{self.report.cropped / max(self.cropper.seconds, 1e-9):.0f} images/s")


def _sync_warehouse(paths: Paths, connect: Connect, report: AvaReport, names: dict[str, list],
                    wanted: dict[str, tuple[str, AvaRow]], crops: _CropPipeline, rejects: list[wh.RejectRow],
                    batch: str | None) -> None:
    """After the shrink guard: names, metadata, demoted crops, accepted rows and rejects; then remove the crops
    of items that left."""
    with connect() as conn:
        for table, rows in names.items():
            wh.sync_names(conn, table, rows)
        wh.sync_image_meta(conn, [(r.image_id, r.line, r.tag1, r.tag2, r.challenge_id) for _, r in wanted.values()])
        if crops.demoted:
            wh.write_crop_batch(conn, [], [], crops.demoted, [])
        sync = wh.sync_accepted(conn, crops.accepted)
        wh.forget_crop_state(conn, wanted)
        report.rejects_written, report.rejects_deleted = wh.sync_rejects(conn, rejects, batch)
        report.preview = wh.preview_rows(conn, 8)
    report.preview_png = preview_grid([(f"{image_id}  mean {mean:.2f}", paths.from_stored(path))
                                       for image_id, path, mean in report.preview])
    report.histograms_changed = sync.histograms_changed
    for stored in sync.pruned_paths:  # crops of items that left the drop or lost their source
        path = paths.from_stored(stored)
        if path.parent.resolve() == crops.out_dir.resolve():
            path.unlink(missing_ok=True)


def _count_outcomes(report: AvaReport, accepted: dict[str, tuple[str, tuple[int, ...]]],
                    rejects: list[wh.RejectRow]) -> None:
    report.accepted = len(accepted)
    report.rejected = len(rejects)
    report.rejected_by_reason = dict(
        sorted(Counter(f"{r.stage}/{r.reason.split(':', 1)[0]}" for r in rejects).items())
    )
    report.splits = dict(sorted(Counter(split for split, _ in accepted.values()).items()))
    if report.accepted + report.rejected != report.lines_read:
        raise RuntimeError(
            f"AVA accounting broken: {report.accepted} accepted + {report.rejected} rejected"
            f" != {report.lines_read} lines read"
        )


def preview_grid(items: list[tuple[str, Path]], thumb: int = 112, cols: int = 4) -> bytes:
    """A PNG contact sheet: each crop with its caption (e.g. 'id  mean 5.43') under it; b"" for no items."""
    if not items:
        return b""
    sheet = contact_sheet([open_cell(path, caption) for caption, path in items], cols, thumb,
                          background=(250, 250, 250))
    return png_bytes(sheet, palette=True)
