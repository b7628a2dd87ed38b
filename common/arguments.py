"""Argument types for the command lines (`aesthetic`, `python -m nima_train.train`, `python -m nima_train.evaluate`).

Each type rejects a bad value while the arguments are parsed, before any work starts, with a message that names
the value; argparse puts the option's name in front. `Parser` prints that message as one line. Nothing here
imports torch: `aesthetic --help` stays fast.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

# Seeds go to numpy, which takes 0..2**32-1; training adds 1000 per epoch and the rank to it.
MAX_SEED = 2**31 - 1


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2), pointing at --help for the usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        one_line = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {one_line} (see {self.prog} --help)\n")


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bounds(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None and not (lo_open or hi_open):
        return f"from {_num(lo)} to {_num(hi)}"
    ends = [f"{'above' if lo_open else 'at least'} {_num(lo)}"] if lo is not None else []
    ends += [f"{'below' if hi_open else 'at most'} {_num(hi)}"] if hi is not None else []
    return " and ".join(ends)


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer within [lo, hi] (either end open when None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: expected a whole number {_bounds(lo, hi)}")
        return value

    parse.__name__ = "int"
    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)
seed_int = int_range(0, MAX_SEED)


def finite_float(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False) -> Callable[[str], float]:
    """A finite number (never NaN or infinity) within lo..hi; lo_open/hi_open exclude that end."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        low_bad = lo is not None and (value <= lo if lo_open else value < lo)
        high_bad = hi is not None and (value >= hi if hi_open else value > hi)
        if low_bad or high_bad:
            expected = _bounds(lo, hi, lo_open, hi_open)
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: expected a number {expected}")
        return value

    parse.__name__ = "float"
    return parse


unit_float = finite_float(0.0, 1.0)
positive_float = finite_float(0.0, lo_open=True)
non_negative_float = finite_float(0.0)


def folder(text: str) -> str:
    """A folder to write into: an existing folder, or a path that can become one (no file in the way)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path is not a folder")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is an existing file, not a folder")
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} cannot be a folder: {existing} is a file")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r} cannot be written: {existing} is not writable")
    return text


def existing_file(text: str) -> str:
    """A file that exists (not a folder)."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} does not exist")
    return text


def non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value is not allowed")
    return text
