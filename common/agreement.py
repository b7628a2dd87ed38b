"""How often a person agreed with the critic: the figures the studio page shows per session and the
`sac_snapshots` asset reports for the studio picks it ingested, computed in one place."""

from __future__ import annotations

from collections.abc import Sequence


def agreement(pick_ranks: Sequence[int]) -> dict:
    """From the rank the critic gave each of the person's picks (1: the critic's own choice): picks, agreed,
    agreement (agreed / picks, None without picks), the ranks in order, and their mean and median."""
    ranks = [int(r) for r in pick_ranks]
    n = len(ranks)
    ordered = sorted(ranks)
    median = None if not n else (ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2)
    agreed = sum(r == 1 for r in ranks)
    return {"picks": n, "agreed": agreed, "agreement": agreed / n if n else None, "pick_ranks": ranks,
            "mean_pick_rank": sum(ranks) / n if n else None, "median_pick_rank": median}
