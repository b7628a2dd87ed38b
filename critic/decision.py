"""The filter decision, one for a folder (`aesthetic filter`, critic/filtering.py) and a corpus of shards
(`aesthetic curate` and the curation asset, critic/curate.py): which scored items pass the thresholds, and which
one of each near-duplicate group is kept.

Before any threshold, an item whose pixel hash repeats an earlier item's is an exact duplicate of the first
(critic/detectors.py pixel_hash); those never reach the thresholds or the near-duplicate search. An item whose
quality detectors fired (`detected`) misses those as it misses a threshold.

Thresholds compare `values` (the calibrated mean, or the raw mean when asked or when the model has no
calibration). Near-duplicates are ranked by `rank_by`: the calibrated mean when the model has a calibration, so the
copy kept is the one the calibrated scale puts first; ties (a calibration is flat beyond its ends) go to the
earliest item.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from critic.neardup import best_of, clusters

PairsOf = Callable[[list[int]], np.ndarray]  # near-duplicate pairs among the given items, as positions in that list


@dataclass(frozen=True)
class Thresholds:
    min_score: float | None = None  # on `values`
    min_percentile: float | None = None  # among the calibration split; needs percentiles
    top_fraction: float | None = None  # the best ceil(F * n) of the n items by `values`, ties by order


@dataclass
class Decision:
    missed: list[list[str]]  # per item, the detectors that fired, then the thresholds it misses: "min_score", ...
    rank: dict[int, int]  # item -> its rank by `values` (1 is the best) when top_fraction is set
    passing: list[int]  # items that miss no threshold, in order
    winner: dict[int, int] = field(default_factory=dict)  # every member of a duplicate group -> its group's winner
    groups: list[list[int]] = field(default_factory=list)  # duplicate groups of two or more, the winner first
    n_pairs: int = 0
    exact: dict[int, int] = field(default_factory=dict)  # an exact duplicate -> the first item with its pixels

    def kept(self) -> list[int]:
        return [i for i in self.passing if self.winner.get(i, i) == i]


def exact_duplicates(pixel_hashes: Sequence[str | None]) -> dict[int, int]:
    """Each item whose hash an earlier item has -> the first such item (None: no hash, never a duplicate)."""
    first: dict[str, int] = {}
    out: dict[int, int] = {}
    for k, h in enumerate(pixel_hashes):
        if h is not None:
            out.update({k: first[h]} if h in first else {})
            first.setdefault(h, k)
    return out


def decide(values: Sequence[float], rank_by: Sequence[float], thresholds: Thresholds,
           percentiles: Sequence[float | None] | None = None, pairs_of: PairsOf | None = None,
           detected: Sequence[Sequence[str]] | None = None,
           pixel_hashes: Sequence[str | None] | None = None) -> Decision:
    """Exact duplicates (pixel_hashes given), then the detectors that fired (detected) and the thresholds on every
    item, then (pairs_of given) the best by rank_by of each near-duplicate group among the items that pass.
    Raises ValueError for min_percentile without percentiles (a model without calibration)."""
    t, n = thresholds, len(values)
    exact = exact_duplicates(pixel_hashes) if pixel_hashes is not None else {}
    rank: dict[int, int] = {}
    if t.top_fraction is not None:
        ranked = sorted(range(n), key=lambda k: (-values[k], k))
        rank = {k: r for r, k in enumerate(ranked, 1)}
    keep = math.ceil(t.top_fraction * n) if t.top_fraction is not None else n
    missed: list[list[str]] = []
    for k in range(n):
        why = list(detected[k]) if detected is not None else []
        if t.min_score is not None and values[k] < t.min_score:
            why.append("min_score")
        if t.min_percentile is not None:
            if percentiles is None or percentiles[k] is None:
                raise ValueError("min_percentile needs a calibrated model (one trained with a validation split)")
            if percentiles[k] < t.min_percentile:
                why.append("min_percentile")
        if rank and rank[k] > keep:
            why.append("top_fraction")
        missed.append(why)
    out = Decision(missed, rank, [k for k in range(n) if not missed[k] and k not in exact], exact=exact)
    if pairs_of is not None and out.passing:
        pairs = pairs_of(out.passing)
        out.n_pairs = len(pairs)
        groups = clusters(len(out.passing), pairs)
        best = best_of(groups, [rank_by[k] for k in out.passing])
        out.winner = {out.passing[m]: out.passing[w] for m, w in best.items()}
        out.groups = [[out.passing[best[g[0]]]] + [out.passing[m] for m in g if m != best[g[0]]]
                      for g in groups if len(g) > 1]
    return out
