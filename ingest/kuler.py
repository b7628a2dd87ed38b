"""Kuler / MTurk colour themes: read the .mat releases, tally ratings into 10-bin histograms, render swatches.

Two releases by O'Donovan et al. are accepted (docs/kuler.md):

- 2014 ("Collaborative Filtering of Color Aesthetics"): `themeData.mat` with struct `datapoints`
  (`rgb` N x 15, `ids`, `names`) and `allMTurkRatings.mat` with `testRatings` (M x 3: user, theme row
  1-based, rating 1..5). Every rating is a vote.
- 2011 ("Color Compatibility From Large Datasets"): one of `kulerData.mat` / `mturkData.mat` with
  `data` (N x 5 x 3), `targets` (N mean ratings 1..5), `ids`, `names`. Only the mean is known, so the
  histogram is a pseudo-distribution that keeps the mean (see `counts_from_mean`).

A file whose structure is wrong (missing variable, wrong shape or dtype, colours outside 0..1) stops the
run with a KulerFormatError naming the file, the variable and what was found. A single bad rating
(outside 1..5, unknown theme row, not an integer) or a theme without any valid rating becomes a
`rejects` row at stage 'ratings'; the rest go on. The theme row (1-based) is the image id.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.atomic import write_atomic
from common.bounds import Range, bounded, check_ranges, setting
from common.contact_sheet import Cell, contact_sheet, png_bytes
from common.imaging import STORED_CROP
from common.regular_files import NotRegularFile, read_regular_file
from ingest.crop_folder import crop_folder
from ingest.crops import encode_jpeg, sha256_bytes, sha256_file
from ingest.labels import SOFTMAX_TEMPERATURE
from ingest.paths import Connect, Log, Paths, no_log
from ingest.shrink_guard import guard_shrink, lost_items
from ingest.splits import three_way_split
from warehouse.kuler import KulerTheme, SyncStats, sync_kuler
from warehouse.records import ImageRow, Reject, accepted_ids

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

DATASET = "kuler"
STAGE = "ratings"
SPLIT_SALT = "kuler"
N_COLOURS = 5
RATING_MIN, RATING_MAX = 1, 5
RELEASES = ("2014", "2011")
FILES_2014 = ("themeData.mat", "allMTurkRatings.mat")
FILES_2011 = ("kulerData.mat", "mturkData.mat")
# Score (1..10) each star rating 1..5 maps to (docs/contract.md, "Labels").
MAPPINGS: dict[str, tuple[int, ...]] = {
    "high_spread": (1, 3, 5, 7, 9),  # r -> 2r - 1: the original notebook
    "low_spread": (3, 4, 5, 6, 7),  # r -> r + 2
}
# 2011 pseudo-votes per theme: the mean survives rounding to within 1/100 of a score step.
PSEUDO_VOTES_2011 = 100
# How the 2011 pseudo-votes spread: over the two bins around the mapped mean, or as a discretised normal.
SPREADS_2011 = ("two_bin", "normal")
# Per-theme standard deviation (in stars) of the normal spread when no 2014 ratings are at hand to estimate it:
# an assumption stated in docs/kuler.md, not a measurement.
DEFAULT_STD_2011 = 1.0
# Themes need this many valid 2014 ratings for their spread to count in the estimate.
MIN_RATINGS_FOR_STD = 3
# A stripe centre may drift this many levels per channel after encoding (issue 5).
COLOUR_TOLERANCE = 2
JPEG_QUALITIES = (95, 100)  # q95 first; q100 only if a (small) swatch misses the tolerance


class KulerFormatError(ValueError):
    """A .mat file that is not the release it claims to be; str(exc) names file, variable and finding."""


@dataclass(frozen=True)
class Themes:
    """Themes of one release file, in file order: row i (0-based) is image id str(i + 1)."""

    source: Path
    colours: np.ndarray  # (N, 5, 3) float64 in 0..1, theme order
    ids: np.ndarray  # (N,) int64 Kuler theme ids
    names: list[str]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class RatingTally:
    """Valid ratings counted per theme and star, plus one Reject per bad rating."""

    source: Path
    stars: np.ndarray  # (N, 5) int64: stars[row - 1, r - 1] = votes of r stars
    rejects: list[Reject]
    read: int

    @property
    def kept(self) -> int:
        return int(self.stars.sum())


@dataclass(frozen=True)
class Labels:
    """Accepted themes' 10-bin counts (keyed by theme row) and the themes rejected for want of ratings."""

    counts: dict[str, list[int]]
    rejects: list[Reject]


