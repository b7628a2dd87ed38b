"""Near-duplicate groups: cosine similarity of the critic's pooled features, a perceptual hash, or both.

Pairs that match link their images; groups are the connected components
(union-find), and `keep_best` keeps the highest-scoring image of each group.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

METHODS = ("features", "phash", "both")


def dhash(img: Image.Image, size: int = 8) -> int:
    """64-bit difference hash: sign of horizontal gradients of a (size+1)x size greyscale thumbnail.

    It survives resizing and recompression, and changes with the picture's layout.
    """
    small = np.asarray(img.convert("L").resize((size + 1, size), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def cosine_matrix(features: torch.Tensor) -> torch.Tensor:
    f = torch.nn.functional.normalize(features.float(), dim=1)
    return f @ f.T


def _components(n: int, pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values())


def duplicate_groups(
    n: int,
    features: torch.Tensor | None = None,
    hashes: Sequence[int] | None = None,
    method: str = "features",
    min_similarity: float = 0.95,
    max_hamming: int = 6,
) -> list[list[int]]:
    """Groups of indices 0..n-1 (singletons included) whose members are near-duplicates.

    features: a pair matches when cosine similarity >= min_similarity; phash: when the
    dHash Hamming distance <= max_hamming; both: when both agree (fewest false matches).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    use_feat, use_hash = method in ("features", "both"), method in ("phash", "both")
    if use_feat and (features is None or len(features) != n):
        raise ValueError("features method needs one feature row per image")
    if use_hash and (hashes is None or len(hashes) != n):
        raise ValueError("phash method needs one hash per image")
    match = np.ones((n, n), dtype=bool)
    if use_feat:
        match &= cosine_matrix(features).numpy() >= min_similarity
    if use_hash:
        h = np.array(hashes, dtype=np.uint64)
        match &= np.bitwise_count(h[:, None] ^ h[None, :]) <= max_hamming
    pairs = [(int(i), int(j)) for i, j in np.argwhere(np.triu(match, k=1))]
    return _components(n, pairs)


def keep_best(groups: Sequence[Sequence[int]], scores: Sequence[float]) -> list[int]:
    """The index of the highest score in each group (the earliest on ties), in ascending order."""
    return sorted(max(g, key=lambda i: (scores[i], -i)) for g in groups)
