"""Designs as genomes: an outline filled with a gradient and a spirograph pattern, drawn by Pillow.

A genome is a frozen dataclass of plain numbers (JSON-ready through `as_dict`):
the outline (heart, star, kite/trapezoid, landscape) with its shape parameters,
size and rotation; a two-colour linear fill gradient; a hypotrochoid
("spirograph") line pattern clipped to the outline; colours and stroke widths.
`render` draws at `supersample` times the size and downsamples with Lanczos,
which is the anti-aliasing. `mutate` perturbs genes with a `random.Random`, so a
seed fixes the whole sequence.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from critic.settings import EvolveSettings

SHAPES = ("heart", "star", "kite", "landscape")
SHAPE_ALIASES = {"trapezoid": "kite"}
N_OUTLINE = 4  # shape parameters, each in [0, 1]; what they mean depends on the shape

RGB = tuple[int, int, int]

# Float genes: (low, high) bounds; mutation noise is a fraction of the range.
FLOAT_GENES = {
    "scale": (0.5, 0.82),  # of the canvas half-width: keeps the outline inside the critic's centre crop
    "rotation": (-30.0, 30.0),
    "gradient_angle": (0.0, 360.0),
    "outline_width": (0.0, 0.04),  # of the canvas size
    "pattern_width": (0.002, 0.02),
    "pattern_offset": (0.1, 1.3),  # hypotrochoid pen distance d / r
    "pattern_scale": (0.3, 1.0),
    "pattern_opacity": (0.2, 1.0),
}
INT_GENES = {"pattern_ring": (3, 16), "pattern_wheel": (1, 15)}  # R and r of the hypotrochoid
COLOUR_GENES = ("fill_a", "fill_b", "background", "outline_colour", "pattern_colour")


@dataclass(frozen=True)
class Genome:
    shape: str
    outline: tuple[float, ...]
    scale: float
    rotation: float
    fill_a: RGB
    fill_b: RGB
    gradient_angle: float
    background: RGB
    outline_colour: RGB
    outline_width: float
    pattern_colour: RGB
    pattern_width: float
    pattern_ring: int
    pattern_wheel: int
    pattern_offset: float
    pattern_scale: float
    pattern_opacity: float

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Genome:
        kw = {f.name: d[f.name] for f in fields(cls)}
        kw["outline"] = tuple(kw["outline"])
        for name in COLOUR_GENES:
            kw[name] = tuple(kw[name])
        return cls(**kw)


def canonical_shape(shape: str) -> str:
    shape = SHAPE_ALIASES.get(shape, shape)
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)} (or trapezoid)")
    return shape


def _colour(rng: random.Random) -> RGB:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def random_genome(shape: str, rng: random.Random) -> Genome:
    shape = canonical_shape(shape)
    floats = {k: rng.uniform(lo, hi) for k, (lo, hi) in FLOAT_GENES.items()}
    ring = rng.randint(*INT_GENES["pattern_ring"])
    return Genome(
        shape=shape,
        outline=tuple(rng.random() for _ in range(N_OUTLINE)),
        pattern_ring=ring,
        pattern_wheel=rng.randint(1, ring - 1),
        **{k: _colour(rng) for k in COLOUR_GENES},
        **floats,
    )


def mutate(g: Genome, rng: random.Random, rate: float = 0.3, strength: float = 0.15) -> Genome:
    """Each gene changes with probability `rate`, by Gaussian noise of `strength` times its range."""
    changes: dict = {}
    outline = list(g.outline)
    for i in range(len(outline)):
        if rng.random() < rate:
            outline[i] = min(1.0, max(0.0, outline[i] + rng.gauss(0, strength)))
    changes["outline"] = tuple(outline)
    for name, (lo, hi) in FLOAT_GENES.items():
        if rng.random() < rate:
            changes[name] = min(hi, max(lo, getattr(g, name) + rng.gauss(0, strength * (hi - lo))))
    for name in COLOUR_GENES:
        if rng.random() < rate:
            changes[name] = tuple(
                int(min(255, max(0, round(c + rng.gauss(0, strength * 255))))) for c in getattr(g, name))
    ring, wheel = g.pattern_ring, g.pattern_wheel
    if rng.random() < rate:
        ring = min(INT_GENES["pattern_ring"][1], max(INT_GENES["pattern_ring"][0], ring + rng.choice((-1, 1))))
    if rng.random() < rate:
        wheel += rng.choice((-1, 1))
    changes["pattern_ring"], changes["pattern_wheel"] = ring, min(ring - 1, max(1, wheel))
    return replace(g, **changes)


def outline_points(shape: str, p: tuple[float, ...], n: int = 240) -> list[tuple[float, float]]:
    """The closed outline in unit coordinates (about [-1, 1], y pointing down)."""
    shape = canonical_shape(shape)
    if shape == "heart":
        sx, sy = 0.8 + 0.4 * p[0], 0.8 + 0.4 * p[1]
        cleft = 0.5 + p[2]  # depth of the dip between the lobes
        pts = []
        for k in range(n):
            t = 2 * math.pi * k / n
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * cleft * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((sx * x / 17, -sy * (y + 2.5) / 17))
        return pts
    if shape == "star":
        spikes = 4 + round(p[0] * 6)
        inner = 0.3 + 0.5 * p[1]
        twist = (p[2] - 0.5) * math.pi / spikes
        pts = []
        for k in range(2 * spikes):
            r = 1.0 if k % 2 == 0 else inner
            a = -math.pi / 2 + math.pi * k / spikes + (twist if k % 2 else 0.0)
            pts.append((r * math.cos(a), r * math.sin(a)))
        return pts
    if shape == "kite":
        # Top and bottom edges of width 0 give a kite; with the waist between them, a trapezoid.
        top, bottom = 0.8 * p[0], 0.8 * p[1]
        waist_w, waist_y = 0.4 + 0.6 * p[2], -0.6 + 1.2 * p[3]
        return [(-top, -1.0), (top, -1.0), (waist_w, waist_y), (bottom, 1.0), (-bottom, 1.0), (-waist_w, waist_y)]
    # landscape: a wide frame whose top edge is a mountain ridge.
    freqs = (1 + 3 * p[0], 3 + 5 * p[1])
    pts = []
    for k in range(n + 1):
        x = -1 + 2 * k / n
        ridge = -0.15 - 0.3 * (0.6 * math.sin(freqs[0] * x + 6 * p[2]) + 0.4 * math.sin(freqs[1] * x + 6 * p[3]))
        pts.append((x, ridge))
    return [*pts, (1.0, 0.6), (-1.0, 0.6)]


def _place(pts: list[tuple[float, float]], g: Genome, half: float) -> list[tuple[float, float]]:
    a = math.radians(g.rotation)
    ca, sa = math.cos(a), math.sin(a)
    r = g.scale * half
    return [(half + r * (x * ca - y * sa), half + r * (x * sa + y * ca)) for x, y in pts]


def _gradient(g: Genome, side: int) -> Image.Image:
    """The linear fill gradient. Its position t along the gradient is quantised to 256 levels and mapped to
    colours by lookup tables in Pillow: 17x faster than interpolating every pixel in float (what made a round
    of 32 renders take seconds), and at most one level away from it."""
    a = math.radians(g.gradient_angle)
    coords = np.linspace(-1.0, 1.0, side, dtype=np.float32)
    k = 255 * 0.5 / math.sqrt(2)
    # t * 255 + 0.5 (rounding before the truncating cast), as an outer sum of the two axes' terms
    levels = np.add.outer(coords * (math.sin(a) * k) + 128.0, coords * (math.cos(a) * k)).astype(np.uint8)
    t = np.arange(256) / 255
    lut = np.clip(np.outer(g.fill_a, 1 - t) + np.outer(g.fill_b, t) + 0.5, 0, 255).astype(np.uint8)
    position = Image.fromarray(levels, "L")
    return Image.merge("RGB", [position.point(lut[c].tolist()) for c in range(3)])


def _spirograph(g: Genome, half: float) -> list[tuple[float, float]]:
    ring, wheel = g.pattern_ring, g.pattern_wheel
    d = g.pattern_offset * wheel
    turns = wheel // math.gcd(ring, wheel)  # the curve closes after this many turns of the ring
    n = 300 * turns
    extent = (ring - wheel) + d
    r = g.pattern_scale * g.scale * half / extent
    pts = []
    for k in range(n + 1):
        t = 2 * math.pi * turns * k / n
        x = (ring - wheel) * math.cos(t) + d * math.cos((ring - wheel) / wheel * t)
        y = (ring - wheel) * math.sin(t) - d * math.sin((ring - wheel) / wheel * t)
        pts.append((half + r * x, half + r * y))
    return pts


def render(g: Genome, size: int = EvolveSettings.size, supersample: int = 3) -> Image.Image:
    """The design as an RGB image of size x size, anti-aliased by supersampling."""
    side = size * supersample
    half = side / 2
    canvas = Image.new("RGB", (side, side), g.background)
    outline = _place(outline_points(g.shape, g.outline), g, half)
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).polygon(outline, fill=255)
    canvas.paste(_gradient(g, side), (0, 0), mask)

    lines = Image.new("L", (side, side), 0)
    width = max(1, round(g.pattern_width * side))
    ImageDraw.Draw(lines).line(_spirograph(g, half), fill=round(255 * g.pattern_opacity), width=width, joint="curve")
    canvas.paste(g.pattern_colour, (0, 0, side, side), ImageChops.multiply(lines, mask))

    stroke = round(g.outline_width * side)
    if stroke > 0:
        ImageDraw.Draw(canvas).line([*outline, outline[0]], fill=g.outline_colour, width=stroke, joint="curve")
    return canvas.resize((size, size), Image.Resampling.LANCZOS) if supersample > 1 else canvas
