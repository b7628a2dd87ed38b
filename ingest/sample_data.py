"""Small raw drops in the real on-disk formats of AVA, SAC and Kuler (docs/contract.md, "Raw layouts").

Scores follow what the pixels show: a hidden quality q in [0, 1] sets colourfulness,
contrast, sharpness, noise and how centred the subject is, and the votes are drawn
around 2.5 + 5q. A model that learns from these pixels beats chance on held-out
images; a pipeline that attaches labels to the wrong pixels does not.
"""

from __future__ import annotations

import colorsys
import io
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, ImageDraw, ImageFilter

from ingest.ava import VAL_FRACTION as AVA_VAL_FRACTION
from ingest.ava import VAL_SALT as AVA_VAL_SALT
from ingest.kuler import SPLIT_SALT as KULER_SPLIT_SALT
from ingest.sac import SPLIT_SALT as SAC_SPLIT_SALT
from ingest.sac_schema import SAC_SCHEMA
from ingest.splits import hash_fraction, three_way_split

SAC_DB_NAME = "sac_public_2022_06_29.sqlite"

AVA_TAGS = [
    (1, "Abstract"), (2, "Still Life"), (3, "Black and White"), (4, "Landscape"),
    (5, "Portraiture"), (6, "Nature"), (7, "Macro"), (8, "Animals"), (9, "Urban"),
    (10, "Floral"), (11, "Architecture"), (12, "Family Pets"), (13, "Food and Drink"),
]
AVA_CHALLENGES = [
    (1396, "Green Things II"), (1397, "Shadows and Light"), (1398, "Free Study 2011"),
    (1399, "Rule of Thirds"), (1400, "Motion Blur"), (1401, "Red, White and Blue"),
]


# Planted cross-split duplicates per dataset: a train item overwritten with a copy of a val or test item.
N_LEAKS = 2


@dataclass(frozen=True)
class PlantedDuplicate:
    """A train item whose picture (AVA, SAC) or colours (Kuler) copy a val or test item's."""

    dataset: str
    copy_id: str  # the train item, keeping its own votes
    original_id: str
    original_split: str


@dataclass
class SampleReport:
    """What was written, including the faults planted on purpose (for tests and the demo)."""

    out: Path
    ava_rows: int = 0
    sac_images: int = 0
    sac_ratings: int = 0
    kuler_themes: int = 0
    kuler_ratings: int = 0
    faults: dict[str, list[str]] = field(default_factory=dict)
    duplicates: list[PlantedDuplicate] = field(default_factory=list)

    def fault(self, kind: str, item: str) -> None:
        self.faults.setdefault(kind, []).append(item)

    def duplicate(self, dataset: str, copy_id: str, original_id: str, original_split: str) -> None:
        self.duplicates.append(PlantedDuplicate(dataset, copy_id, original_id, original_split))
        self.fault("cross_split_duplicate", copy_id)


def pair_up(held_out: list[tuple[str, str]], train: list[str], n: int = N_LEAKS) -> list[tuple[str, str, str]]:
    """(copy id, original id, original split) for up to n leaks: a val original first when there is one (so
    both held-out splits are covered), each copied over a different train item."""
    vals = [h for h in held_out if h[1] == "val"]
    tests = [h for h in held_out if h[1] == "test"]
    chosen = (vals[:1] + tests + vals[1:])[:n]
    return [(copy, orig, split) for copy, (orig, split) in zip(train, chosen, strict=False)]


