"""The lines of a text list in a raw drop (AVA.txt, tags.txt, challenges.txt, the .jpgl split lists), decoded by
the file's byte-order mark.

Text lists pass through many editors: a BOM may lead the file, and Windows tools save "Unicode" as UTF-16. The
BOM decides the encoding (UTF-8, UTF-16 LE or BE); without one the file is UTF-8. Each line is decoded on its
own, so a line in another encoding (a Latin-1 name in a UTF-8 file) is reported with its number and its bytes
while the other lines are read.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


@dataclass(frozen=True)
class TextLine:
    number: int  # 1-based
    raw: bytes  # the line's bytes as in the file, without its line break
    text: str | None  # decoded, without a trailing '\r'; None when the bytes do not decode
    encoding: str

    def shown(self, limit: int = 60) -> str:
        """The raw bytes as a Python literal, cut at `limit` bytes: what a reject says was found."""
        return repr(self.raw[:limit]) + ("..." if len(self.raw) > limit else "")

    def undecodable(self, name: str) -> str:
        return f"undecodable: {name} line {self.number} is not {self.encoding.upper()} text: {self.shown()}"


def encoding_of(data: bytes) -> tuple[str, int]:
    """(codec, BOM length) of a text file's bytes: by its BOM, UTF-8 without one."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return codec, len(bom)
    return "utf-8", 0


def split_lines(body: bytes, newline: bytes) -> list[bytes]:
    """The lines of encoded text (BOM removed) without their breaks; `newline` is '\\n' in the file's encoding."""
    if len(newline) == 1:
        lines = body.split(newline)
    else:  # UTF-16: a line break is a whole code unit, so only a match at an even offset counts
        lines, start, pos = [], 0, 0
        while (pos := body.find(newline, pos)) >= 0:
            if pos % 2:
                pos += 1
                continue
            lines.append(body[start:pos])
            start = pos = pos + len(newline)
        lines.append(body[start:])
    if lines and not lines[-1]:
        lines.pop()  # the break that ends the last line starts no new one
    return lines


def text_lines(data: bytes) -> Iterator[TextLine]:
    """Every line of a text file's bytes, decoded on its own (text None where it does not decode)."""
    codec, skip = encoding_of(data)
    for number, raw in enumerate(split_lines(data[skip:], "\n".encode(codec)), start=1):
        try:
            text: str | None = raw.decode(codec)
        except UnicodeDecodeError:
            text = None
        else:
            text = text.removesuffix("\r")
        yield TextLine(number, raw, text, codec)
