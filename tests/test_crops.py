"""ingest/crops.py: geometry, orientation, colour modes, and every kind of bad file becoming a reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from ingest.crops import (
    CropJob,
    CropResult,
    CropSpec,
    RejectedImage,
    crop_image,
    crop_many,
    run_crop_job,
    sha256_file,
)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _banded(width: int = 640, height: int = 480) -> Image.Image:
    """Red margins outside the centred square, a blue/yellow split inside it (left half blue)."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:] = (255, 0, 0)
    side = min(width, height)
    left = (width - side) // 2
    arr[:, left : left + side // 2] = (0, 0, 255)
    arr[:, left + side // 2 : left + side] = (255, 255, 0)
    return Image.fromarray(arr, "RGB")


def _mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_640x480_source_gives_centre_480_square_scaled_to_256(fmt):
    src = _banded()
    out, size = crop_image(_encode(src, fmt, **({"quality": 95} if fmt == "JPEG" else {})), CropSpec())
    assert size == (640, 480) and out.size == (256, 256) and out.mode == "RGB"
    expected = src.crop((80, 0, 560, 480)).resize((256, 256), Image.Resampling.LANCZOS)
    assert _mean_abs_diff(out, expected) < 3.0
    arr = np.asarray(out, np.int16)
    # No red margin survives at the edges; left edge is blue, right edge yellow.
    assert arr[:, 0, 2].mean() > 200 and arr[:, 0, 0].mean() < 40
    assert arr[:, -1, 0].mean() > 200 and arr[:, -1, 1].mean() > 200


def test_big_jpeg_decoded_at_reduced_scale_matches_full_decode():
    src = _banded(2048, 1536)
    out, size = crop_image(_encode(src, "JPEG", quality=90), CropSpec())
    assert size == (2048, 1536)
    expected = src.crop((256, 0, 1792, 1536)).resize((256, 256), Image.Resampling.LANCZOS)
    assert _mean_abs_diff(out, expected) < 4.0


def test_squash_mode_keeps_the_whole_frame():
    out, _ = crop_image(_encode(_banded(), "PNG"), CropSpec(mode="squash", size=128))
    arr = np.asarray(out, np.int16)
    assert out.size == (128, 128)
    assert arr[:, 2, 0].mean() > 200 and arr[:, 2, 2].mean() < 40  # the red margin is still there


def test_exif_orientation_is_applied_before_cropping():
    arr = np.full((480, 640, 3), 128, np.uint8)
    arr[:60, 80:140] = (255, 0, 0)  # red block near the stored top-left of the centre square
    img = Image.fromarray(arr, "RGB")
    exif = img.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    data = _encode(img, "JPEG", quality=95, exif=exif.tobytes())
    out, size = crop_image(data, CropSpec())
    assert size == (480, 640)  # width and height as displayed
    red = np.asarray(out, np.int16)
    red_mask = (red[..., 0] > 200) & (red[..., 1] < 80)
    ys, xs = np.nonzero(red_mask)
    # After a clockwise turn the block that was top-left sits top-right.
    assert len(xs) > 50 and xs.mean() > 200 and ys.mean() < 60


@pytest.mark.parametrize(
    "make",
    [
        lambda: _encode(Image.new("L", (300, 200), 90), "PNG"),
        lambda: _encode(Image.new("RGB", (300, 200), (1, 2, 3)).convert("P"), "PNG"),
        lambda: _encode(Image.new("RGBA", (300, 200), (200, 10, 10, 0)), "PNG"),
        lambda: _encode(Image.new("LA", (300, 200), (50, 255)), "PNG"),
        lambda: _encode(Image.new("CMYK", (300, 200), (0, 255, 255, 0)), "JPEG"),
        lambda: _encode(Image.fromarray(np.full((200, 300), 40000, np.uint16)), "PNG"),
        lambda: _encode(Image.new("1", (300, 200), 1), "PNG"),
    ],
    ids=["L", "P", "RGBA", "LA", "CMYK", "I16", "1bit"],
)
def test_any_colour_mode_becomes_rgb(make):
    out, _ = crop_image(make(), CropSpec())
    assert out.mode == "RGB" and out.size == (256, 256)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    data = _encode(Image.fromarray(np.full((200, 300), 32768, np.uint16)), "PNG")
    out, _ = crop_image(data, CropSpec())
    assert 120 <= np.asarray(out)[..., 0].mean() <= 136  # half of 65535 -> half of 255


def test_transparent_pixels_go_on_white():
    out, _ = crop_image(_encode(Image.new("RGBA", (300, 200), (200, 10, 10, 0)), "PNG"), CropSpec())
    assert np.asarray(out).min() >= 250


def _reason(data: bytes, spec: CropSpec | None = None) -> str:
    with pytest.raises(RejectedImage) as info:
        crop_image(data, spec or CropSpec())
    return str(info.value)


def test_bad_files_are_rejected_with_a_reason_kind():
    jpeg = _encode(_banded(), "JPEG", quality=90)
    assert _reason(jpeg[: len(jpeg) // 2]).startswith("corrupt:")
    assert _reason(b"").startswith("empty:")
    assert _reason(b"<html>404 Not Found</html>").startswith("not an image:")
    assert _reason(_encode(Image.new("RGB", (40, 20)), "PNG")).startswith("too small:")
    # the threshold is configurable
    crop_image(_encode(Image.new("RGB", (40, 20)), "PNG"), CropSpec(min_side=16))
    assert _reason(_encode(Image.new("RGB", (300, 200)), "PNG"), CropSpec(min_side=201)).startswith("too small:")


def test_decompression_bomb_is_rejected_without_decoding():
    bomb = _encode(Image.new("1", (8200, 8000), 0), "PNG")  # 65.6 Mpx, a few kB on disk
    assert _reason(bomb).startswith("decompression bomb:")


def test_crop_job_writes_jpeg_q95_without_chroma_subsampling(tmp_path: Path):
    src = tmp_path / "src.jpg"
    src.write_bytes(_encode(_banded(), "JPEG", quality=90))
    result = run_crop_job(CropJob("7", str(src), str(tmp_path / "out" / "7.jpg")), CropSpec())
    assert isinstance(result, CropResult)
    assert (result.width, result.height, result.source_width, result.source_height) == (256, 256, 640, 480)
    assert result.sha256 == sha256_file(result.path)
    with Image.open(result.path) as img:
        assert img.format == "JPEG" and JpegImagePlugin.get_sampling(img) == 0
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary left


def test_crop_job_missing_file_is_a_rejection_not_an_exception(tmp_path: Path):
    outcome = run_crop_job(CropJob("8", str(tmp_path / "nope.jpg"), str(tmp_path / "8.jpg")), CropSpec())
    assert isinstance(outcome, RejectedImage) and str(outcome).startswith("missing:")


def test_crop_many_over_processes_keeps_order_and_matches_inline(tmp_path: Path):
    jobs = []
    for k in range(12):
        data = b"junk" if k == 5 else _encode(_banded(320 + 16 * k, 240), "JPEG", quality=90)
        jobs.append(CropJob(str(k), data, str(tmp_path / "pool" / f"{k}.jpg")))
    pooled = list(crop_many(jobs, CropSpec(size=64), workers=2, chunk_size=3))
    inline_jobs = [CropJob(j.item_id, j.source, str(tmp_path / "inline" / f"{j.item_id}.jpg")) for j in jobs]
    inline = list(crop_many(inline_jobs, CropSpec(size=64), workers=1))
    assert [j.item_id for j, _ in pooled] == [str(k) for k in range(12)]
    assert isinstance(pooled[5][1], RejectedImage)
    for (_, a), (_, b) in zip(pooled, inline, strict=True):
        assert type(a) is type(b)
        if isinstance(a, CropResult):
            assert a.sha256 == b.sha256
