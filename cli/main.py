"""The `aesthetic` command line: one verb per job a user has.

Each verb parses its own arguments and calls plain functions; heavy imports
(torch) happen only inside the verbs that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence

from common.arguments import (
    Parser,
    folder,
    int_range,
    non_empty,
    non_negative_int,
    positive_float,
    positive_int,
    seed_int,
    unit_float,
)
from common.bounds import flag, help_of, settings_from
from critic.settings import (
    BACKENDS,
    DEDUPE_METHODS,
DETECTOR_THRESHOLDS,
    DOMAIN_CHOICES,
    EXPORTERS,
    MAX_HAMMING,
    MIN_SCORE,
    NEAR_DUPLICATE_HAMMING,
    NEAR_DUPLICATE_SIMILARITY,
    PERCENTILE,
    SERVE_HOST,
    SERVE_PORT,
    STUDIO_PORT,
    THRESHOLD_FIELDS,
    TOP_FRACTION,
    BackendSettings,
    CurateSettings,
    DetectorSettings,
    EvolveSettings,
    ExportSettings,
    parse_detect,
)
from nima_train.settings import FORWARD_BATCH

# Sides in pixels of the model input: beyond this a typo asks for gigabytes of memory.
image_side = int_range(32, 4096)
batch_count = FORWARD_BATCH.flag()
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


class UsageError(Exception):
    """Arguments that parsed but name nothing to work on; main() reports it like a parse error (status 2)."""

VERBS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def verb(name: str, help_text: str, configure: Callable[[argparse.ArgumentParser], None]):
    def register(run: Callable[[argparse.Namespace], int]):
        VERBS[name] = (help_text, configure, run)
        return run

    return register


def _sample_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=folder, required=True, help="folder to write ava/, sac/ and kuler/ into")
    p.add_argument("--ava", type=non_negative_int, default=240, help="AVA images (0 skips the dataset)")
    p.add_argument("--sac", type=non_negative_int, default=120, help="SAC images")
    p.add_argument("--kuler", type=non_negative_int, default=300, help="Kuler colour themes")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--faults", action="store_true", help="plant real-world damage that must end in rejects")


@verb("sample-data", "write small raw drops in the real AVA, SAC and Kuler formats", _sample_data_args)
def _sample_data(args: argparse.Namespace) -> int:
    from ingest.sample_data import write_sample_data

    report = write_sample_data(args.out, args.ava, args.sac, args.kuler, args.seed, args.faults)
    print(
        f"wrote {report.ava_rows} AVA rows, {report.sac_images} SAC images ({report.sac_ratings} ratings), "
        f"{report.kuler_themes} Kuler themes ({report.kuler_ratings} ratings) under {report.out}"
    )
    if report.faults:
        print("planted faults: " + json.dumps(report.faults, sort_keys=True))
    if report.duplicates:
        print("planted cross-split duplicates (train copy of a val/test item; the shards stage drops them): "
              + ", ".join(f"{d.dataset} {d.copy_id} ~ {d.original_split} {d.original_id}" for d in report.duplicates))
    return 0


def _download_args(p: argparse.ArgumentParser) -> None:
    from ingest.download import DownloadSettings

    p.add_argument("dataset", choices=("ava", "sac", "kuler"), help="where the files go: $AESTHETIC_RAW/DATASET/")
    p.add_argument("--url", action="append", default=[],
                   help=help_of(DownloadSettings, "url") + "; repeat for several (SAC's database and tarball, "
                        "Kuler's .mat files); default for ava: the Hugging Face copy of AVA_dataset.zip")
    p.add_argument("--sha256", type=_sha256_hex, default="",
                   help=help_of(DownloadSettings, "sha256") + " (one --url only)")
    p.add_argument("--size", **flag(DownloadSettings, "size", "one --url only"))
    p.add_argument("--filename", default="", help=help_of(DownloadSettings, "filename") + " (one --url only)")
    p.add_argument("--max-bytes", **flag(DownloadSettings, "max_bytes"))
    p.add_argument("--token-env", default="", help=help_of(DownloadSettings, "token_env"))
    p.add_argument("--retries", **flag(DownloadSettings, "retries"))
    p.add_argument("--raw", type=folder, default=None, help="raw drops folder (default $AESTHETIC_RAW)")


def _sha256_hex(text: str) -> str:
    """--sha256: 64 hex digits, or empty (the default: nothing to check against); the download's own check."""
    from ingest.download import DownloadError, expected_sha256

    try:
        return expected_sha256(text)
    except DownloadError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@verb("download", "download a dataset's raw files into $AESTHETIC_RAW (resumes, verifies, never fetches twice)",
      _download_args)
