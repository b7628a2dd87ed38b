"""Decode, verify and square-crop one image: shared by the dataset stages and the critic.

Everything that can go wrong with a real file (truncated, empty, not an image,
decompression bomb, too small) raises RejectedImage with a human-readable
reason; callers turn that into a `rejects` row (ingest) or an error answer (critic).
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.bounds import Range, bounded, check_ranges
from common.regular_files import open_regular

if TYPE_CHECKING:
    from PIL import Image

# Pillow's default bomb limit is ~89 Mpx; the largest real AVA photos are far below 50 Mpx.
MAX_PIXELS = 64_000_000
# EXIF orientations 5..8 rotate by 90 or 270 degrees, swapping width and height.
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
# What Pillow's decoders raise on damaged files (struct/index errors come from broken headers).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)



class RejectedImage(Exception):
    """A source image that cannot become a crop; str(exc) is the reason."""


# The square every dataset stage stores and the models train on (cut to their input, 224 by default, from it).
STORED_CROP = 256


@dataclass(frozen=True)
class CropSpec:
    size: int = bounded(STORED_CROP, Range(32, 1024, "side of the stored square crop: under 32 px no model input fits, "
                                             "over 1024 px each crop is megabytes for a model that reads 224"))
    mode: str = "center"  # "center": centred square crop; "squash": resize the whole frame
    min_side: int = bounded(32, Range(1, 8192, "sources whose short side is under this are rejected: over 8192 "
                                               "px it rejects every real photo"))
    quality: int = bounded(95, Range(1, 100, "the JPEG quality scale"))

    def __post_init__(self) -> None:
        if self.mode not in ("center", "squash"):
            raise ValueError(f"crop mode must be 'center' or 'squash', got {self.mode!r}")
        check_ranges(self)


def _open_verified(data: bytes, label: str) -> Image.Image:
    from PIL import Image

    if not data:
        raise RejectedImage("empty: file has 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
            probe.verify()  # structure and checksums; the image must be reopened after this
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RejectedImage(f"decompression bomb: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise RejectedImage(f"not an image: {label} is not a format Pillow reads") from exc
    except _DECODE_ERRORS as exc:
        raise RejectedImage(f"corrupt: {exc}") from exc
    if img.width * img.height > MAX_PIXELS:
        raise RejectedImage(f"decompression bomb: {img.width}x{img.height} exceeds {MAX_PIXELS} pixels")
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clipping at 255.
        img = img.point(lambda v: v / 256).convert("L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img if img.mode == "RGB" else img.convert("RGB")


def _oriented_size(img: Image.Image) -> tuple[int, int]:
    """The size after EXIF orientation, read from the tag: exif_transpose here would decode every pixel."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError, TypeError):
        orientation = 1  # unreadable EXIF: the pixels still decode, so treat the frame as upright
    return (img.height, img.width) if orientation in _SWAPPING_ORIENTATIONS else img.size


def draft_for_crop(img: Image.Image, spec: CropSpec) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when the crop needs no more; img.size becomes that size.

    Much less work for big photos, and nothing is decoded yet. Both crop modes need the short side to stay
    >= spec.size, or the crop would be upsampled. Other formats decode at full size.
    """
    if img.format == "JPEG":
        scale = min(img.size) / spec.size
        img.draft("RGB", (max(1, int(img.width / scale)), max(1, int(img.height / scale))))


def crop_image(data: bytes, spec: CropSpec, label: str = "image") -> tuple[Image.Image, tuple[int, int]]:
    """Decode, orient, convert and crop; returns the square RGB crop and the source size."""
    from PIL import Image, ImageOps

    img = _open_verified(data, label)
    source_size = _oriented_size(img)
    if min(source_size) < spec.min_side:
        raise RejectedImage(f"too small: {source_size[0]}x{source_size[1]}, short side under {spec.min_side}px")
    try:
        draft_for_crop(img, spec)
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of the pixels when upright
        img = _to_rgb(img)
    except _DECODE_ERRORS as exc:
        raise RejectedImage(f"corrupt: {exc}") from exc
    w, h = img.size
    if spec.mode == "center":
        # One resample of the centred square box: same geometry as ImageOps.fit without its extra copy.
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        box = (left, top, left + side, top + side)
    else:
        box = (0, 0, w, h)
    out = img.resize((spec.size, spec.size), Image.Resampling.LANCZOS, box=box)
    return out, source_size


def encode_jpeg(img: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    # subsampling=0 keeps full chroma resolution (4:4:4): colour edges and swatches stay exact.
    img.save(buf, format="JPEG", quality=quality, subsampling=0, optimize=False)
    return buf.getvalue()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open_regular(path) as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
