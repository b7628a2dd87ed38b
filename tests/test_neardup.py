"""critic.neardup: the index finds what exact search finds, hashes confirm, clusters and the best of each."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from critic.neardup import (
    EXACT_BELOW,
    best_of,
    clusters,
    cross_pairs,
    keep_best,
    near_duplicate_pairs,
    pair_similarity,
    perceptual_hash,
)
from tests.helpers.critic_models import picture


def _corpus(n: int, d: int, n_dup: int, seed: int = 0) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """Gaussian vectors with n_dup planted copies at cosine ~0.94..0.99 of their source."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    src = rng.choice(n // 2, n_dup, replace=False)
    dst = n // 2 + rng.choice(n - n // 2, n_dup, replace=False)
    noise = rng.uniform(0.15, 0.35, (n_dup, 1)).astype(np.float32)
    x[dst] = x[src] + noise * rng.standard_normal((n_dup, d)).astype(np.float32)
    return x, {(int(min(a, b)), int(max(a, b))) for a, b in zip(src, dst, strict=True)}


def _exact_pairs(x: np.ndarray, threshold: float, y: np.ndarray | None = None) -> set[tuple[int, int]]:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    v = u if y is None else y / np.linalg.norm(y, axis=1, keepdims=True)
    sim = u @ v.T
    if y is None:
        sim = np.triu(sim, k=1)
    return {(int(i), int(j)) for i, j in np.argwhere(sim >= threshold)}


def test_index_search_finds_every_pair_that_exact_search_finds_and_nothing_else() -> None:
    # above EXACT_BELOW, so the IVF cells and the projection (256 -> 128 dimensions) are both in play
    x, planted = _corpus(EXACT_BELOW + 1000, 256, 150)
    exact = _exact_pairs(x, 0.9)
    assert planted <= exact
    pairs = near_duplicate_pairs(x, None, min_similarity=0.9, max_hamming=None)
    assert pairs.dtype == np.int64 and pairs.shape[1] == 2
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert pairs.tolist() == sorted(pairs.tolist())
    assert {tuple(p) for p in pairs.tolist()} == exact
    assert np.array_equal(pairs, near_duplicate_pairs(x, None, min_similarity=0.9, max_hamming=None))
    assert (pair_similarity(x, x, pairs) >= 0.9).all()