def _download(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ingest.archives import ArchiveError
    from ingest.download import DEFAULT_URLS, DownloadError, DropFile, download_drop
    from ingest.paths import Paths

    urls = args.url or ([DEFAULT_URLS[args.dataset]] if args.dataset in DEFAULT_URLS else [])
    if not urls:
        raise SystemExit(f"aesthetic download: {args.dataset} has no public default URL; give --url")
    if len(urls) > 1 and (args.sha256 or args.size or args.filename):
        raise SystemExit("aesthetic download: --sha256, --size and --filename go with a single --url")
    raw = Path(args.raw) if args.raw else Paths.from_env().raw
    files = [DropFile(url, args.filename, args.sha256, args.size) for url in urls]
    try:
        for done in download_drop(args.dataset, files, raw, _progress_bar, token_env=args.token_env,
                                  retries=args.retries, max_bytes=args.max_bytes):
            report = done.report
            print(f"{report.status}: {report.path} ({report.bytes} bytes, sha256 {report.sha256}, "
                  f"{report.checked_by}); fetched {report.bytes_fetched / 1e6:.1f} MB at {report.mb_per_s:.1f} "
                  f"MB/s, {report.resumes} resumes, {report.retries} retries")
            if done.placed:
                print(f"placed {', '.join(done.placed)} from {done.settings.filename} in {done.settings.dest_dir}")
    except (DownloadError, ArchiveError) as exc:
        raise SystemExit(f"aesthetic download: {exc}") from None
    except KeyboardInterrupt:
        raise SystemExit("aesthetic download: interrupted; what arrived is kept, rerun to resume") from None
    return 0


@contextlib.contextmanager
def _progress_bar(settings) -> Iterator:
    """A progress bar on stderr for one file's download (none when stderr is not a terminal)."""
    from tqdm import tqdm

    from ingest.download import public_url

    print(f"{public_url(settings.url)} -> {settings.dest}", file=sys.stderr)
    with tqdm(unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, disable=None,
              desc=settings.filename) as bar:
        def progress(done: int, total: int | None) -> None:
            if total and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        yield progress


def _load_critic(model: str | None, backend: str = "auto", threads: int | None = None, **kwargs):
    """The critic for --model: a checkpoint file, an exported .onnx file, a version or alias in the warehouse, or
    'production'; scored by the --backend asked (critic/backends.py)."""
    from pathlib import Path

    if model and Path(model).is_file():
        return _critic_of_file(Path(model), backend, threads, **kwargs)

    from critic.models import load_critic
    from ingest.paths import Paths
    from warehouse.db import WarehouseUnreadable, connect
    from warehouse.models_lookup import ModelNotFound

    paths = Paths.from_env()
    if not paths.warehouse.exists():
        raise SystemExit(f"aesthetic: no warehouse at {paths.warehouse}; set AESTHETIC_HOME, or pass --model "
                         "CHECKPOINT.pt")
    try:
        return load_critic(lambda: connect(paths.warehouse, read_only=True), paths.home, model, backend=backend,
                           threads=threads, **kwargs)[0]
    except (ModelNotFound, WarehouseUnreadable, FileNotFoundError, ValueError, RuntimeError) as exc:
        raise SystemExit(f"aesthetic: {' '.join(str(exc).split())}") from None


def _critic_of_file(path, backend: str, threads: int | None, **kwargs):
    """A checkpoint file runs on torch; an exported .onnx file (with its sidecar) on onnxruntime."""
    from critic.scoring import Critic
    from nima_train.checkpoint import NotACheckpoint

    if path.suffix.lower() == ".onnx":
        from critic.onnx_export import ExportInvalid, open_export

        if backend == "torch" or kwargs.get("device", "cpu") != "cpu":
            raise SystemExit(f"aesthetic: --model {path} is an ONNX export: it runs on the CPU with --backend "
                             "onnxruntime or auto")
        try:
            return open_export(path, threads=threads, batch_size=kwargs.get("batch_size", 32),
                               image_size=kwargs.get("image_size"), resize=kwargs.get("resize"))
        except ExportInvalid as exc:
            raise SystemExit(f"aesthetic: --model: {exc}") from None
    if backend == "onnxruntime":
        raise SystemExit(f"aesthetic: --backend onnxruntime scores an ONNX export: pass its .onnx file or a model "
                         f"version whose export is recorded, not the checkpoint {path}")
    try:
        return Critic.from_checkpoint(path, version=path.parent.name or str(path), threads=threads, **kwargs)
    except (NotACheckpoint, OSError) as exc:
        raise SystemExit(f"aesthetic: --model: {exc}") from None


def model_ref(text: str) -> str:
    """--model: a version or alias (looked up when loading), or a checkpoint file; a folder, or a missing
    file named like a checkpoint, is refused now rather than looked up in the warehouse."""
    from pathlib import Path

    if not text.strip():
        raise argparse.ArgumentTypeError("an empty model name is not allowed")
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a checkpoint file or model version")
    if path.suffix.lower() in CHECKPOINT_SUFFIXES and not path.exists():
        raise argparse.ArgumentTypeError(f"checkpoint file {text!r} does not exist")
    return text


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=model_ref, default=None,
                   help="model version or alias from the warehouse, or a checkpoint file (default: production)")
    # None = the crop/resize the checkpoint was trained at (its args), the size its scores mean something at.
    p.add_argument("--image-size", type=image_side, default=None,
                   help="model input (centre crop) size, 32..4096 (default: the checkpoint's training crop)")
    p.add_argument("--resize", type=image_side, default=None,
                   help="short side before the centre crop (default: the checkpoint's, or 256/224 of --image-size)")
    p.add_argument("--backend", choices=BACKENDS, default=BackendSettings.backend,
                   help=help_of(BackendSettings, "backend"))
    p.add_argument("--threads", **flag(BackendSettings, "threads"))