# ---------------------------------------------------------------------------------------------- loading


def load_mat(path: str | Path) -> dict[str, Any]:
    """scipy.io.loadmat as docs/kuler.md prescribes, with a readable error for missing or non-MATLAB files."""
    import scipy.io  # heavy to import: only the step that reads .mat files pays for it

    path = Path(path)
    try:
        data = read_regular_file(path)
    except FileNotFoundError:
        raise KulerFormatError(f"{path}: file not found") from None
    except NotRegularFile as exc:  # a FIFO would block the read forever
        raise KulerFormatError(str(exc)) from None
    except OSError as exc:
        raise KulerFormatError(f"{path}: unreadable: {exc.strerror or exc}") from None
    try:
        mat = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError... for non-MATLAB bytes
        raise KulerFormatError(f"{path}: not a readable MATLAB v5/v7 file ({type(exc).__name__}: {exc})") from exc
    return {k: v for k, v in mat.items() if not k.startswith("__")}


def _variable(mat: dict[str, Any], path: Path, name: str) -> Any:
    if name not in mat:
        raise KulerFormatError(f"{path}: variable {name!r} missing (found: {', '.join(sorted(mat)) or 'none'})")
    return mat[name]


def _field(struct: Any, path: Path, name: str, parent: str) -> Any:
    fields = getattr(struct, "_fieldnames", None)
    if fields is None:
        raise KulerFormatError(f"{path}: {parent} is {type(struct).__name__}, expected a MATLAB struct")
    if name not in fields:
        raise KulerFormatError(f"{path}: {parent}.{name} missing (fields: {', '.join(fields)})")
    return getattr(struct, name)


def _numeric(value: Any, path: Path, var: str) -> np.ndarray:
    """A real-valued numeric array (int or float, not bool, complex, text or cells)."""
    import numpy as np

    arr = np.asarray(value)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise KulerFormatError(f"{path}: {var} has dtype {arr.dtype}, expected a real numeric array")
    return arr


def _colours(value: Any, path: Path, var: str, n_expected: int | None, layout: str) -> np.ndarray:
    """(N, 5, 3) colours from an N x 15 ('flat') or N x 5 x 3 ('cube') array, checked to lie in 0..1."""
    import numpy as np

    arr = _numeric(value, path, var)
    # squeeze_me drops the leading axis of a one-theme file: put it back.
    if layout == "flat" and arr.ndim == 1 and arr.size == 3 * N_COLOURS:
        arr = arr.reshape(1, 3 * N_COLOURS)
    if layout == "cube" and arr.shape == (N_COLOURS, 3):
        arr = arr.reshape(1, N_COLOURS, 3)
    wanted = "(N, 15)" if layout == "flat" else "(N, 5, 3)"
    if layout == "flat":
        ok = arr.ndim == 2 and arr.shape[1] == 3 * N_COLOURS
    else:
        ok = arr.ndim == 3 and arr.shape[1:] == (N_COLOURS, 3)
    if not ok or arr.shape[0] == 0:
        raise KulerFormatError(f"{path}: {var} has shape {arr.shape}, expected {wanted} (five colours r,g,b)")
    arr = arr.astype(np.float64).reshape(arr.shape[0], N_COLOURS, 3)
    if n_expected is not None and arr.shape[0] != n_expected:
        raise KulerFormatError(f"{path}: {var} has {arr.shape[0]} themes but ids has {n_expected}")
    finite = np.isfinite(arr).all(axis=(1, 2))
    inside = finite & ((arr >= 0) & (arr <= 1)).all(axis=(1, 2))
    if not inside.all():
        bad = np.flatnonzero(~inside)
        lo, hi = np.nanmin(arr), np.nanmax(arr)
        raise KulerFormatError(
            f"{path}: {var} has {len(bad)} theme(s) with colours outside 0..1 or not finite"
            f" (first at row {bad[0] + 1}; values span {lo:g}..{hi:g})"
        )
    return arr


