"""A curation run in pictures: the score histogram, the top and bottom samples, duplicate clusters side by side.

Reads what `aesthetic curate` wrote (DIR/scores/*.parquet and DIR/manifest.parquet) and the input shards for the
few images shown; writes histogram.png, top.png, bottom.png, duplicates.png, a contact sheet per quality detector
that fired (detector-<name>.png: the samples it fires on, red when it dropped them) and counts.json (decisions,
and how many samples each detector fires on, asked for or not) into a report folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from common.atomic import atomic_path, write_atomic
from common.contact_sheet import Cell, contact_sheet
from critic.curate import DECISIONS, FilterOutcome, InputShard, keyed_samples, score_histogram, scores_path
from critic.scoring import UnreadableImage, decode_image
from critic.settings import DETECTORS
from nima_train.tarstream import tar_samples

KEPT_FRAME = (0, 150, 0)
DROPPED_FRAME = (200, 0, 0)


@dataclass(frozen=True)
class CurationReport:
    folder: Path
    histogram: Path
    top: Path
    bottom: Path
    duplicates: Path | None  # None when no cluster was found
    counts: dict[str, int]
    detectors: dict[str, Path]  # detector -> its contact sheet, for each that fired on anything
    detected: dict[str, int]  # detector -> samples it fires on
    score_histogram: tuple[list[int], list[float]]  # counts and bin edges over 1..10


def _rows(out_dir: Path, shards: Sequence[InputShard], calibrated: bool) -> list[dict]:
    """One dict per manifest row, with the shard-local key and the score the filter compared."""
    manifest = pq.read_table(out_dir / "manifest.parquet").to_pylist()
    column = "calibrated_mean" if calibrated else "mean"
    local = [(s, k, v) for s in shards
             for k, v in zip(*(pq.read_table(scores_path(out_dir, s), columns=["key", column]).column(c).to_pylist()
                               for c in ("key", column)), strict=True)]
    return [{**m, "url": s.url, "local_key": k, "score": v} for m, (s, k, v) in zip(manifest, local, strict=True)]


def _images(rows: Sequence[dict]) -> dict[str, Image.Image | None]:
    """The 256 crop of each row's image, read from its shard (None when it cannot be decoded)."""
    wanted: dict[str, dict[str, str]] = {}
    for r in rows:
        wanted.setdefault(r["url"], {})[r["local_key"]] = r["key"]
    out: dict[str, Image.Image | None] = {}
    for url, keys in wanted.items():
        for local_key, sample in keyed_samples(tar_samples([{"url": url}])):
            if local_key in keys:
                data = next((sample[e] for e in ("jpg", "jpeg", "png", "webp") if e in sample), None)
                try:
                    out[keys[local_key]] = decode_image(bytes(data)) if data is not None else None
                except UnreadableImage:
                    out[keys[local_key]] = None
    return out


def _save_png(img: Image.Image, dest: Path) -> Path:
    with atomic_path(dest) as tmp:
        img.save(tmp, format="PNG", optimize=True)
    return dest


def _histogram_png(values: np.ndarray, threshold: float | None, label: str, dest: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.hist(values[~np.isnan(values)], bins=36, range=(1, 10), color="#4c72b0")
    if threshold is not None:
        ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"--min-score {threshold:g}")
        ax.legend()
    ax.set_xlabel(label)
    ax.set_ylabel("samples")
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return dest


def write_report(out_dir: str | Path, shards: Sequence[InputShard], outcome: FilterOutcome, report_dir: str | Path,
                 calibrated: bool, min_score: float | None, n_show: int = 12, n_clusters: int = 4) -> CurationReport:
    """The report folder for a finished curation run (outcome from critic.curate.filter_corpus)."""
    out_dir, report_dir = Path(out_dir), Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    rows = _rows(out_dir, shards, calibrated)
    by_key = {r["key"]: r for r in rows}
    scored = sorted((r for r in rows if r["score"] is not None), key=lambda r: (-r["score"], r["key"]))
    top = [r for r in scored if r["decision"] == "kept"][:n_show]
    bottom = scored[::-1][:n_show]
    groups = sorted(outcome.clusters, key=lambda g: (-len(g), g[0]))[:n_clusters]
    flagged = {d: [r for r in rows if d in (r.get("detected") or "").split(",")][:n_show] for d in DETECTORS}
    shown = top + bottom + [by_key[k] for g in groups for k in g[:6]] + [r for f in flagged.values() for r in f]
    images = _images(shown)

    def cell(r: dict, frame=None) -> Cell:
        return Cell(images.get(r["key"]), f"{r['score']:.2f} {r['key'][:14]}", frame)

    label = "calibrated mean" if calibrated else "mean"
    values = np.array([np.nan if r["score"] is None else r["score"] for r in rows], dtype=np.float64)
    hist_path = _histogram_png(values, min_score, label, report_dir / "histogram.png")
    top_path = _save_png(contact_sheet([cell(r) for r in top] or [Cell(None, "nothing kept")], 6, 128),
                         report_dir / "top.png")
    bottom_path = _save_png(contact_sheet([cell(r) for r in bottom] or [Cell(None, "nothing scored")], 6, 128),
                            report_dir / "bottom.png")
    dup_path = None
    if groups:
        width = max(min(len(g), 6) for g in groups)
        cells: list[Cell] = []
        for g in groups:  # one row per cluster: the kept sample (green) first, then its duplicates (red)
            members = [cell(by_key[k], KEPT_FRAME if i == 0 else DROPPED_FRAME) for i, k in enumerate(g[:6])]
            cells += members + [Cell(Image.new("RGB", (8, 8), (255, 255, 255)), "")] * (width - len(members))
        dup_path = _save_png(contact_sheet(cells, width, 128), report_dir / "duplicates.png")
    sheets = {d: _save_png(contact_sheet([cell(r, DROPPED_FRAME if r["decision"] == d else None) for r in f], 6,
                                         128), report_dir / f"detector-{d}.png") for d, f in flagged.items() if f}
    for stale in set(DETECTORS) - set(sheets):  # a sheet from an earlier run in this folder would mislead
        (report_dir / f"detector-{stale}.png").unlink(missing_ok=True)
    counts = {d: outcome.counts.get(d, 0) for d in DECISIONS}
    hist = score_histogram(values)
    write_atomic(report_dir / "counts.json", (json.dumps(
        {"counts": counts, "detected": outcome.detected, "duplicate_pairs": outcome.n_pairs,
         "duplicate_clusters": len(outcome.clusters),
         "score": label, "histogram": {"counts": hist[0], "edges": hist[1]}}, indent=1, sort_keys=True) + "\n"
    ).encode())
    return CurationReport(report_dir, hist_path, top_path, bottom_path, dup_path, counts, sheets, outcome.detected,
                          hist)
