"""Design genomes: every outline renders, anti-aliased; mutation is seeded, bounded and keeps the shape."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from critic.designs import (
    FLOAT_GENES,
    SHAPES,
    Genome,
    canonical_shape,
    mutate,
    random_genome,
    render,
)


@pytest.mark.parametrize("shape", SHAPES)
def test_each_outline_renders_inside_the_frame_with_antialiased_edges(shape: str) -> None:
    g = random_genome(shape, random.Random(3))
    img = render(g, size=128)
    assert img.size == (128, 128) and img.mode == "RGB"
    px = np.asarray(img).reshape(-1, 3)
    background = np.all(px == g.background, axis=1).mean()
    assert 0.2 < background < 0.95  # the outline covers part of the canvas, and not all of it
    # Supersampled then downscaled: edges blend, so far more colours than the genome's five.
    assert len({tuple(p) for p in px}) > 100
    aliased = render(g, size=128, supersample=1)
    assert len({tuple(p) for p in np.asarray(aliased).reshape(-1, 3)}) < len({tuple(p) for p in px})


def test_render_is_deterministic_and_the_shapes_differ() -> None:
    rng = random.Random(0)
    genomes = [random_genome(s, rng) for s in SHAPES]
    images = [np.asarray(render(g, 96)) for g in genomes]
    assert all(np.array_equal(a, np.asarray(render(g, 96))) for a, g in zip(images, genomes, strict=True))
    masks = [np.any(im != np.array(g.background, np.uint8), axis=2) for im, g in zip(images, genomes, strict=True)]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert (masks[i] != masks[j]).mean() > 0.05, (SHAPES[i], SHAPES[j])


def test_mutation_is_seeded_bounded_and_keeps_the_shape() -> None:
    def lineage(seed: int) -> list[Genome]:
        rng = random.Random(seed)
        out = [random_genome("star", rng)]
        for _ in range(30):
            out.append(mutate(out[-1], rng, rate=0.5, strength=0.5))
        return out

    a, b, c = lineage(1), lineage(1), lineage(2)
    assert a == b and a != c
    assert len(set(a)) > 25  # strong mutation changes nearly every generation
    for g in a:
        assert g.shape == "star"
        assert all(0.0 <= v <= 1.0 for v in g.outline)
        for name, (lo, hi) in FLOAT_GENES.items():
            assert lo <= getattr(g, name) <= hi, name
        assert 1 <= g.pattern_wheel < g.pattern_ring
        assert all(0 <= c <= 255 for col in (g.fill_a, g.fill_b, g.background) for c in col)


def test_genome_round_trips_through_json() -> None:
    g = mutate(random_genome("landscape", random.Random(9)), random.Random(10))
    assert Genome.from_dict(json.loads(json.dumps(g.as_dict()))) == g


def test_shape_names() -> None:
    assert canonical_shape("trapezoid") == "kite"
    with pytest.raises(ValueError, match="unknown shape 'circle'"):
        random_genome("circle", random.Random(0))