def _ids(value: Any, path: Path, var: str) -> np.ndarray:
    """Theme ids as int64: they load as float64 or int32 depending on who wrote the file."""
    import numpy as np

    arr = np.atleast_1d(_numeric(value, path, var))
    if arr.ndim != 1:
        raise KulerFormatError(f"{path}: {var} has shape {arr.shape}, expected (N,)")
    if np.issubdtype(arr.dtype, np.floating) and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise KulerFormatError(f"{path}: {var} holds non-integer values (dtype {arr.dtype}), expected integer ids")
    return arr.astype(np.int64)


def _names(value: Any, path: Path, var: str, n: int) -> list[str]:
    import numpy as np

    if isinstance(value, str):  # squeeze_me turned a one-theme cell array into its string
        value = [value]
    arr = np.asarray(value, dtype=object)
    if arr.ndim != 1 or len(arr) != n:
        raise KulerFormatError(f"{path}: {var} has shape {arr.shape}, expected ({n},) like the ids")
    # An empty MATLAB string inside a cell array loads as an empty char array, not as ''.
    arr = np.array(["" if isinstance(v, np.ndarray) and v.size == 0 else v for v in arr], dtype=object)
    if not all(isinstance(v, str) for v in arr):
        kinds = sorted({type(v).__name__ for v in arr if not isinstance(v, str)})
        raise KulerFormatError(f"{path}: {var} holds {', '.join(kinds)} values, expected strings")
    return [str(v) for v in arr]


def read_themes_2014(path: str | Path) -> Themes:
    """themeData.mat: struct datapoints with rgb (N x 15, 0..1), ids (N), names (N)."""
    path = Path(path)
    points = _variable(load_mat(path), path, "datapoints")
    ids = _ids(_field(points, path, "ids", "datapoints"), path, "datapoints.ids")
    colours = _colours(_field(points, path, "rgb", "datapoints"), path, "datapoints.rgb", len(ids), "flat")
    names = _names(_field(points, path, "names", "datapoints"), path, "datapoints.names", len(ids))
    return Themes(path, colours, ids, names)


def read_release_2011(path: str | Path) -> tuple[Themes, np.ndarray]:
    """kulerData.mat / mturkData.mat: data (N x 5 x 3), targets (N mean ratings), ids, names."""
    import numpy as np

    path = Path(path)
    mat = load_mat(path)
    ids = _ids(_variable(mat, path, "ids"), path, "ids")
    colours = _colours(_variable(mat, path, "data"), path, "data", len(ids), "cube")
    names = _names(_variable(mat, path, "names"), path, "names", len(ids))
    targets = np.atleast_1d(_numeric(_variable(mat, path, "targets"), path, "targets")).astype(np.float64)
    if targets.shape != (len(ids),):
        raise KulerFormatError(f"{path}: targets has shape {targets.shape}, expected ({len(ids)},) like the ids")
    return Themes(path, colours, ids, names), targets


def _fmt(value: float) -> str:
    import numpy as np

    return str(int(value)) if np.isfinite(value) and value == int(value) else f"{value:g}"


