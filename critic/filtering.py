"""Which scored images a filter keeps: thresholds, then optionally the best of each near-duplicate group.

Three thresholds, each optional and all applied together: a score (`min_score`, on the calibrated mean by
default, `threshold_on="mean"` for the model's raw mean), a percentile among the model's calibration split
(`min_percentile`, which needs a calibrated model), and a share of the inputs being filtered
(`top_fraction`: the best ceil(F * n) of the n scored inputs, ties broken by input order). The quality
detectors named in `detectors.detect` drop what they fire on, and with `dedupe` an exact copy (the same decoded
pixels, critic/detectors.py) of an earlier input is dropped before the near-duplicate search.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from critic.scoring import Score, ScoredItem
from critic.settings import (
    DEDUPE_METHODS,
    NEAR_DUPLICATE_HAMMING,
    NEAR_DUPLICATE_SIMILARITY,
    PERCENTILE,
    THRESHOLD_FIELDS,
    TOP_FRACTION,
    DetectorSettings,
)


@dataclass(frozen=True)
class FilterSettings:
    min_score: float | None = None
    threshold_on: str = "calibrated_mean"  # the Score field min_score and top_fraction compare
    min_percentile: float | None = None
    top_fraction: float | None = None
    dedupe: bool = False
    dedupe_by: str = "both"  # "features", "phash" or "both" (duplicate_pairs below)
    similarity: float = NEAR_DUPLICATE_SIMILARITY  # cosine similarity of pooled features that makes a duplicate
    max_hamming: int = NEAR_DUPLICATE_HAMMING  # dHash bits (of 64) that may differ in a duplicate
    detectors: DetectorSettings = field(default_factory=DetectorSettings)

    def __post_init__(self) -> None:
        if self.threshold_on not in THRESHOLD_FIELDS:
            raise ValueError(f"threshold_on must be one of {', '.join(THRESHOLD_FIELDS)}, got {self.threshold_on!r}")
        if self.min_percentile is not None:
            PERCENTILE.check("min_percentile", self.min_percentile)
        if self.top_fraction is not None:
            TOP_FRACTION.check("top_fraction", self.top_fraction)
        if self.dedupe_by not in DEDUPE_METHODS:
            raise ValueError(f"dedupe_by must be one of {', '.join(DEDUPE_METHODS)}, got {self.dedupe_by!r}")

    def value(self, score: Score) -> float:
        return getattr(score, self.threshold_on)


@dataclass
class FilterResult:
    decisions: dict[str, tuple[str, str]] = field(default_factory=dict)  # source -> (kept|dropped|skipped, why)
    kept: list[ScoredItem] = field(default_factory=list)


def decide(items: Sequence[ScoredItem], settings: FilterSettings) -> FilterResult:
    """A decision with its reason for every item, in the items' order of first appearance (critic/decision.py
    decides; near-duplicates are ranked by the calibrated mean, which is the mean for a model without one)."""
    from critic import decision

    result = FilterResult({i.source: ("skipped", i.error) for i in items if i.error})
    scored = [i for i in items if i.score]
    values = [settings.value(i.score) for i in scored]
    firing = [_firing(i, settings.detectors) for i in scored]
    d = decision.decide(values, [i.score.calibrated_mean for i in scored],
                        decision.Thresholds(settings.min_score, settings.min_percentile, settings.top_fraction),
                        [i.score.percentile for i in scored],
                        (lambda rows: duplicate_pairs([scored[k] for k in rows], settings)) if settings.dedupe
                        else None, [list(f) for f in firing],
                        [i.measures and i.measures["pixel_hash"] for i in scored] if settings.dedupe else None)
    label = "" if settings.threshold_on == "calibrated_mean" else " (raw mean)"
    reasons = {"min_score": lambda k: f"score {values[k]:.2f}{label} below {settings.min_score}",
               "min_percentile": lambda k: f"percentile {scored[k].score.percentile:.1f} below "
                                           f"{settings.min_percentile}",
               "top_fraction": lambda k: f"not in the top {settings.top_fraction:g} (rank {d.rank[k]} of "
                                         f"{len(scored)})"}
    for k, missed in enumerate(d.missed):
        if missed:
            why = [firing[k][m] if m in firing[k] else reasons[m](k) for m in missed]
            result.decisions[scored[k].source] = ("dropped", "; ".join(why))
    for k, first in d.exact.items():
        result.decisions[scored[k].source] = ("dropped", f"exact duplicate of {scored[first].source}")
    for k, winner in d.winner.items():
        if k != winner:
            result.decisions[scored[k].source] = ("dropped", f"near-duplicate of {scored[winner].source}")
    result.kept = [scored[k] for k in d.kept()]
    for i in result.kept:
        result.decisions[i.source] = ("kept", f"score {settings.value(i.score):.2f}")
    return result


def _firing(item: ScoredItem, settings: DetectorSettings) -> dict[str, str]:
    """The asked-for detectors that fire on a scored item: detector -> reason (critic.detectors.fired)."""
    from critic.detectors import fired

    if item.measures is None or not settings.enabled:
        return {}
    return dict(fired(item.measures, settings.thresholds(settings.domain_of(item.source)), settings.enabled))


def duplicate_pairs(items: Sequence[ScoredItem], settings: FilterSettings):
    """Near-duplicate index pairs among scored items (critic.neardup), by settings.dedupe_by: "features" links
    two items whose pooled features' cosine is at least `similarity`, "phash" two whose dHashes differ in at most
    `max_hamming` bits, "both" two that pass both tests."""
    import numpy as np

    from critic.neardup import near_duplicate_pairs

    by = settings.dedupe_by
    feats = np.stack([i.features.float().numpy() for i in items]) if by != "phash" else None
    hashes = [i.phash for i in items] if by != "features" else None
    return near_duplicate_pairs(feats, hashes, settings.similarity, None if by == "features" else settings.max_hamming)


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
