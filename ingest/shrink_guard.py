"""The shrink guard: a stage stops before it deletes anything when one run would take more than half of the items it
had accepted out of `images`, unless the run sets allow_shrink.

A drop that changed by accident (a folder or archive moved away, an id column of another type, a ratings file
swapped) looks to a stage like items that are now missing or bad, and the stage would delete their rows and crops.
Real drops grow and lose a few items; losing most of them in one run is more likely a mistake than news, so the
stage asks for it to be said (docs/operating.md, "Shrink guard").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterable, Mapping


class ShrinkRefused(Exception):
    """str() is one line: the stage, how many of how many accepted items, the commonest cause with an example, and
    what to do. Raised before the stage deletes or replaces any row or crop."""


def lost_items(before: Iterable[str], kept: Container[str], reasons: Mapping[str, str], gone: str) -> dict[str, str]:
    """Each previously accepted id that this run would not keep -> why: its reject reason, else `gone` (it left
    the drop)."""
    return {item: reasons.get(item, gone) for item in before if item not in kept}


def guard_shrink(stage: str, accepted_before: int, lost: Mapping[str, str], allow_shrink: bool) -> None:
    """ShrinkRefused when more than half of the accepted_before items are lost (and allow_shrink is not set)."""
    if allow_shrink or len(lost) * 2 <= accepted_before:
        return
    kinds = Counter(reason.split(":", 1)[0] for reason in lost.values())
    kind, n = kinds.most_common(1)[0]
    example = " ".join(next(r for r in lost.values() if r.split(":", 1)[0] == kind).split())
    if len(example) > 160:
        example = example[:157] + "..."
    raise ShrinkRefused(
        f"{stage}: stopped before deleting anything: this run would turn {len(lost)} of the {accepted_before} "
        f"accepted items into rejects ({n} {kind!r}, e.g. {example!r}); a moved folder or archive, or a column "
        f"of another type? Fix the drop and run again, or set allow_shrink to accept the loss")
