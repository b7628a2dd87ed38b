"""Swatches: five equal stripes in theme order whose centres keep their colour through JPEG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from common.contact_sheet import CAPTION_H
from ingest.crops import encode_jpeg
from ingest.kuler import (
    COLOUR_TOLERANCE,
    encode_swatch,
    preview_grid,
    render_swatch,
    stripe_bounds,
    stripe_centres,
    stripe_error,
    to_uint8,
)

THEME = np.array([[0.9, 0.1, 0.1], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.2, 0.6, 0.95], [0.55, 0.8, 0.3]])


def test_rendered_swatch_has_five_equal_stripes_in_theme_order_with_exact_colours():
    img = render_swatch(THEME, 256)
    assert img.size == (256, 256) and img.mode == "RGB"
    arr = np.asarray(img)
    bounds = stripe_bounds(256)
    widths = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == 256 and widths.max() - widths.min() <= 1
    levels = to_uint8(THEME)
    for i in range(5):
        stripe = arr[:, bounds[i] : bounds[i + 1]]
        assert (stripe == levels[i]).all(), f"stripe {i} is not exactly {levels[i]}"


@pytest.mark.parametrize("size", [256, 128, 64, 32])
def test_encoded_swatch_keeps_every_stripe_centre_within_two_levels(size):
    rng = np.random.default_rng(size)
    for theme in [THEME, *rng.random((30, 5, 3))]:
        data, quality = encode_swatch(theme, size)
        decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=int)
        assert decoded.shape == (size, size, 3)
        centres = decoded[size // 2, stripe_centres(size)]
        assert np.abs(centres - to_uint8(theme).astype(int)).max() <= COLOUR_TOLERANCE
        assert quality in (95, 100)


def test_default_size_meets_tolerance_at_q95_without_falling_back():
    rng = np.random.default_rng(0)
    qualities = {encode_swatch(theme, 256)[1] for theme in rng.random((50, 5, 3))}
    assert qualities == {95}


def test_stripe_error_measures_drift_so_a_lossy_encoding_is_caught():
    img = render_swatch(THEME, 256)
    assert stripe_error(encode_jpeg(img, 95), THEME) <= COLOUR_TOLERANCE
    assert stripe_error(encode_jpeg(img, 5), THEME) > COLOUR_TOLERANCE


def test_encoding_is_deterministic_so_reruns_can_skip_identical_files():
    assert encode_swatch(THEME, 256) == encode_swatch(THEME, 256)


def test_preview_grid_is_a_png_with_one_tile_per_theme():
    png = preview_grid([(str(i), THEME, 5.0 + i / 10) for i in range(8)], columns=4, tile=64)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (4 + 4 * (64 + 4), 4 + 2 * (64 + CAPTION_H + 4))  # 4 px gaps
    # top-left tile's first stripe carries the theme's first colour
    assert np.abs(np.asarray(img.convert("RGB"))[20, 6].astype(int) - to_uint8(THEME[0])).max() == 0
