"""Which scored images a filter keeps: a score threshold, then optionally the best of each near-duplicate group."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from critic.scoring import ScoredItem


@dataclass(frozen=True)
class FilterSettings:
    min_score: float
    dedupe: bool = False
    dedupe_by: str = "both"  # "features", "phash" or "both" (critic.dedupe.duplicate_groups)
    similarity: float = 0.95  # cosine similarity of pooled features that makes a duplicate
    max_hamming: int = 6  # dHash bits (of 64) that may differ in a duplicate


@dataclass
class FilterResult:
    decisions: dict[str, tuple[str, str]] = field(default_factory=dict)  # source -> (kept|dropped|skipped, why)
    kept: list[ScoredItem] = field(default_factory=list)


def decide(items: Sequence[ScoredItem], settings: FilterSettings) -> FilterResult:
    """A decision with its reason for every item, in the items' order of first appearance."""
    import torch

    from critic.dedupe import duplicate_groups, keep_best

    result = FilterResult({i.source: ("skipped", i.error) for i in items if i.error})
    passing = [i for i in items if i.score and i.score.mean >= settings.min_score]
    for i in items:
        if i.score and i.score.mean < settings.min_score:
            result.decisions[i.source] = ("dropped", f"score {i.score.mean:.2f} below {settings.min_score}")
    kept = passing
    if settings.dedupe and passing:
        groups = duplicate_groups(
            len(passing), torch.stack([i.features for i in passing]), [i.phash for i in passing],
            settings.dedupe_by, settings.similarity, settings.max_hamming)
        best = keep_best(groups, [i.score.mean for i in passing])
        for group in groups:
            winner = next(g for g in group if g in best)
            for g in group:
                if g != winner:
                    result.decisions[passing[g].source] = ("dropped", f"near-duplicate of {passing[winner].source}")
        kept = [passing[k] for k in best]
    for i in kept:
        result.decisions[i.source] = ("kept", f"score {i.score.mean:.2f}")
    result.kept = kept
    return result


def copy_kept(kept: Sequence[ScoredItem], dest: Path) -> dict[str, str]:
    """Copy the kept files into dest, renaming on a name clash; returns source -> copy."""
    dest.mkdir(parents=True, exist_ok=True)
    copied: dict[str, str] = {}
    for i in kept:
        src = Path(i.source)
        target, n = dest / src.name, 1
        while target.exists() or str(target) in copied.values():
            target, n = dest / f"{src.stem}-{n}{src.suffix}", n + 1
        shutil.copy2(src, target)
        copied[i.source] = str(target)
    return copied