def test_hash_distance_confirms_feature_candidates() -> None:
    x, planted = _corpus(400, 64, 20, seed=1)
    hashes = np.arange(400, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # unrelated 64-bit values
    pairs_sorted = sorted(planted)
    agree, differ = pairs_sorted[:10], pairs_sorted[10:]
    for i, j in agree:
        hashes[j] = hashes[i] ^ np.uint64(0b101)  # two bits apart
    for i, j in differ:
        hashes[j] = ~hashes[i]  # 64 bits apart
    found = {tuple(p) for p in near_duplicate_pairs(x, hashes, 0.9, max_hamming=6).tolist()}
    assert found == set(agree)
    hash_only = {tuple(p) for p in near_duplicate_pairs(None, hashes, max_hamming=2).tolist()}
    assert hash_only == set(agree)


def test_cross_pairs_lists_query_items_with_a_near_duplicate_in_the_base() -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal((EXACT_BELOW + 500, 192)).astype(np.float32)
    query = rng.standard_normal((300, 192)).astype(np.float32)
    leaked = np.arange(0, 300, 7)
    sources = rng.choice(len(base), len(leaked), replace=False)
    query[leaked] = base[sources] + 0.2 * rng.standard_normal((len(leaked), 192)).astype(np.float32)
    hb = rng.integers(0, 2**63, len(base), dtype=np.uint64)
    hq = rng.integers(0, 2**63, len(query), dtype=np.uint64)
    hq[leaked] = hb[sources]
    pairs = cross_pairs(query, hq, base, hb, min_similarity=0.9, max_hamming=4)
    assert pairs.tolist() == sorted([int(q), int(b)] for q, b in zip(leaked, sources, strict=True))
    assert {tuple(p) for p in pairs.tolist()} == _exact_pairs(query, 0.9, base)
    with pytest.raises(ValueError, match="query features have 192 dimensions, base 10"):
        cross_pairs(query, hq, base[:, :10], hb)


def test_cross_pairs_with_k_none_lists_every_match_of_a_query_item_with_more_than_k(monkeypatch) -> None:
    """40 base copies of one query item (hashes 0-3 bits apart, features at cosine > 0.99): k=16 lists 16 of
    them, k=None all 40, in blocks smaller than either set, and the same pairs whatever else the base holds."""
    import critic.neardup as neardup

    rng = np.random.default_rng(9)
    base = rng.standard_normal((300, 32)).astype(np.float32)
    query = rng.standard_normal((5, 32)).astype(np.float32)
    copies = np.arange(100, 140)
    base[copies] = query[2] * rng.uniform(0.95, 1.05, (40, 1)).astype(np.float32)
    hb = rng.integers(0, 2**63, len(base), dtype=np.uint64)
    hq = rng.integers(0, 2**63, len(query), dtype=np.uint64)
    hb[copies] = hq[2] ^ rng.choice(np.array([0, 1, 0b110, 0b111], dtype=np.uint64), 40)
    want = [[2, int(j)] for j in copies]
    assert len(cross_pairs(None, hq, None, hb, max_hamming=6)) == 16
    assert cross_pairs(None, hq, None, hb, max_hamming=6, k=None).tolist() == want
    assert cross_pairs(query, hq, base, hb, 0.99, 6, k=None).tolist() == want
    assert cross_pairs(query, None, base, None, 0.99, None, k=None).tolist() == want
    monkeypatch.setattr(neardup, "SCAN_BLOCK", 7)  # several blocks on both sides, the last ones partial
    assert cross_pairs(query, hq, base, hb, 0.99, 6, k=None).tolist() == want
    keep = np.setdiff1d(np.arange(len(base)), copies[:30])  # a drop of 30 copies: the other 10 remain
    rest = cross_pairs(query, hq, base[keep], hb[keep], 0.99, 6, k=None)
    assert keep[rest[:, 1]].tolist() == copies[30:].tolist()


def test_a_cluster_larger_than_k_stays_one_cluster() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((200, 32)).astype(np.float32)
    x[100:140] = x[100] * rng.uniform(0.9, 1.1, (40, 1)).astype(np.float32)  # 40 copies, k is 8
    groups = clusters(200, near_duplicate_pairs(x, None, 0.99, None, k=8))
    big = [g for g in groups if len(g) > 1]
    assert big == [list(range(100, 140))]
    assert sorted(i for g in groups for i in g) == list(range(200))


def test_clusters_are_ordered_and_the_best_of_each_is_kept() -> None:
    pairs = np.array([[5, 6], [0, 3], [3, 4], [1, 2]])
    groups = clusters(8, pairs)
    assert groups == [[0, 3, 4], [1, 2], [5, 6], [7]]
    scores = [1.0, 2.0, 2.0, 5.0, 0.0, 3.0, 4.0, 9.0]
    assert keep_best(groups, scores) == [1, 3, 6, 7]
    assert best_of(groups, scores) == {0: 3, 3: 3, 4: 3, 1: 1, 2: 1, 5: 6, 6: 6}
    assert clusters(0, np.zeros((0, 2))) == []


def test_perceptual_hash_is_imagehash_dhash_and_survives_reencoding() -> None:
    img = picture(21, 256)
    h = perceptual_hash(img)
    assert h == int(str(imagehash.dhash(img)), 16) and 0 <= h < 2**64
    buf = io.BytesIO()
    img.resize((160, 160), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=50)
    copy = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").resize((256, 256))
    assert (perceptual_hash(copy) ^ h).bit_count() <= 6
    assert (perceptual_hash(picture(22, 256)) ^ h).bit_count() > 16