def _detect_names(text: str) -> str:
    """--detect's type: the text when every name is a detector (one line from argparse otherwise)."""
    try:
        parse_detect(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _detector_args(p: argparse.ArgumentParser, settings: type) -> None:
    """--detect, --domain and each detector's threshold flag (--blur-threshold ...), from the settings' fields."""
    p.add_argument("--detect", type=_detect_names, default=settings.detect, help=help_of(settings, "detect"))
    p.add_argument("--domain", choices=DOMAIN_CHOICES, default=settings.domain, help=help_of(settings, "domain"))
    for name in DETECTOR_THRESHOLDS:
        p.add_argument(f"--{name.replace('_', '-')}", **flag(settings, name))


def _input_kwargs(args: argparse.Namespace, decode_workers: int = 0) -> dict:
    """What --model's critic is loaded with: input size, backend and threads (critic/backends.py)."""
    threads = BackendSettings(args.backend, args.threads).resolved_threads(decode_workers)
    return {"image_size": args.image_size, "resize": args.resize, "backend": args.backend, "threads": threads}


def _sources(patterns: Sequence[str]) -> list:
    """The files PATH... name; a UsageError, before any model is loaded, when they name nothing that exists."""
    from critic.scoring import IMAGE_SUFFIXES, expand_sources

    sources = expand_sources(patterns)
    if not any(p.exists() for p in sources):
        raise UsageError(f"nothing matched {' '.join(patterns)}: no files there, and no "
                         f"{'/'.join(IMAGE_SUFFIXES)} images in the folders")
    return sources


def _score_many(critic, paths, with_features: bool = False, with_hash: bool = False,
                with_detectors: bool = False) -> list:
    """Every path scored or skipped (reported on stderr), with a progress bar when there are many."""
    from tqdm import tqdm

    many = len(paths) >= 2 * critic.batch_size
    with tqdm(total=len(paths), unit="img", file=sys.stderr, disable=None if many else True) as bar:
        items = list(critic.score_sources(paths, with_features, with_hash, on_progress=bar.update,
                                          with_detectors=with_detectors))
    for item in items:
        if item.error:
            print(f"skipped {item.source}: {item.error}", file=sys.stderr)
    return items


def _calibration_label(critic) -> str | None:
    return critic.calibration.describe() if critic.calibration else None


def _score_fields(score) -> dict:
    """mean, calibrated_mean and percentile of a score (None each for an unscored item)."""
    keys = ("mean", "calibrated_mean", "percentile")
    return {k: getattr(score, k) for k in keys} if score else dict.fromkeys(keys)


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    _model_arg(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON document on stdout")
    out.add_argument("--csv", action="store_true", help="CSV on stdout: path, mean, std, p1..p10")
    p.add_argument("--batch-size", type=batch_count, default=32, help="images per forward pass, 1..1024")


@verb("score", "mean, calibrated mean, percentile, std and 10-bin histogram per image with the promoted (or named) "
      "model", _score_args)
def _score(args: argparse.Namespace) -> int:
    import csv

    sources = _sources(args.paths)
    critic = _load_critic(args.model, batch_size=args.batch_size, **_input_kwargs(args))
    items = _score_many(critic, sources)
    scored = [i for i in items if i.score]
    if args.json:
        print(json.dumps({
            "model": critic.version, "calibration": _calibration_label(critic),
            "results": [{"path": i.source, **i.score.as_dict()} for i in scored],
            "skipped": [{"path": i.source, "error": i.error} for i in items if i.error],
        }, indent=2))
    elif args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["path", "mean", "calibrated_mean", "percentile", "std", *(f"p{k}" for k in range(1, 11))])
        for i in scored:
            pct = "" if i.score.percentile is None else f"{i.score.percentile:.2f}"
            writer.writerow([i.source, f"{i.score.mean:.4f}", f"{i.score.calibrated_mean:.4f}", pct,
                             f"{i.score.std:.4f}", *(f"{v:.4f}" for v in i.score.histogram)])
    else:
        width = max([len(i.source) for i in scored] + [4])
        print(f"{'path':{width}s}  mean   calib  pct    std    histogram p(1..10)")
        for i in scored:
            hist = " ".join(f"{v:.2f}" for v in i.score.histogram)
            pct = "  -  " if i.score.percentile is None else f"{i.score.percentile:5.1f}"
            print(f"{i.source:{width}s}  {i.score.mean:5.2f}  {i.score.calibrated_mean:5.2f}  {pct}  "
                  f"{i.score.std:5.2f}  {hist}")
        print(f"{len(scored)} scored, {len(items) - len(scored)} skipped, model {critic.version}", file=sys.stderr)
    return 0 if scored or not items else 1


def _threshold_args(p: argparse.ArgumentParser, min_score: float | None = None) -> None:
    """The filter decision's thresholds (critic/decision.py), for `filter` and the studio's cruft mark."""
    p.add_argument("--min-score", type=MIN_SCORE.flag(), default=min_score,
                   help="keep images scoring at least this (0..10; the calibrated mean unless --threshold-on mean)"
                   + (f" (default {min_score:g})" if min_score is not None else ""))
    p.add_argument("--min-percentile", type=PERCENTILE.flag(), default=None,
                   help="keep images at or above this percentile of the model's validation split (0..100): the"
                   " full-range score to threshold, the same share on every model")
    p.add_argument("--top-fraction", type=TOP_FRACTION.flag(), default=None,
                   help="keep the best F (0 < F <= 1) of the images being filtered (by rank; for a share of the"
                   " validation split's standard use --min-percentile)")


def _filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or globs")
    _threshold_args(p)
    p.add_argument("--threshold-on", choices=THRESHOLD_FIELDS, default=THRESHOLD_FIELDS[0],
                   help="the score --min-score and --top-fraction compare (a model without calibration: the mean)")
    p.add_argument("--copy-to", type=folder, default=None, help="copy the kept files into this folder")
    p.add_argument("--dedupe", action="store_true", help="keep only the best image of each near-duplicate group")
    p.add_argument("--dedupe-by", choices=DEDUPE_METHODS, default=DEDUPE_METHODS[-1],
                   help="features: cosine similarity of pooled features; phash: difference hash; both: both agree")
    p.add_argument("--similarity", type=unit_float, default=NEAR_DUPLICATE_SIMILARITY,
                   help="cosine similarity (0..1) that makes a duplicate")
    p.add_argument("--max-hamming", type=MAX_HAMMING.flag(), default=NEAR_DUPLICATE_HAMMING,
                   help="dHash bits that may differ in a duplicate (0..64)")
    p.add_argument("--json", action="store_true")
    _detector_args(p, DetectorSettings)
    _model_arg(p)
    p.add_argument("--batch-size", type=batch_count, default=32, help="images per forward pass, 1..1024")


@verb("filter", "keep images above --min-score, --min-percentile and/or in the --top-fraction, optionally one "
      "per near-duplicate group", _filter_args)
def _filter(args: argparse.Namespace) -> int:
    from pathlib import Path

    from critic.filtering import FilterSettings, copy_kept, decide

    if args.min_score is None and args.min_percentile is None and args.top_fraction is None:
        raise UsageError("give at least one of --min-score, --min-percentile, --top-fraction")
    sources = _sources(args.paths)
    critic = _load_critic(args.model, batch_size=args.batch_size, **_input_kwargs(args))
    if args.min_percentile is not None and critic.calibration is None:
        raise SystemExit(f"aesthetic filter: model {critic.version} has no calibration, so no percentiles: "
                         "use --min-score or --top-fraction, or a model trained with --val-data")
    settings = FilterSettings(
        min_score=args.min_score, threshold_on=args.threshold_on, min_percentile=args.min_percentile,
        top_fraction=args.top_fraction, dedupe=args.dedupe, dedupe_by=args.dedupe_by, similarity=args.similarity,
        max_hamming=args.max_hamming, detectors=settings_from(DetectorSettings, vars(args)))
    items = list(_score_many(critic, sources, args.dedupe, args.dedupe, with_detectors=True))
    result = decide(items, settings)
    decisions, kept = result.decisions, result.kept
    copied = copy_kept(kept, Path(args.copy_to)) if args.copy_to else {}
    if args.json:
        print(json.dumps({
            "model": critic.version, "calibration": _calibration_label(critic),
            "min_score": args.min_score, "threshold_on": args.threshold_on,
            "min_percentile": args.min_percentile, "top_fraction": args.top_fraction,
            "items": [{"path": i.source, "decision": decisions[i.source][0], "why": decisions[i.source][1],
                       **_score_fields(i.score), "copied_to": copied.get(i.source),
                       "detectors": i.measures}
                      for i in items],
        }, indent=2))
    else:
        for i in items:
            what, why = decisions[i.source]
            print(f"{what:8s} {i.source}  ({why})")
        print(f"{len(kept)} kept of {len(items)}" + (f", copied to {args.copy_to}" if args.copy_to else ""),
              file=sys.stderr)
    return 0


def _curate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("shards", nargs="+", metavar="SHARD_URL",
                   help="WebDataset shards: .tar files or http(s) URLs, split folders or index.json files (local or "
                        "http), pipe: commands with --allow-pipe")
    p.add_argument("--out", type=folder, required=True, help="output folder: scores/, manifest.parquet, shards/")
    p.add_argument("--min-score", **flag(CurateSettings, "min_score"))
    p.add_argument("--dedupe", action=argparse.BooleanOptionalAction, default=CurateSettings.dedupe,
                   help=help_of(CurateSettings, "dedupe") + " (default: on)")
    p.add_argument("--similarity", **flag(CurateSettings, "similarity"))
    p.add_argument("--max-hamming", **flag(CurateSettings, "max_hamming"))
    p.add_argument("--allow-pipe", action="store_true", help=help_of(CurateSettings, "allow_pipe"))
    p.add_argument("--batch-size", **flag(CurateSettings, "batch_size"))
    p.add_argument("--workers", **flag(CurateSettings, "workers"))
    _detector_args(p, CurateSettings)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    _model_arg(p)


# How long rank 0 waits at the barrier for the slowest rank to finish scoring its shards.
CURATE_BARRIER_S = 24 * 3600


@verb("curate", "score WebDataset shards, drop low scores and near-duplicates, write a manifest and the kept "
      "shards (runs unchanged under torchrun)", _curate_args)
def _curate(args: argparse.Namespace) -> int:
    import torch

    from critic.curate import curate, describe_failures
    from critic.curate_output import OutputConflict
    from nima_train.data import ShardURLRefused
    from nima_train.distributed import cleanup_distributed, init_distributed

    try:
        settings = settings_from(CurateSettings, vars(args))
    except ValueError as exc:
        raise SystemExit(f"aesthetic curate: {exc}") from None
    device_type = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("aesthetic curate: --device cuda, but no CUDA device is available")
    info = init_distributed(device_type, timeout_s=CURATE_BARRIER_S)
    try:
        device = f"cuda:{info.local_rank}" if device_type == "cuda" else "cpu"
        critic = _load_critic(args.model, batch_size=args.batch_size, device=device,
                              **_input_kwargs(args, settings.workers))
        try:
            result = curate(critic, args.shards, args.out, settings, info)
        except (ShardURLRefused, OutputConflict) as exc:
            raise SystemExit(f"aesthetic curate: {exc}") from None
    finally:
        cleanup_distributed()
    if info.is_main:
        print(f"{len(result.shards)} shards: {len(result.scored)} scored, {len(result.skipped)} already scored by "
              f"model {critic.version}, {len(result.failed)} failed", file=sys.stderr)
        if result.outcome:
            counts = ", ".join(f"{n} {d}" for d, n in result.outcome.counts.items() if n or d == "kept")
            print(f"{sum(result.outcome.counts.values())} samples: {counts}; manifest {result.outcome.manifest}, "
                  f"kept shards in {result.outcome.shards_dir}")
    if result.failed:
        if info.is_main:
            print(f"aesthetic curate: {len(result.failed)} of {len(result.shards)} shards failed: "
                  f"{describe_failures(result.failed)}; re-run to retry them (the others' scores are kept)",
                  file=sys.stderr)
        return 1
    return 0


def _evolve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", default="heart", choices=("heart", "star", "kite", "trapezoid", "landscape"))
    p.add_argument("--rounds", **flag(EvolveSettings, "rounds"))
    p.add_argument("--batch", **flag(EvolveSettings, "batch"))
    p.add_argument("--seed", **flag(EvolveSettings, "seed"))
    p.add_argument("--out", type=folder, required=True, help="folder for the contact sheets, strip.png and log.json")
    p.add_argument("--size", **flag(EvolveSettings, "size"))
    p.add_argument("--rate", **flag(EvolveSettings, "rate"))
    p.add_argument("--strength", **flag(EvolveSettings, "strength"))
    _model_arg(p)


@verb("evolve", "the genetic design loop judged by the critic", _evolve_args)
def _evolve(args: argparse.Namespace) -> int:
    from critic.evolve import evolve

    critic = _load_critic(args.model, batch_size=args.batch, **_input_kwargs(args))
    result = evolve(critic, args.shape, args.rounds, args.batch, args.seed, args.out, args.size,
                    args.rate, args.strength, on_round=lambda r: print(r.message, flush=True))
    calibrated = (f" (calibrated {result.initial_calibrated_mean:.3f} -> {result.best_calibrated_mean:.3f})"
                  if critic.calibration else "")
    print(f"start {result.initial_mean:.3f} -> best {result.best_mean:.3f}{calibrated} after {args.rounds} rounds "
          f"({result.stuck_rounds} stuck); strip {result.strip}, log {result.log}")
    return 0


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", type=non_empty, default=SERVE_HOST)
    p.add_argument("--port", type=int_range(0, 65535), default=SERVE_PORT, help="0..65535 (0: any free port)")
    _limit_args(p)
    _model_arg(p)


def _limit_args(p: argparse.ArgumentParser) -> None:
    """The request limits of `serve` and `studio`."""
    # Defaults live in critic.service.Limits; not imported here, so `aesthetic --help` stays free of torch.
    p.add_argument("--max-bytes", type=positive_int, help="largest request body accepted (default 20 MiB)")
    p.add_argument("--max-images", type=positive_int, help="most images in one request (default 32)")
    p.add_argument("--max-pixels", type=positive_int, help="most pixels in one image (default 40 million)")
    p.add_argument("--max-request-pixels", type=positive_int,
                   help="most pixels decoded for one request, its images together; a JPEG counts at its draft "
                        "size (default 80 million)")
    p.add_argument("--deadline", type=positive_float, dest="deadline_s",
                   help="seconds from a request's first byte to its answer, else 408 (default 30)")
    p.add_argument("--max-in-flight", type=positive_int,
                   help="requests decoding or scoring at once; more get 503 with Retry-After (default 16)")
    p.add_argument("--decode-workers", type=positive_int, help="threads decoding images (default 2)")
    p.add_argument("--max-connections", type=positive_int, help="open connections; more get 503 (default 64)")


def _limits(args: argparse.Namespace):
    from dataclasses import fields

    from critic.service import Limits

    given = {f.name: getattr(args, f.name) for f in fields(Limits) if getattr(args, f.name, None) is not None}
    try:
        return Limits(**given)
    except ValueError as exc:
        raise SystemExit(f"aesthetic: {exc}") from None


def build_server(args: argparse.Namespace):
    """The bound (not yet serving) ScoringService that `aesthetic serve` runs, from its parsed arguments."""
    from critic.service import make_server

    limits = _limits(args)
    critic = _load_critic(args.model, **_input_kwargs(args, limits.decode_workers))
    try:
        return make_server(critic, args.host, args.port, limits)
    except OSError as exc:
        raise SystemExit(f"aesthetic: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None


@verb("serve", "HTTP scoring service: POST /score, GET /healthz, GET /openapi.json", _serve_args)
def _serve(args: argparse.Namespace) -> int:
    server = build_server(args)
    host, port = server.server_address
    critic = server.critic
    print(f"serving model {critic.version} ({critic.image_size} px input, resize {critic.resize}) "
          f"on http://{host}:{port} (POST /score, GET /healthz, GET /openapi.json)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _studio_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=("serve", "publish"), default="serve",
                   help="serve (default): the page; publish: every session's unpublished ratings as SAC snapshots")
    p.add_argument("--shape", default="heart", choices=("heart", "star", "kite", "trapezoid", "landscape"),
                   help="the shape a new session starts with (the page may choose another)")
    p.add_argument("--host", type=non_empty, default=SERVE_HOST,
                   help=f"address to listen on (default {SERVE_HOST}: this machine only)")
    p.add_argument("--port", type=int_range(0, 65535), default=STUDIO_PORT, help="0..65535 (0: any free port)")
    for name in ("size", "rate", "strength"):
        p.add_argument(f"--{name}", **flag(EvolveSettings, name))
    # The cruft mark: what `aesthetic filter` with these thresholds would drop.
    _threshold_args(p, min_score=5.0)
    _limit_args(p)
    _model_arg(p)


def _studio_publisher(raw):
    from ingest.sac_studio import write_studio_snapshot

    return lambda rows, name: write_studio_snapshot(raw, name, **vars(rows))


def build_studio(args: argparse.Namespace):
    """The bound (not yet serving) StudioService that `aesthetic studio` runs, from its parsed arguments."""
    from critic.decision import Thresholds
    from critic.studio import Studio
    from critic.studio_app import StudioService
    from ingest.paths import Paths

    limits, paths = _limits(args), Paths.from_env()
    critic = _load_critic(args.model, **_input_kwargs(args, limits.decode_workers))
    if args.min_percentile is not None and critic.calibration is None:
        raise SystemExit(f"aesthetic studio: model {critic.version} has no calibration, so no percentiles: "
                         "use --min-score or --top-fraction")
    thresholds = Thresholds(args.min_score, args.min_percentile, args.top_fraction)
    settings = EvolveSettings(size=args.size, rate=args.rate, strength=args.strength)
    studio = Studio(critic, paths.home / "studio", settings, thresholds, args.shape)
    try:
        return StudioService(studio, _studio_publisher(paths.raw), args.host, args.port, limits)
    except OSError as exc:
        raise SystemExit(f"aesthetic: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None


@verb("studio", "a web page for evolving designs with the critic and a person; `studio publish` sends the "
      "ratings to the SAC inbox", _studio_args)
def _studio(args: argparse.Namespace) -> int:
    if args.action == "publish":
        return _studio_publish()
    server = build_studio(args)
    host, port = server.server_address
    shown = f"[{host}]" if ":" in host else host
    scope = "this machine only" if host in ("127.0.0.1", "::1", "localhost") else "every machine that can reach it"
    print(f"studio on http://{shown}:{port}/ (listening on {host}: {scope}), model {server.studio.critic.version},"
          f" sessions in {server.studio.root}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _studio_publish() -> int:
    from critic.studio import Studio
    from ingest.paths import Paths

    paths = Paths.from_env()
    done = Studio(None, paths.home / "studio").publish_all(_studio_publisher(paths.raw))
    for d in done:
        print(f"session {d['session']}: {d['ratings']} ratings -> {d['snapshot']}")
    print(f"{len(done)} snapshots published" if done else "nothing to publish", file=sys.stderr)
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=non_empty, metavar="MODEL_REF", help="model version or alias from the warehouse")
    p.add_argument("--format", choices=("onnx",), required=True, help="onnx: scored by `--backend onnxruntime`")
    p.add_argument("--out", required=True, help="the file to write (its sidecar goes beside it as FILE.json)")
    p.add_argument("--opset", **flag(ExportSettings, "opset"))
    p.add_argument("--exporter", choices=EXPORTERS, default=ExportSettings.exporter,
                   help=help_of(ExportSettings, "exporter"))


@verb("export", "export a model version to ONNX with its sidecar (identity, calibration, hash) and record it in "
      "the warehouse's `exports`", _export_args)
def _export(args: argparse.Namespace) -> int:
    from critic.exports import export_version
    from critic.onnx_export import ExportRefused
    from ingest.paths import Paths
    from warehouse.db import WarehouseUnreadable, connect
    from warehouse.models_lookup import ModelNotFound

    paths = Paths.from_env()
    if not paths.warehouse.exists():
        raise SystemExit(f"aesthetic export: no warehouse at {paths.warehouse}; set AESTHETIC_HOME")
    try:
        done = export_version(lambda read_only=False: connect(paths.warehouse, read_only=read_only), paths.home,
                              args.model, args.out, args.opset, args.exporter)
    except (ModelNotFound, WarehouseUnreadable, FileNotFoundError, ExportRefused, ValueError, RuntimeError) as exc:
        raise SystemExit(f"aesthetic export: {' '.join(str(exc).split())}") from None
    model = done.sidecar["model"]
    print(f"exported model {model['version']} ({model['backbone']}, {model['image_size']} px) to {done.path} "
          f"(sha256 {done.sha256[:12]}..., opset {done.opset}, {done.exporter} exporter), sidecar "
          f"{done.path}.json; recorded in exports")
    return 0


def os_error_line(exc: OSError) -> str:
    """One line for an OSError that ended a verb: what failed, and on which path."""
    from ingest.paths import NoSpaceLeft, is_full_disk

    if isinstance(exc, NoSpaceLeft):
        return str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    if is_full_disk(exc):
        return f"no space left on the device{where}; free some space and run again"
    return " ".join(f"{exc.strerror or exc}{where}".split())


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="aesthetic", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (help_text, configure, _) in VERBS.items():
        configure(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb. User errors end as one line on stderr: status 2 for arguments, 1 for what went wrong."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return VERBS[args.verb][2](args)
    except UsageError as exc:
        parser.exit(2, f"aesthetic {args.verb}: error: {exc}\n")
    except OSError as exc:  # a folder that cannot be written, a full disk: the user's to fix, no traceback
        parser.exit(1, f"aesthetic: {os_error_line(exc)}\n")


if __name__ == "__main__":
    sys.exit(main())