def resized_reencoded(src: Path, scale: float = 0.8, quality: int = 80) -> Image.Image:
    """What a re-upload does to a picture: smaller and recompressed (lossy JPEG at `quality`)."""
    with Image.open(src) as img:
        img = img.convert("RGB")
        small = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                           Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf)


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def render_photo(rng: np.random.Generator, q: float, width: int, height: int) -> Image.Image:
    """A picture whose look improves with q: vivid, contrasted, sharp, centred subject, clean."""
    hue = rng.random()
    sat = 0.05 + 0.9 * q
    contrast = 0.12 + 0.8 * q
    top, bottom = 0.5 + contrast / 2, 0.5 - contrast / 2
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    c_top = np.array(_rgb(hue, sat * 0.6, top), dtype=np.float32)
    c_bot = np.array(_rgb(hue + 0.08, sat, bottom), dtype=np.float32)
    canvas = (c_top * (1 - ramp) + c_bot * ramp).repeat(width, axis=1)
    img = Image.fromarray(canvas.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    # The subject: centred for good pictures, pushed towards an edge for poor ones.
    side = min(width, height)
    radius = side * (0.18 + 0.1 * rng.random())
    offset = (1 - q) * 0.45 * side
    angle = rng.random() * 2 * np.pi
    cx, cy = width / 2 + offset * np.cos(angle), height / 2 + offset * np.sin(angle)
    draw.ellipse(
        [cx - radius, cy - radius, cx + radius, cy + radius],
        fill=_rgb(hue + 0.5, sat, 0.5 + contrast / 2.2),
        outline=_rgb(hue + 0.5, sat, 0.5 - contrast / 2),
        width=max(2, int(side / 60)),
    )
    for _ in range(3 + int(rng.integers(0, 4))):  # texture lines
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = rng.integers(0, width), rng.integers(0, height)
        draw.line([x0, y0, x1, y1], fill=_rgb(hue + 0.25, sat, 0.5 - contrast / 3), width=max(1, side // 100))
    blur = (1 - q) * 3.5
    if blur > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    noise_sigma = (1 - q) * 18
    if noise_sigma > 1:
        arr = np.asarray(img, dtype=np.float32) + rng.normal(0, noise_sigma, (height, width, 1))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return img


def votes_for(rng: np.random.Generator, q: float, n_votes: int, scores: int = 10, spread: float = 1.3) -> np.ndarray:
    """A histogram of n_votes scores 1..scores centred where q says (AVA-like spread)."""
    centre = 1 + (scores - 1) * (0.17 + 0.66 * q) + rng.normal(0, 0.25)
    votes = np.clip(np.rint(rng.normal(centre, spread, n_votes)), 1, scores).astype(int)
    return np.bincount(votes - 1, minlength=scores)


def _random_size(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int]:
    long_side = int(rng.integers(lo, hi))
    aspect = float(rng.choice([1.0, 4 / 3, 3 / 2, 16 / 9, 5 / 4]))
    short = max(40, int(long_side / aspect))
    return (long_side, short) if rng.random() < 0.7 else (short, long_side)


def write_ava(out: Path, n: int, rng: np.random.Generator, faults: bool, report: SampleReport) -> None:
    ava = out / "ava"
    images = ava / "images"
    lists = ava / "aesthetics_image_lists"
    images.mkdir(parents=True, exist_ok=True)
    lists.mkdir(parents=True, exist_ok=True)
    (ava / "tags.txt").write_text("".join(f"{i} {name}\n" for i, name in AVA_TAGS))
    (ava / "challenges.txt").write_text("".join(f"{i} {name}\n" for i, name in AVA_CHALLENGES))
    ids = sorted(int(x) for x in rng.choice(np.arange(1000, 999_999), size=n, replace=False))
    lines, test_ids = [], []
    for index, image_id in enumerate(ids, start=1):
        q = float(rng.random())
        counts = votes_for(rng, q, int(rng.integers(60, 260)))
        tag1, tag2 = (int(rng.choice([0] + [t for t, _ in AVA_TAGS])) for _ in range(2))
        challenge = int(rng.choice([c for c, _ in AVA_CHALLENGES]))
        lines.append(" ".join(str(v) for v in [index, image_id, *counts, tag1, tag2, challenge]))
        if rng.random() < 0.2:
            test_ids.append(image_id)
        img = render_photo(rng, q, *_random_size(rng, 300, 520))
        if rng.random() < 0.08:  # AVA has black-and-white challenges
            img = img.convert("L")
        img.save(images / f"{image_id}.jpg", quality=90)
    if faults and n >= 8:
        next_id = ids[-1] + 1
        truncated, corrupt_id, nonimage = ids[1], ids[2], ids[3]
        data = (images / f"{truncated}.jpg").read_bytes()
        (images / f"{truncated}.jpg").write_bytes(data[: len(data) // 2])
        report.fault("truncated_jpeg", str(truncated))
        (images / f"{nonimage}.jpg").write_text("<html>404 Not Found</html>\n")
        report.fault("not_an_image", str(nonimage))
        (images / f"{corrupt_id}.jpg").write_bytes(b"")
        report.fault("empty_file", str(corrupt_id))
        tiny = ids[4]
        Image.new("RGB", (20, 16), (120, 30, 30)).save(images / f"{tiny}.jpg", quality=90)
        report.fault("too_small", str(tiny))
        lines.append(f"{len(lines) + 1} {next_id} 0 1 2 5 9 12 7 3 1 0 0 0 1396")  # no image file
        report.fault("missing_image", str(next_id))
        lines.append(f"{len(lines) + 1} {next_id + 1} 3 4 five 6 7 8 9 10 11 12 0 0 1396")
        report.fault("unparsable_line", f"line:{len(lines)}")
        lines.append(f"{len(lines) + 1} {next_id + 2} 0 0 0 0 0 0 0 0 0 0 0 0 1397")
        Image.new("RGB", (300, 200), (10, 10, 10)).save(images / f"{next_id + 2}.jpg", quality=90)
        report.fault("zero_votes", str(next_id + 2))
        lines.append(f"{len(lines) + 1} {ids[5]} 1 1 1 1 1 1 1 1 1 1 0 0 1397")  # repeated image id
        report.fault("duplicate_id", str(ids[5]))
        _plant_ava_leaks(images, ids[6:], set(test_ids), report)
    (ava / "AVA.txt").write_text("\n".join(lines) + "\n")
    (lists / "generic_test.jpgl").write_text("".join(f"{i}\n" for i in test_ids))
    report.ava_rows = len(lines)


def _plant_ava_leaks(images: Path, ids: list[int], test_ids: set[int], report: SampleReport) -> None:
    """Overwrite the last train photos with resized, re-encoded copies of val/test photos (ids untouched by other
    faults); the copies keep their own votes, as a repeated photo in AVA has."""
    def split(i: int) -> str:
        if i in test_ids:
            return "test"
        return "val" if hash_fraction(str(i), AVA_VAL_SALT) < AVA_VAL_FRACTION else "train"

    held_out = [(str(i), split(i)) for i in ids if split(i) != "train"]
    train = [str(i) for i in reversed(ids) if split(i) == "train"]
    for copy, orig, orig_split in pair_up(held_out, train):
        resized_reencoded(images / f"{orig}.jpg").save(images / f"{copy}.jpg", quality=90)
        report.duplicate("ava", copy, orig, orig_split)


_PROMPT_WORDS = ["a lighthouse", "an astronaut", "a forest", "a cat", "the sea", "a city", "a dragon", "a garden"]
_STYLES = ["oil painting", "trending on artstation", "watercolor", "by Greg Rutkowski", "8k photo", "pastel"]


def write_sac_db(path: Path, generations: list, images: list, paths: list, ratings: list) -> None:
    """A SQLite file with the real SAC tables (written in place of any older file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    con = sqlite3.connect(path)
    try:
        con.executescript(SAC_SCHEMA)
        con.executemany("INSERT INTO generations VALUES (?, ?, ?, ?, ?)", generations)
        con.executemany("INSERT INTO images VALUES (?, ?, ?)", images)
        con.executemany("INSERT INTO paths VALUES (?, ?)", paths)
        con.executemany("INSERT INTO ratings VALUES (?, ?, ?, ?)", ratings)
        con.executemany("INSERT INTO survey VALUES (?, ?, ?)", [(1, 1, 7), (2, 2, 4)])
        con.executemany("INSERT INTO upscales VALUES (?, ?)", [(i[0], "esrgan") for i in images[:2]])
        con.commit()
    finally:
        con.close()


def write_sac(out: Path, n: int, rng: np.random.Generator, faults: bool, report: SampleReport) -> None:
    sac = out / "sac"
    img_dir = sac / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    generations, images, paths, ratings = [], [], [], []
    n_raters = 40
    gid = 0
    iid = 0
    while iid < n:
        gid += 1
        prompt = f"{rng.choice(_PROMPT_WORDS)}, {rng.choice(_STYLES)}"
        generations.append((gid, int(rng.integers(1, n_raters)), "CLIP+CC12M", prompt, 1))
        for idx in range(min(int(rng.integers(1, 4)), n - iid)):
            iid += 1
            q = float(rng.random())
            images.append((iid, gid, idx))
            name = f"{gid}_{idx}.png"
            paths.append((iid, name))
            render_photo(rng, q, *_random_size(rng, 256, 384)).save(img_dir / name)
            for sid in rng.choice(np.arange(1, n_raters + 1), size=int(rng.integers(3, 9)), replace=False):
                rating = int(np.clip(np.rint(rng.normal(2.5 + 6.5 * q, 1.2)), 1, 10))
                ratings.append((int(sid), iid, rating, 1))
    if faults and n >= 6:
        ratings.append((3, 1, None, 0))
        report.fault("null_rating", "rating:3:1")
        ratings.append((4, 2, 11, 1))
        report.fault("rating_out_of_range", "rating:4:2")
        ratings.append((5, 2, 0, 1))
        report.fault("rating_out_of_range", "rating:5:2")
        paths[2] = (paths[2][0], "../../etc/passwd")
        report.fault("path_escapes_root", str(paths[2][0]))
        (img_dir / paths[3][1]).unlink()
        report.fault("missing_image", str(paths[3][0]))
        data = (img_dir / paths[4][1]).read_bytes()
        (img_dir / paths[4][1]).write_bytes(data[: len(data) // 3])
        report.fault("truncated_png", str(paths[4][0]))
        # Splits go by generation, so a copy in another generation is what crosses them.
        split = {iid: three_way_split(str(gid), SAC_SPLIT_SALT) for iid, gid, _ in images}
        untouched = [(iid, name) for iid, name in paths[5:]]
        held_out = [(str(iid), split[iid]) for iid, _ in untouched if split[iid] != "train"]
        train = [str(iid) for iid, _ in reversed(untouched) if split[iid] == "train"]
        names = dict(paths)
        for copy, orig, orig_split in pair_up(held_out, train):
            resized_reencoded(img_dir / names[int(orig)]).save(img_dir / names[int(copy)])  # back to PNG
            report.duplicate("sac", copy, orig, orig_split)
    write_sac_db(sac / SAC_DB_NAME, generations, images, paths, ratings)
    report.sac_images = len(images)
    report.sac_ratings = len(ratings)


def theme_colours(rng: np.random.Generator, q: float) -> np.ndarray:
    """Five colours (5x3 in 0..1): harmonious, saturated and varied in lightness when q is high."""
    hue = rng.random()
    steps = (rng.random(5) - 0.5) * (0.08 + (1 - q) * 0.9)
    hues = hue + np.cumsum(steps)
    sats = np.clip(0.15 + 0.75 * q + rng.normal(0, 0.08, 5), 0, 1)
    vals = np.clip(np.linspace(0.35, 0.95, 5)[rng.permutation(5)] * (0.5 + 0.5 * q) + (1 - q) * 0.3, 0, 1)
    return np.array([colorsys.hsv_to_rgb(h % 1.0, s, v) for h, s, v in zip(hues, sats, vals, strict=True)])


def write_kuler(out: Path, n: int, rng: np.random.Generator, faults: bool, report: SampleReport) -> None:
    kuler = out / "kuler"
    kuler.mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((n, 15))
    ratings = []
    for row in range(n):
        q = float(rng.random())
        rgb[row] = theme_colours(rng, q).reshape(15)
        hist = votes_for(rng, q, int(rng.integers(20, 45)), scores=5, spread=0.8)
        for rating, count in enumerate(hist, start=1):
            for _ in range(count):
                ratings.append((int(rng.integers(1, 1700)), row + 1, rating))
    ids = rng.choice(np.arange(100_000, 2_000_000), size=n, replace=False).astype(np.float64)
    names = np.array([f"theme {i} {rng.choice(_STYLES)}" for i in range(n)], dtype=object)
    if faults and n >= 4:
        ratings.append((7, 1, 7))
        report.fault("rating_out_of_range", "rating:7:1")
        ratings.append((8, n + 50, 3))
        report.fault("unknown_theme", f"rating:8:{n + 50}")
        _plant_kuler_leaks(rgb, rng, report)
    order = rng.permutation(len(ratings))
    test_ratings = np.array(ratings, dtype=np.float64)[order]
    scipy.io.savemat(kuler / "themeData.mat", {"datapoints": {"rgb": rgb, "ids": ids, "names": names}})
    scipy.io.savemat(kuler / "allMTurkRatings.mat", {"testRatings": test_ratings})
    report.kuler_themes = n
    report.kuler_ratings = len(test_ratings)


def _plant_kuler_leaks(rgb: np.ndarray, rng: np.random.Generator, report: SampleReport) -> None:
    """Give the last train themes the colours of val/test themes, each channel moved by at most 2 of 255 levels
    (a re-entered copy of the palette); the copies keep their own ratings."""
    split = {str(r): three_way_split(str(r), KULER_SPLIT_SALT) for r in range(1, len(rgb) + 1)}
    held_out = [(r, s) for r, s in split.items() if s != "train"]
    train = [r for r, s in reversed(split.items()) if s == "train"]
    for copy, orig, orig_split in pair_up(held_out, train):
        jitter = rng.integers(-2, 3, 15) / 255
        rgb[int(copy) - 1] = np.clip(rgb[int(orig) - 1] + jitter, 0, 1)
        report.duplicate("kuler", copy, orig, orig_split)


def write_sample_data(
    out: str | Path, ava: int = 240, sac: int = 120, kuler: int = 300, seed: int = 0, faults: bool = False
) -> SampleReport:
    """Write raw drops under out/{ava,sac,kuler}; each dataset has its own seeded stream."""
    out = Path(out)
    report = SampleReport(out=out)
    if ava:
        write_ava(out, ava, np.random.default_rng([seed, 1]), faults, report)
    if sac:
        write_sac(out, sac, np.random.default_rng([seed, 2]), faults, report)
    if kuler:
        write_kuler(out, kuler, np.random.default_rng([seed, 3]), faults, report)
    return report


KULER_2011_FILES = ("kulerData.mat", "mturkData.mat")


def write_kuler_2011(
    out: str | Path,
    n: int = 120,
    seed: int = 0,
    faults: bool = False,
    filename: str = "mturkData.mat",
    report: SampleReport | None = None,
) -> SampleReport:
    """The 2011 release (O'Donovan et al., "Color Compatibility From Large Datasets"): out/kuler/<filename>.

    One file per source (kulerData.mat or mturkData.mat) holding `data` (N x 5 x 3 colours in 0..1),
    `targets` (N mean ratings in 1..5), `ids` (int32) and `names`. With faults, two themes get an
    impossible mean rating (one above 5, one NaN), listed as 'target_out_of_range' by theme row.
    """
    out = Path(out)
    report = report or SampleReport(out=out)
    rng = np.random.default_rng([seed, 4])
    kuler = out / "kuler"
    kuler.mkdir(parents=True, exist_ok=True)
    data = np.zeros((n, 5, 3))
    targets = np.zeros(n)
    for row in range(n):
        q = float(rng.random())
        data[row] = theme_colours(rng, q)
        hist = votes_for(rng, q, int(rng.integers(20, 45)), scores=5, spread=0.8)
        targets[row] = float(np.dot(hist, np.arange(1, 6)) / hist.sum())
    if faults and n >= 4:
        targets[1] = 5.6
        targets[2] = np.nan
        report.fault("target_out_of_range", "2")
        report.fault("target_out_of_range", "3")
    ids = rng.choice(np.arange(100_000, 2_000_000), size=n, replace=False).astype(np.int32)
    names = np.array([f"theme {i} {rng.choice(_STYLES)}" for i in range(n)], dtype=object)
    scipy.io.savemat(kuler / filename, {"data": data, "targets": targets, "ids": ids, "names": names})
    return report