def read_ratings_2014(path: str | Path, n_themes: int) -> RatingTally:
    """allMTurkRatings.mat testRatings (M x 3): tally valid votes, reject each bad one with a reason.

    Reject item ids are `rating:<user>:<row>`; when a (user, row) pair is rejected more than once, the
    second and later ones get their 1-based position in testRatings appended (`rating:<user>:<row>:<pos>`)
    so that each keeps its own rejects row.
    """
    import numpy as np

    path = Path(path)
    arr = _numeric(_variable(load_mat(path), path, "testRatings"), path, "testRatings")
    if arr.ndim == 1 and arr.size == 3:  # squeeze_me turned a single rating into a vector
        arr = arr.reshape(1, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise KulerFormatError(f"{path}: testRatings has shape {arr.shape}, expected (M, 3): user, theme row, rating")
    table = arr.astype(np.float64)
    row, rating = table[:, 1], table[:, 2]
    integral = np.isfinite(table).all(axis=1) & (table == np.round(table)).all(axis=1)
    known = integral & (row >= 1) & (row <= n_themes)
    in_range = known & (rating >= RATING_MIN) & (rating <= RATING_MAX)

    stars = np.zeros((n_themes, RATING_MAX - RATING_MIN + 1), dtype=np.int64)
    np.add.at(stars, (row[in_range].astype(np.int64) - 1, rating[in_range].astype(np.int64) - RATING_MIN), 1)

    rejects, seen = [], set()
    for pos in np.flatnonzero(~in_range):
        u, r, s = (float(v) for v in table[pos])
        if not integral[pos]:
            reason = f"malformed: user {_fmt(u)}, theme row {_fmt(r)}, rating {_fmt(s)} are not all integers"
        elif not known[pos]:
            reason = f"unknown theme: row {_fmt(r)} not in 1..{n_themes}"
        else:
            reason = f"out of range: rating {_fmt(s)} not in {RATING_MIN}..{RATING_MAX}"
        item = f"rating:{_fmt(u)}:{_fmt(r)}"
        if item in seen:
            item = f"{item}:{pos + 1}"
        seen.add(item)
        rejects.append(Reject(item, f"{reason} (testRatings row {pos + 1})"))
    return RatingTally(path, stars, rejects, len(table))


# --------------------------------------------------------------------------------------------- labels


def _scores(mapping: str) -> tuple[int, ...]:
    if mapping not in MAPPINGS:
        raise ValueError(f"rating mapping must be one of {', '.join(MAPPINGS)}, got {mapping!r}")
    return MAPPINGS[mapping]


def counts_from_stars(stars: np.ndarray, mapping: str) -> np.ndarray:
    """(N, 5) star counts -> (N, 10) score counts: star r lands in bin score(r) (1-based)."""
    import numpy as np

    out = np.zeros((stars.shape[0], 10), dtype=np.int64)
    for r, score in enumerate(_scores(mapping)):
        out[:, score - 1] = stars[:, r]
    return out


def mapped_score(mean_rating: float, mapping: str) -> float:
    """A mean star rating on the 1..10 score axis; both mappings are affine, so means map exactly."""
    scores = _scores(mapping)
    step = scores[1] - scores[0]
    return scores[0] + (mean_rating - RATING_MIN) * step


def counts_from_mean(mean_rating: float, mapping: str, votes: int = PSEUDO_VOTES_2011) -> list[int]:
    """2011 release: `votes` pseudo-votes over the two score bins either side of the mapped mean.

    The weights are the linear-interpolation ones, so the histogram's mean is the mapped mean (to within
    1/votes after rounding) and its spread is the smallest a histogram with that mean can have.
    """
    import numpy as np

    m = mapped_score(mean_rating, mapping)
    lo = int(np.floor(m))
    hi_votes = int(round((m - lo) * votes))
    counts = [0] * 10
    counts[lo - 1] += votes - hi_votes
    if hi_votes:
        counts[lo] += hi_votes
    return counts


def counts_from_mean_normal(mean_rating: float, mapping: str, std_stars: float,
                            votes: int = PSEUDO_VOTES_2011) -> list[int]:
    """2011 release: `votes` pseudo-votes as a normal of `std_stars` (in stars) around the mapped mean,
    discretised onto the mapping's score range (its end bins take the tails, as stars end at 1 and 5).

    The normal's centre is moved until the discretised histogram's mean is the mapped mean, and the votes
    are rounded so that it stays within 1/votes of it.
    """
    import numpy as np
    from scipy.special import ndtr

    scores = _scores(mapping)
    lo, hi = scores[0], scores[-1]
    m = mapped_score(mean_rating, mapping)
    sigma = std_stars * (scores[1] - scores[0])
    bins = np.arange(lo, hi + 1)
    if sigma <= 0 or m <= lo or m >= hi:
        return counts_from_mean(mean_rating, mapping, votes)

    def probabilities(centre: float) -> np.ndarray:
        edges = ndtr((np.arange(lo, hi) + 0.5 - centre) / sigma)  # P(score below each bin boundary)
        cdf = np.concatenate([[0.0], edges, [1.0]])
        return np.diff(cdf)

    # The histogram's mean rises with the centre: bisect for the centre that gives the mapped mean.
    a, b = m - 10 * sigma - 10, m + 10 * sigma + 10
    for _ in range(100):
        c = (a + b) / 2
        a, b = (c, b) if probabilities(c) @ bins < m else (a, c)
    exact = probabilities((a + b) / 2) * votes
    counts = np.floor(exact).astype(np.int64)
    for k in np.argsort(-(exact - counts), kind="stable")[: votes - counts.sum()]:
        counts[k] += 1  # largest remainders first
    # Each vote moved one bin shifts the mean by 1/votes: move votes towards the mapped mean until within it.
    for _ in range(votes):
        gap = m - (counts @ bins) / votes
        if abs(gap) <= 0.5 / votes + 1e-12:
            break
        step = 1 if gap > 0 else -1
        movable = [k for k in range(len(bins)) if counts[k] > 0 and 0 <= k + step < len(bins)]
        source = max(movable, key=lambda k: (counts[k], -k * step))
        counts[source] -= 1
        counts[source + step] += 1
    out = [0] * 10
    for score, n in zip(bins, counts, strict=True):
        out[score - 1] = int(n)
    return out


def rating_std_2014(tally: RatingTally, min_ratings: int = MIN_RATINGS_FOR_STD) -> float | None:
    """The median per-theme standard deviation of valid 2014 star ratings (themes with at least
    `min_ratings`); None when no theme has that many."""
    import numpy as np

    stars = tally.stars.astype(np.float64)
    n = stars.sum(axis=1)
    rated = n >= min_ratings
    if not rated.any():
        return None
    levels = np.arange(RATING_MIN, RATING_MAX + 1, dtype=np.float64)
    mean = stars[rated] @ levels / n[rated]
    var = stars[rated] @ levels**2 / n[rated] - mean**2
    return float(np.median(np.sqrt(np.maximum(var, 0.0))))


def labels_2014(tally: RatingTally, mapping: str) -> Labels:
    """Histograms of themes with at least one valid rating; the others become theme rejects."""
    counts = counts_from_stars(tally.stars, mapping)
    accepted, rejects = {}, []
    for i, c in enumerate(counts):
        if c.sum() > 0:
            accepted[str(i + 1)] = [int(x) for x in c]
        else:
            rejects.append(Reject(str(i + 1), "no ratings: no valid rating names this theme"))
    return Labels(accepted, rejects)


def labels_2011(targets: np.ndarray, mapping: str, spread: str = "two_bin", std_stars: float = DEFAULT_STD_2011
                ) -> Labels:
    """Pseudo-histograms from mean ratings (two bins, or a normal of std_stars); a mean outside 1..5 (or NaN)
    rejects its theme."""
    import numpy as np

    accepted, rejects = {}, []
    for i, t in enumerate(targets):
        if np.isfinite(t) and RATING_MIN <= t <= RATING_MAX:
            accepted[str(i + 1)] = (counts_from_mean_normal(float(t), mapping, std_stars) if spread == "normal"
                                    else counts_from_mean(float(t), mapping))
        else:
            rejects.append(Reject(str(i + 1), f"out of range: mean rating {_fmt(float(t))} not in 1..5 (targets)"))
    return Labels(accepted, rejects)


# -------------------------------------------------------------------------------------------- swatches


def to_uint8(colours: np.ndarray) -> np.ndarray:
    """0..1 colours -> 0..255 levels, rounded to nearest."""
    import numpy as np

    return np.rint(np.asarray(colours, dtype=np.float64) * 255).astype(np.uint8)


def stripe_bounds(size: int) -> list[int]:
    """Left edges of the five stripes plus the right edge: widths differ by at most one pixel."""
    return [round(i * size / N_COLOURS) for i in range(N_COLOURS + 1)]


def stripe_centres(size: int) -> list[int]:
    b = stripe_bounds(size)
    return [(b[i] + b[i + 1]) // 2 for i in range(N_COLOURS)]


def render_swatch(colours: np.ndarray, size: int = STORED_CROP) -> Image.Image:
    """A size x size RGB image of five equal vertical stripes in theme order, exact colours."""
    import numpy as np
    from PIL import Image

    levels = to_uint8(colours).reshape(N_COLOURS, 3)
    b = stripe_bounds(size)
    row = np.repeat(levels, np.diff(b), axis=0)  # one scan line, (size, 3)
    return Image.fromarray(np.ascontiguousarray(np.broadcast_to(row, (size, size, 3))), "RGB")


def stripe_error(encoded: bytes, colours: np.ndarray) -> int:
    """Largest per-channel difference between each decoded stripe centre and its theme colour."""
    import numpy as np
    from PIL import Image

    img = Image.open(io.BytesIO(encoded)).convert("RGB")
    arr = np.asarray(img, dtype=np.int16)
    y = img.height // 2
    centres = arr[y, stripe_centres(img.width)]
    return int(np.abs(centres - to_uint8(colours).reshape(N_COLOURS, 3).astype(np.int16)).max())


def encode_swatch(colours: np.ndarray, size: int = STORED_CROP) -> tuple[bytes, int]:
    """JPEG bytes (and the quality used) whose stripe centres keep their colour within COLOUR_TOLERANCE.

    q95 without chroma subsampling meets it for swatches of 96 px and more; narrower stripes ring more,
    so q100 is tried before giving up.
    """
    img = render_swatch(colours, size)
    err = None
    for quality in JPEG_QUALITIES:
        data = encode_jpeg(img, quality)
        err = stripe_error(data, colours)
        if err <= COLOUR_TOLERANCE:
            return data, quality
    raise ValueError(f"a {size}px swatch drifts {err} levels even at JPEG q{JPEG_QUALITIES[-1]}")


def preview_grid(tiles: list[tuple[str, np.ndarray, float]], columns: int = 6, tile: int = 96) -> bytes:
    """PNG of swatches with their row and mean score underneath, for run metadata."""
    cells = [Cell(render_swatch(colours, tile), f"#{image_id}  {mean:.2f}") for image_id, colours, mean in tiles]
    return png_bytes(contact_sheet(cells, columns, tile, gap=4))


# -------------------------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class KulerSettings:
    """Which release to read and how to turn its ratings into labels and swatches."""

    release: str = setting("2014", "2014: themeData.mat + allMTurkRatings.mat; 2011: one file, mean ratings only")
    file_2011: str = setting("mturkData.mat", "the 2011 file under raw/kuler/: kulerData.mat or mturkData.mat")
    mapping: str = setting("high_spread", "stars r -> score 2r-1 (high_spread) or r+2 (low_spread)")
    swatch_size: int = bounded(STORED_CROP, Range(20, 1024, "side of the square swatch, px: under 20 px the five "
                                                            "stripes blur together, over 1024 px it is megabytes for "
                                                            "a model that reads 224"),
                               "side of the square swatch, px")
    softmax_temperature: float = bounded(1.0, SOFTMAX_TEMPERATURE, "T of histograms.p_softmax = softmax(counts / T)")
    spread_2011: str = setting("two_bin", "2011 only: two_bin (100 pseudo-votes on the two bins around the mean) or "
                                          "normal (a discretised normal of std_2011 stars around it)")
    std_2011: float | None = bounded(None, Range(0.0, 4.0, "stars lie within 1..5, so no spread exceeds 4",
                                                 lo_open=True),
                                     "2011, normal: the spread in stars; unset: estimated from 2014 ratings in the "
                                     "drop, else DEFAULT_STD_2011 (docs/kuler.md)")
    allow_shrink: bool = setting(False, "let a run reject more than half of the accepted themes "
                                        "(ingest/shrink_guard.py)")

    def __post_init__(self) -> None:
        if self.spread_2011 not in SPREADS_2011:
            raise ValueError(f"spread_2011 must be one of {', '.join(SPREADS_2011)}, got {self.spread_2011!r}")
        if self.release not in RELEASES:
            raise ValueError(f"release must be one of {', '.join(RELEASES)}, got {self.release!r}")
        if self.release == "2011" and self.file_2011 not in FILES_2011:
            raise ValueError(f"file_2011 must be one of {', '.join(FILES_2011)}, got {self.file_2011!r}")
        _scores(self.mapping)
        check_ranges(self)


@dataclass
class KulerReport:
    """What one materialisation did; everything a person needs to judge the run."""

    release: str
    sources: list[str]
    themes_read: int
    themes_accepted: int
    themes_rejected: int
    ratings_read: int
    ratings_kept: int
    ratings_rejected: int
    swatches_written: int
    swatches_unchanged: int
    swatches_removed: int
    splits: dict[str, int]
    rejects_by_reason: dict[str, int]
    mean_score: float
    jpeg_quality: dict[int, int]
    sync: SyncStats
    preview_png: bytes = b""
    preview_path: str = ""
    labels: str = ""  # how the histograms were made, e.g. "2011 normal spread, std 0.92 stars (default)"


def _write_swatches(
    themes: Themes, accepted: list[str], size: int, dest_dir: Path
) -> Iterator[tuple[str, Path, str, int, bool]]:
    """(image_id, dest, sha256, quality, written) per accepted theme; an identical file is left alone."""
    for image_id in accepted:
        data, quality = encode_swatch(themes.colours[int(image_id) - 1], size)
        dest = dest_dir / f"{image_id}.jpg"
        digest = sha256_bytes(data)
        unchanged = dest.is_file() and dest.stat().st_size == len(data) and sha256_file(dest) == digest
        if not unchanged:
            write_atomic(dest, data)
        yield image_id, dest, digest, quality, not unchanged


def _kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def _preview_tiles(themes: Themes, means: dict[str, float], k: int = 24) -> list[tuple[str, np.ndarray, float]]:
    """Up to k themes evenly spaced from the lowest to the highest mean score."""
    ranked = sorted(means, key=lambda i: (means[i], int(i)))
    if len(ranked) > k:
        ranked = [ranked[round(j * (len(ranked) - 1) / (k - 1))] for j in range(k)]
    return [(i, themes.colours[int(i) - 1], means[i]) for i in ranked]


@dataclass(frozen=True)
class Reading:
    """One release read and labelled: what ingest_kuler writes and reports."""

    themes: Themes
    labels: Labels
    rating_rejects: list[Reject]  # 2014 only; a bad 2011 mean rejects its theme (labels.rejects)
    ratings_read: int
    ratings_kept: int
    sources: list[str]
    label_std: float | None = None  # 2011 normal spread: the per-theme std used, in stars
    label_std_source: str = ""  # where it came from: "config", a 2014 ratings file, or "default"


def read_release(raw: Path, settings: KulerSettings) -> Reading:
    """Read and label the configured release from the raw kuler folder."""
    if settings.release == "2014":
        themes = read_themes_2014(raw / FILES_2014[0])
        tally = read_ratings_2014(raw / FILES_2014[1], len(themes))
        labels = labels_2014(tally, settings.mapping)
        return Reading(themes, labels, tally.rejects, tally.read, tally.kept, [str(themes.source), str(tally.source)])
    themes, targets = read_release_2011(raw / settings.file_2011)
    std, std_source = None, ""
    if settings.spread_2011 == "normal":
        std, std_source = spread_for_2011(raw, settings)
    labels = labels_2011(targets, settings.mapping, settings.spread_2011, std or DEFAULT_STD_2011)
    # In 2011 a theme's one mean rating is its only rating.
    return Reading(themes, labels, [], len(targets), len(labels.counts), [str(themes.source)], std, std_source)


def spread_for_2011(raw: Path, settings: KulerSettings) -> tuple[float, str]:
    """The per-theme std (stars) of the 2011 normal spread and its source: the config's, else the median of
    the 2014 release's real per-theme spreads when its files are in the same drop, else the stated default."""
    if settings.std_2011 is not None:
        return settings.std_2011, "config"
    themes_file, ratings_file = (raw / f for f in FILES_2014)
    if themes_file.is_file() and ratings_file.is_file():
        estimate = rating_std_2014(read_ratings_2014(ratings_file, len(read_themes_2014(themes_file))))
        if estimate is not None and estimate > 0:
            return estimate, f"median per-theme std of {ratings_file.name}"
    return DEFAULT_STD_2011, "default"


def ingest_kuler(
    paths: Paths,
    connect: Connect,
    settings: KulerSettings,
    batch: str | None = None,
    log: Log = no_log,
) -> KulerReport:
    """Read the configured release under raw/kuler, write swatches, and sync images/histograms/rejects.

    A full disk stops it with NoSpaceLeft; swatches written but not recorded are removed (ingest/crop_folder.py).
    """
    with paths.full_disk_as_error(), crop_folder(paths, DATASET, connect, log):
        return _ingest_kuler(paths, connect, settings, batch, log)


def _ingest_kuler(paths: Paths, connect: Connect, settings: KulerSettings, batch: str | None,
                  log: Log) -> KulerReport:
    import numpy as np

    reading = read_release(paths.raw / DATASET, settings)
    themes, labels = reading.themes, reading.labels
    log(f"{len(themes)} themes, {reading.ratings_read} ratings read from {', '.join(reading.sources)}")
    with connect() as conn:
        before = accepted_ids(conn, DATASET)
    reasons = {r.item_id: r.reason for r in labels.rejects}
    lost = lost_items(before, labels.counts, reasons, f"gone: no longer in {Path(themes.source).name}")
    guard_shrink(DATASET, len(before), lost, settings.allow_shrink)  # before any swatch is written

    images_dir = paths.images_dir(DATASET)
    image_rows, kuler_rows, qualities, written = _swatch_rows(paths, themes, labels, settings, images_dir)

    rejects = [*reading.rating_rejects, *labels.rejects]
    with connect() as conn:
        sync = sync_kuler(conn, image_rows, labels.counts, kuler_rows, rejects, STAGE, settings.softmax_temperature,
                          batch)

    # Swatches of themes that left the source or are now rejected: images/kuler/ belongs to this stage.
    removed = [f for f in images_dir.glob("*.jpg") if f.stem not in labels.counts]
    for f in removed:
        f.unlink()

    means = {i: float(np.dot(c, np.arange(1, 11)) / sum(c)) for i, c in labels.counts.items()}
    png, preview = _write_preview(paths, themes, means)
    return KulerReport(
        release=settings.release,
        sources=reading.sources,
        themes_read=len(themes),
        themes_accepted=len(labels.counts),
        themes_rejected=len(labels.rejects),
        ratings_read=reading.ratings_read,
        ratings_kept=reading.ratings_kept,
        ratings_rejected=reading.ratings_read - reading.ratings_kept,
        swatches_written=written,
        swatches_unchanged=len(image_rows) - written,
        swatches_removed=len(removed),
        splits=dict(Counter(r.split for r in image_rows)),
        rejects_by_reason=dict(Counter(_kind(r.reason) for r in rejects)),
        mean_score=float(np.mean(list(means.values()))) if means else float("nan"),
        jpeg_quality=dict(qualities),
        sync=sync,
        preview_png=png,
        preview_path=str(preview),
        labels=_label_description(settings, reading),
    )


def _swatch_rows(paths: Paths, themes: Themes, labels: Labels, settings: KulerSettings,
                 images_dir: Path) -> tuple[list[ImageRow], list[KulerTheme], Counter, int]:
    """Write each accepted theme's swatch (when changed) and build its images and kuler_themes rows; also the
    JPEG qualities used and how many swatches were written."""
    image_rows, kuler_rows, qualities = [], [], Counter()
    written = 0
    for image_id, dest, digest, quality, did_write in _write_swatches(
        themes, list(labels.counts), settings.swatch_size, images_dir
    ):
        written += did_write
        qualities[quality] += 1
        i = int(image_id) - 1
        image_rows.append(
            ImageRow(
                image_id=image_id,
                split=three_way_split(image_id, SPLIT_SALT),
                source_path=f"{themes.source}#{image_id}",
                path=paths.to_stored(dest),
                width=settings.swatch_size,
                height=settings.swatch_size,
                sha256=digest,
            )
        )
        kuler_rows.append(
            KulerTheme(
                image_id=image_id,
                theme_id=int(themes.ids[i]),
                name=themes.names[i],
                release=settings.release,
                colours=[float(v) for v in themes.colours[i].reshape(-1)],
                mapping=settings.mapping,
                temperature=float(settings.softmax_temperature),
            )
        )
    return image_rows, kuler_rows, qualities, written


def _write_preview(paths: Paths, themes: Themes, means: dict[str, float]) -> tuple[bytes, Path]:
    """The contact sheet of swatches by mean score, written to reports/kuler/preview.png."""
    png = preview_grid(_preview_tiles(themes, means))
    preview = paths.reports_dir() / DATASET / "preview.png"
    write_atomic(preview, png)
    return png, preview


def _label_description(settings: KulerSettings, reading: Reading) -> str:
    if settings.release == "2014":
        return f"2014 votes, {settings.mapping}"
    if settings.spread_2011 == "two_bin":
        return f"2011 two-bin pseudo-votes, {settings.mapping}"
    return (f"2011 normal pseudo-votes, {settings.mapping}, std {reading.label_std:.3f} stars "
            f"({reading.label_std_source})")
