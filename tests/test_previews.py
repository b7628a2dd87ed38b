"""The contact sheet and the inline Markdown images every stage's metadata uses."""

from __future__ import annotations

import base64
import io

from PIL import Image

from assets.metadata import image_uri, inline_images, markdown_image
from common.contact_sheet import CAPTION_H, MISSING, Cell, contact_sheet, open_cell, png_bytes


def _png(colour: str, size: tuple[int, int] = (50, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_contact_sheet_lays_out_cells_in_rows_with_captions_and_marks_unreadable_ones(tmp_path):
    (tmp_path / "red.png").write_bytes(_png("red"))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    cells = [open_cell(tmp_path / "red.png", "red"), open_cell(tmp_path / "broken.png", "broken"),
             Cell(Image.new("RGB", (10, 10), "blue"), "framed", frame=(0, 170, 0))]
    sheet = contact_sheet(cells, columns=2, thumb=32, gap=4)
    assert sheet.size == (4 + 2 * 36, 4 + 2 * (32 + CAPTION_H + 4))
    assert sheet.getpixel((4 + 16, 4 + 16)) == (255, 0, 0)  # the red thumbnail
    assert sheet.getpixel((40, 4)) == MISSING  # the outline of the unreadable one
    assert sheet.getpixel((4, 4 + 32 + CAPTION_H + 4)) == (0, 170, 0)  # the frame, second row
    assert cells[1].image is None


def test_png_bytes_with_a_palette_is_smaller_for_photos():
    noise = Image.effect_noise((200, 200), 60).convert("RGB")
    assert len(png_bytes(noise, palette=True)) < len(png_bytes(noise))


def test_markdown_image_embeds_small_images_as_they_are_and_shrinks_wide_ones(tmp_path):
    small = _png("green")
    assert markdown_image(small, "g").value == f"![g](data:image/png;base64,{base64.b64encode(small).decode()})"
    (tmp_path / "wide.png").write_bytes(_png("green", (3000, 100)))
    wide = markdown_image(tmp_path / "wide.png", "wide", max_width=600).value
    data = base64.b64decode(wide.split("base64,", 1)[1].rstrip(")"))
    with Image.open(io.BytesIO(data)) as img:
        assert (img.format, img.size) == ("JPEG", (600, 20))
    assert markdown_image(b"", "none", empty="nothing yet").value == "nothing yet"


def test_inline_images_replaces_links_to_pngs_in_the_folder_only(tmp_path):
    (tmp_path / "plot.png").write_bytes(_png("blue"))
    text = "# report\n![scatter](plot.png)\n![gone](missing.png)\n![web](https://host/x.png)\n"
    out = inline_images(text, tmp_path)
    assert f"![scatter]({image_uri(_png('blue'))})" in out
    assert "![gone](missing.png)" in out and "![web](https://host/x.png)" in out
