"""Quality detectors: what a decoded image and its header say about blur, exposure, information, colour, size and
shape, and the hash of its decoded pixels (exact duplicates). Torch-free: numpy and Pillow over the 256 crop that
scoring decodes anyway (`aesthetic curate` and `aesthetic filter` call `measure` where the crop exists, so the bytes
are decoded once).

`measure` returns the raw numbers (the columns of DIR/scores/*.parquet); `fired` compares them with a domain's
thresholds (critic/settings.py DetectorSettings), so a re-run with other thresholds needs no re-scoring.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from critic.settings import DETECTORS

THUMB = 128  # side of the grey thumbnail the Laplacian runs on: a fixed size, so variances compare across sizes
# The measured columns, in the order they are written; width and height are the header's (before decoding).
COLUMNS = ("laplacian_var", "edge_ratio", "luma_p5", "luma_p95", "grey_entropy", "chroma", "width", "height")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as Pillow's "L"


def pixel_hash(rgb: np.ndarray, width: int, height: int) -> str:
    """A digest of the decoded pixels with their shape, mode and the header's size: equal for a byte copy and
    for a copy whose metadata differs, different for a re-encoded copy (its pixels differ)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"RGB {rgb.shape} {width}x{height}".encode())
    h.update(np.ascontiguousarray(rgb, dtype=np.uint8).data)
    return h.hexdigest()


def measure(rgb: np.ndarray, width: int, height: int) -> dict[str, float | int | str]:
    """The detector columns of a decoded RGB image (H, W, 3) uint8 whose header said width x height."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    levels = np.bincount(grey.reshape(-1), minlength=256)
    cdf = np.cumsum(levels) / grey.size
    p = levels[levels > 0] / grey.size
    thumb = np.asarray(Image.fromarray(grey).resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.float32)
    lap = thumb[1:-1, :-2] + thumb[1:-1, 2:] + thumb[:-2, 1:-1] + thumb[2:, 1:-1] - 4 * thumb[1:-1, 1:-1]
    # Laplacian energy over gradient energy: blur lowers it whatever the contrast (a soft swatch of close colours
    # has a low Laplacian variance and is sharp all the same); 0 for a flat image
    grad = float(np.square(np.diff(thumb, axis=0)).mean() + np.square(np.diff(thumb, axis=1)).mean())
    small = np.asarray(Image.fromarray(rgb).resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.int16)
    return {
        "laplacian_var": float(lap.var()),
        "edge_ratio": float(lap.var() / grad) if grad > 1e-6 else 0.0,
        "luma_p5": int(np.searchsorted(cdf, 0.05)),
        "luma_p95": int(np.searchsorted(cdf, 0.95)),
        "grey_entropy": max(0.0, float(-(p * np.log2(p)).sum())),  # max: a flat image gives -0.0
        "chroma": float((small.max(axis=2) - small.min(axis=2)).mean()),
        "width": int(width),
        "height": int(height),
        "pixel_hash": pixel_hash(rgb, width, height),
    }


def _checks(m: Mapping[str, float], t: Mapping[str, float]) -> dict[str, tuple[bool, str]]:
    short, long = min(m["width"], m["height"]), max(m["width"], m["height"])
    aspect = long / max(short, 1)
    blur = [f"{what} {m[col]:.{digits}f} below {t[limit]:g}" for what, col, limit, digits in (
        ("Laplacian variance", "laplacian_var", "blur_threshold", 1), ("edge ratio", "edge_ratio",
                                                                       "edge_ratio_threshold", 2))
        if m[col] < t[limit]]
    return {
        "blurry": (bool(blur), " and ".join(blur)),
        "dark": (m["luma_p95"] < t["dark_threshold"],
                 f"95th percentile luminance {m['luma_p95']:g} below {t['dark_threshold']:g}"),
        "light": (m["luma_p5"] > t["light_threshold"],
                  f"5th percentile luminance {m['luma_p5']:g} above {t['light_threshold']:g}"),
        "low_information": (m["grey_entropy"] < t["entropy_threshold"],
                            f"grey entropy {m['grey_entropy']:.2f} bits below {t['entropy_threshold']:g}"),
        "grayscale": (m["chroma"] < t["gray_threshold"], f"chroma {m['chroma']:.2f} below {t['gray_threshold']:g}"),
        "odd_size": (short < t["min_side"], f"{m['width']}x{m['height']}: short side below {t['min_side']:g}"),
        "odd_aspect": (aspect > t["max_aspect"], f"{m['width']}x{m['height']}: aspect {aspect:.2f} above "
                                                 f"{t['max_aspect']:g}"),
    }


def fired(m: Mapping[str, float], thresholds: Mapping[str, float],
          only: Sequence[str] = DETECTORS) -> list[tuple[str, str]]:
    """(detector, reason) for each detector in `only` that fires on measurements m at thresholds (field name ->
    value, DetectorSettings.thresholds), in DETECTORS order; the reason names the value and the threshold."""
    checks = _checks(m, thresholds)
    return [(d, f"{d}: {checks[d][1]}") for d in DETECTORS if d in only and checks[d][0]]


_ARROW = {"laplacian_var": "float32", "edge_ratio": "float32", "luma_p5": "uint8", "luma_p95": "uint8",
          "grey_entropy": "float32", "chroma": "float32", "width": "int32", "height": "int32", "pixel_hash": "string"}


def arrow_columns(rows: Sequence[Mapping | None]) -> dict:
    """The measured columns (and pixel_hash) of DIR/scores/*.parquet, null for an unreadable row."""
    import pyarrow as pa

    return {c: pa.array([None if r is None else r[c] for r in rows], getattr(pa, t)()) for c, t in _ARROW.items()}


def rows_of(tables: Sequence) -> list[dict | None]:
    """arrow_columns read back from score tables, concatenated: one dict per row, None for an unreadable one."""
    out: list[dict | None] = []
    for t in tables:
        cols = {c: t.column(c).to_pylist() for c in _ARROW}
        out += [None if cols["pixel_hash"][i] is None else {c: v[i] for c, v in cols.items()}
                for i in range(t.num_rows)]
    return out
