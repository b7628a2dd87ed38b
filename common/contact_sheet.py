"""Contact sheets: thumbnails in a grid, a caption under each, for previews in run metadata and in reports."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

CAPTION_H = 18
MISSING = (200, 0, 0)  # outline drawn where a cell's image could not be read


@dataclass(frozen=True)
class Cell:
    image: Image.Image | None  # None: unreadable, drawn as a red outline
    caption: str
    frame: tuple[int, int, int] | None = None  # an outline of this colour around the thumbnail


def contact_sheet(cells: Sequence[Cell], columns: int, thumb: int, gap: int = 6,
                  background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Cells left to right, top to bottom, each resized to thumb x thumb with its caption underneath."""
    from PIL import Image, ImageDraw, ImageFont

    columns = max(1, min(columns, len(cells)))
    rows = max(1, -(-len(cells) // columns))
    cell_w, cell_h = thumb + gap, thumb + CAPTION_H + gap
    sheet = Image.new("RGB", (columns * cell_w + gap, rows * cell_h + gap), background)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for k, cell in enumerate(cells):
        x, y = gap + (k % columns) * cell_w, gap + (k // columns) * cell_h
        if cell.image is None:
            draw.rectangle([x, y, x + thumb - 1, y + thumb - 1], outline=MISSING)
        else:
            sheet.paste(cell.image.convert("RGB").resize((thumb, thumb), Image.Resampling.LANCZOS), (x, y))
        if cell.frame:
            draw.rectangle([x, y, x + thumb - 1, y + thumb - 1], outline=cell.frame, width=4)
        draw.text((x + 2, y + thumb + 2), cell.caption, fill=(20, 20, 20), font=font)
    return sheet


def open_cell(path, caption: str) -> Cell:
    """A cell showing the image file at path, or the unreadable outline."""
    from PIL import Image

    try:
        with Image.open(path) as img:  # Pillow keeps multi-frame files open after load(): close it here
            return Cell(img.convert("RGB"), caption)
    except OSError:
        return Cell(None, caption)


def png_bytes(img: Image.Image, palette: bool = False) -> bytes:
    """PNG bytes; palette=True quantises to 256 colours, much smaller for photos (metadata is stored in every
    materialisation event)."""
    buf = io.BytesIO()
    (img.quantize(256) if palette else img).save(buf, format="PNG", optimize=True)
    return buf.getvalue()
