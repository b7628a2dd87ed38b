"""A numeric setting's range, written once beside the setting and read wherever a value for it arrives.

A settings dataclass declares the field as `bounded(default, Range(lo, hi, why), help)` (a text field as
`setting(default, help)`) and calls `check_ranges(self)` in its __post_init__. The Dagster config generated from
the settings (assets/settings_config.py) gives each field pydantic's ge/le (gt/lt) through `ranged_field`, so the
run config is refused before the step does any work. The command-line flag is `flag(Settings, "name")`: argparse
refuses the value while parsing, and the help is the field's. A range with no settings twin (a Dagster-only knob)
is declared on its config with `ranged_field(default, Range(...))`. docs/contract.md lists every range with its
reason; tests/test_config_bounds.py checks that table against the code.

Nothing here imports torch or Dagster; pydantic only when a config field is built.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from common.arguments import finite_float, int_range

_KEY = "range"
RANGE = _KEY  # a settings field's metadata key for its Range
# In a config field's json_schema_extra: the reason a range has, for docs/contract.md.
WHY = "range_reason"
# In a settings field's metadata: what the setting is (the flag's help, the config field's description).
HELP = "help"


def _num(value: float) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if value >= 2**16 and value & (value - 1) == 0:  # byte counts: 2**30 reads better than 1_073_741_824
        return f"2**{value.bit_length() - 1}"
    if value >= 2**16 and value & (value + 1) == 0:  # and 2**31-1 better than 2_147_483_647
        return f"2**{value.bit_length()}-1"
    return f"{value:_}" if value >= 10_000 else str(value)


@dataclass(frozen=True)
class Range:
    """lo..hi (either end excluded with lo_open / hi_open), and why a value outside it is a mistake. Whole
    numbers when both ends are ints."""

    lo: int | float
    hi: int | float
    why: str
    lo_open: bool = False
    hi_open: bool = False

    @property
    def whole(self) -> bool:
        return isinstance(self.lo, int) and isinstance(self.hi, int)

    def __str__(self) -> str:
        if not (self.lo_open or self.hi_open):
            return f"{_num(self.lo)}..{_num(self.hi)}"
        return f"{'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"

    def holds(self, value: float) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return False
        if self.whole and not float(value).is_integer():
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def check(self, name: str, value: float) -> None:
        """ValueError naming the setting, the value and the range when value is outside it."""
        if not self.holds(value):
            raise ValueError(f"{name} must be {'a whole number ' if self.whole else ''}within {self}, got {value!r}"
                             f" ({self.why})")

    def flag(self) -> Callable[[str], int | float]:
        """The argparse type that refuses a value outside the range while parsing."""
        if self.whole:
            return int_range(int(self.lo), int(self.hi))
        return finite_float(self.lo, self.hi, lo_open=self.lo_open, hi_open=self.hi_open)

    def pydantic(self) -> dict[str, float]:
        return {"gt" if self.lo_open else "ge": self.lo, "lt" if self.hi_open else "le": self.hi}


def bounded(default: Any, rng: Range, help: str = "") -> Any:  # noqa: A002 (argparse's word)
    """A dataclass field with this range (None as a value means "not set" and is not checked), and what it is."""
    return dataclasses.field(default=default, metadata={_KEY: rng, HELP: help})


def setting(default: Any, help: str) -> Any:  # noqa: A002 (argparse's word)
    """A dataclass field with no range, and what it is (the config field's description, the flag's help)."""
    return dataclasses.field(default=default, metadata={HELP: help})


def bounded_like(cls: type, name: str, help: str) -> Any:  # noqa: A002
    """A field with the default and range of cls.name: a flat setting that feeds that part of a nested object
    (AvaSettings.crop_size is CropSpec.size), so its range stays written once, on the part."""
    found = _field(cls, name)
    return bounded(found.default, found.metadata[_KEY], help)


def _field(cls: type, name: str) -> dataclasses.Field:
    found = {f.name: f for f in dataclasses.fields(cls)}.get(name)
    if found is None or _KEY not in found.metadata:
        raise KeyError(f"{cls.__name__}.{name} declares no range")
    return found


def range_of(cls: type, name: str) -> Range:
    return _field(cls, name).metadata[_KEY]


def check_ranges(settings: Any) -> None:
    """ValueError for the first bounded field of a settings dataclass whose value is outside its range."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if _KEY in f.metadata and value is not None:
            f.metadata[_KEY].check(f.name, value)


def settings_from(cls: type, values: Mapping[str, Any]) -> Any:
    """The settings dataclass from a mapping holding (some of) its fields: an argparse namespace's vars, a config's
    dump; other keys are ignored, missing fields keep their defaults."""
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def help_of(cls: type, name: str) -> str:
    """What the setting cls.name is, as its field's metadata says (the config field's description)."""
    return {f.name: f.metadata.get(HELP, "") for f in dataclasses.fields(cls)}[name]


def flag(cls: type, name: str, note: str = "") -> dict[str, Any]:
    """add_argument's type, default and help for the flag that sets cls.name: `p.add_argument("--x", **flag(S,
    "x"))`; the help is the setting's own (the config field's description) with its range, and the note."""
    found = _field(cls, name)
    rng = found.metadata[_KEY]
    text = "; ".join(t for t in (found.metadata.get(HELP, ""), str(rng), note) if t)
    return {"type": rng.flag(), "default": found.default, "help": text}


def ranged_field(default: Any, rng: Range, description: str = "") -> Any:
    """A Dagster (pydantic) config field holding values within rng; its description ends with the range."""
    from pydantic import Field

    text = f"{description}; {rng}: {rng.why}" if description else f"{rng}: {rng.why}"
    return Field(default, description=text, json_schema_extra={WHY: rng.why}, **rng.pydantic())
