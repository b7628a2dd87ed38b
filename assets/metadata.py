"""Metadata values shared by the assets: images shown inline in the Dagster UI."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import dagster as dg

_MIME = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg"}


def _mime(data: bytes) -> str | None:
    return next((mime for magic, mime in _MIME.items() if data.startswith(magic)), None)


def image_uri(data: bytes) -> str:
    """A PNG or JPEG as a data URI, so the UI shows it without a file server."""
    mime = _mime(data)
    if mime is None:
        raise ValueError("not a PNG or JPEG image")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def markdown_image(image: bytes | Path | None, alt: str, max_width: int = 1024,
                   empty: str = "no image") -> dg.MetadataValue:
    """A Markdown metadata value showing a PNG or JPEG (bytes or a file) inline, or `empty` when there is none.

    An image wider than max_width, or in another format, is sent as a JPEG of at most that width: metadata is
    stored in every materialisation event.
    """
    from PIL import Image

    if image is None or image == b"":
        return dg.MetadataValue.md(empty)
    data = image.read_bytes() if isinstance(image, Path) else image
    # Closed here: Pillow keeps a multi-frame file's data open after decoding until the image is closed.
    with Image.open(io.BytesIO(data)) as img:
        if img.width > max_width or _mime(data) is None:
            width = min(img.width, max_width)
            small = img.convert("RGB").resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            small.save(buf, format="JPEG", quality=85)
            data = buf.getvalue()
    return dg.MetadataValue.md(f"![{alt}]({image_uri(data)})")


def inline_images(markdown: str, folder: Path) -> str:
    """A Markdown report with its links to PNG files in folder replaced by the images themselves."""
    def embed(match: re.Match) -> str:
        path = folder / match.group(2)
        return f"![{match.group(1)}]({image_uri(path.read_bytes())})" if path.is_file() else match.group(0)

    return re.sub(r"!\[([^\]]*)\]\(([^)/:]+\.png)\)", embed, markdown)
