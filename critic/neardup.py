"""Near-duplicates at corpus scale: an approximate nearest-neighbour index, confirmed pair by pair.

No n x n matrix: memory grows with n (n projected vectors, kept and in the index; at most n x k candidates).
Inputs: features (n, d) float (float16 is fine; never copied whole), phashes (n,) uint64 or ints.

    pairs = near_duplicate_pairs(features, phashes, min_similarity=0.95, max_hamming=6)   # (m, 2), i < j
    groups = clusters(len(features), pairs)            # every index once, singletons included
    kept = keep_best(groups, scores)                   # the best of each group
    leaks = cross_pairs(test_feats, test_hashes, train_feats, train_hashes, 0.95, 6)   # (m, 2): (test, train)

How a pair is found (docs/curation.md has the measurements behind each choice):
1. Features are L2-normalised, so inner product = cosine similarity.
2. When there are at least 2,000 of them with more than `dim` dimensions, they are projected onto the top `dim`
   principal axes of their uncentred second moment (fitted on a seeded sample of at most 50,000 rows; the
   projection that best keeps inner products) and normalised again.
3. faiss `IndexIVFFlat` (inner product) over the projected vectors: k-means cells trained with a fixed seed on a
   seeded sample, every vector in its cell; each query scans its `nprobe` nearest cells for its `k` nearest
   neighbours. Inputs of fewer than 2,000 vectors are searched exactly (faiss `IndexFlatIP`). faiss (not usearch's
   HNSW) because the IVF build is deterministic under any thread count (an HNSW graph built by several threads
   depends on their timing) and builds in seconds.
4. A candidate whose cosine in the index is at least min_similarity - `margin` (0.1) is confirmed by
   perceptual-hash distance (Hamming <= max_hamming, when hashes and max_hamming are given; tested first, it is
   cheap) and on the full, unprojected features (cosine >= min_similarity). The result is therefore exact for
   the pairs found; the index only decides which pairs are looked at. `nprobe` (at least 64 cells, and at
   least 4% of them) trades time for recall (benchmarks/bench_neardup.py).
5. Pairs are (i, j) with i < j, unique, sorted: the same input gives the same array.

k=None replaces steps 2-4 by an exact scan: every query x base pair is compared, block by block (SCAN_BLOCK rows
of each side at a time), so every pair within the limits is listed, however many one item has, and the verdict
on a pair depends on those two items alone, not on the rest of either set. critic/leakage.py needs exactly that:
the shards stage drops and the blocking check tests with it, on sets that differ by what was dropped.

`perceptual_hash` is imagehash's difference hash (dHash, 64 bits: the sign of horizontal gradients of a 9 x 8
greyscale thumbnail). With features=None the search runs on the hashes alone (faiss `IndexBinaryFlat`: exact,
O(n) memory, O(n^2) time; meant for folders, not corpora).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from critic.settings import NEAR_DUPLICATE_HAMMING as HAMMING
from critic.settings import NEAR_DUPLICATE_SIMILARITY as SIMILAR

HASH_BITS = 64
EXACT_BELOW = 2000  # smaller inputs are searched exactly (IndexFlatIP), larger ones through IVF cells
PCA_SAMPLE = 50_000
QUERY_CHUNK = 4096
NPROBE = 64  # cells each query scans at least (docs/curation.md: recall of planted copies by nprobe)
# ...and at least this share of the cells: there are 4 sqrt(n) of them, so a fixed nprobe scans an ever smaller
# share as n grows (64 of 4,000 cells at 1M found 0.985 of the planted copies, 64 of 1,789 at 200k 0.995).
PROBE_SHARE = 0.04
MARGIN = 0.1  # a candidate's projected cosine may fall this far below min_similarity and still be confirmed
SCAN_BLOCK = 2048  # rows of each side the exact scan (k=None) compares at once: 2048 x 2048 distances in memory


def perceptual_hash(img: Image.Image) -> int:
    """64-bit difference hash (imagehash.dhash, 8 x 8) of an image, as an int (first bit most significant)."""
    import imagehash

    return int(str(imagehash.dhash(img, hash_size=8)), 16)


def hamming(a: int, b: int) -> int:
    return (int(a) ^ int(b)).bit_count()


def as_hash_array(hashes: Sequence[int] | np.ndarray) -> np.ndarray:
    """Hashes as a (n,) uint64 array (Python ints above 2**63 included)."""
    return np.asarray([int(h) for h in hashes] if not isinstance(hashes, np.ndarray) else hashes, dtype=np.uint64)


def _norms(features: np.ndarray) -> np.ndarray:
    norms = np.empty(len(features), dtype=np.float32)
    for s in range(0, len(features), QUERY_CHUNK):
        norms[s : s + QUERY_CHUNK] = np.linalg.norm(features[s : s + QUERY_CHUNK].astype(np.float32), axis=1)
    return np.maximum(norms, 1e-12)


def _unit(features: np.ndarray, norms: np.ndarray, rows) -> np.ndarray:
    return features[rows].astype(np.float32) / norms[rows, None]


class _Projection:
    """Unit vectors -> their coordinates on the top `dim` axes, normalised again (identity when d <= dim)."""

    def __init__(self, features: np.ndarray, norms: np.ndarray, dim: int, seed: int) -> None:
        d = features.shape[1]
        self.axes = None
        if d > dim:
            rng = np.random.default_rng(seed)
            n = len(features)
            rows = np.sort(rng.choice(n, PCA_SAMPLE, replace=False)) if n > PCA_SAMPLE else np.arange(n)
            x = _unit(features, norms, rows)
            _, vecs = np.linalg.eigh((x.T @ x).astype(np.float64))
            axes = vecs[:, ::-1][:, :dim]
            # eigh's signs are arbitrary; fix them so the projection depends on the data alone
            axes *= np.where(axes[np.abs(axes).argmax(axis=0), np.arange(dim)] < 0, -1.0, 1.0)
            self.axes = np.ascontiguousarray(axes, dtype=np.float32)
        self.dim = d if self.axes is None else dim

    def __call__(self, unit: np.ndarray) -> np.ndarray:
        if self.axes is None:
            return np.ascontiguousarray(unit)
        y = unit @ self.axes
        return np.ascontiguousarray(y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12))


def _ivf_index(base: np.ndarray, norms: np.ndarray, project: _Projection, projected: np.ndarray, nprobe: int,
               seed: int):
    import faiss

    n = len(base)
    if n < EXACT_BELOW:  # exact search: cells would save nothing here
        index = faiss.IndexFlatIP(project.dim)
    else:
        nlist = max(1, min(round(4 * math.sqrt(n)), n // 40))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(project.dim), project.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.niter = 10
        per_cell = 40  # faiss wants at least 39 training points per cell
        rng = np.random.default_rng(seed + 1)
        rows = np.sort(rng.choice(n, per_cell * nlist, replace=False)) if n > per_cell * nlist else np.arange(n)
        index.cp.max_points_per_centroid = max(per_cell, math.ceil(len(rows) / nlist))  # never subsample again
        index.train(project(_unit(base, norms, rows)))
        index.nprobe = min(max(nprobe, math.ceil(PROBE_SHARE * nlist)), nlist)
    index.add(projected)
    return index


def _confirm_features(query: np.ndarray, qnorms: np.ndarray, base: np.ndarray, bnorms: np.ndarray,
                      qi: np.ndarray, bj: np.ndarray, min_similarity: float) -> np.ndarray:
    """Mask of candidate pairs (qi[t], bj[t]) whose full-feature cosine is at least min_similarity."""
    keep = np.zeros(len(qi), dtype=bool)
    step = max(1, (1 << 24) // max(1, query.shape[1]))  # ~64 MB of gathered float32 rows at a time
    for s in range(0, len(qi), step):
        a = _unit(query, qnorms, qi[s : s + step])
        b = _unit(base, bnorms, bj[s : s + step])
        keep[s : s + step] = np.einsum("ij,ij->i", a, b) >= min_similarity
    return keep


def _confirm_hashes(qh: np.ndarray, bh: np.ndarray, qi: np.ndarray, bj: np.ndarray, max_hamming: int) -> np.ndarray:
    return np.bitwise_count(qh[qi] ^ bh[bj]) <= max_hamming


def _knn_candidates(query: np.ndarray | None, qhashes: np.ndarray | None, base: np.ndarray | None,
                    bhashes: np.ndarray | None, k: int, nprobe: int, dim: int, seed: int, min_similarity: float,
                    max_hamming: int | None, margin: float) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """(query index, base index) of the candidates among each query's k nearest base items, and the norms used
    (None for hashes). A feature candidate's cosine in the index (projected) must be at least min_similarity -
    margin; a hash candidate's distance at most max_hamming."""
    import faiss

    if base is not None:
        bnorms = _norms(base)
        qnorms = bnorms if query is base else _norms(query)
        exact = len(base) < EXACT_BELOW
        # exact search needs no projection (its eigendecomposition alone costs seconds at d = 1280)
        project = _Projection(base, bnorms, base.shape[1] if exact else dim, seed)
        # n x dim float32, kept: the index gets them, and a search of a set against itself queries them again
        projected = np.empty((len(base), project.dim), dtype=np.float32)
        for s in range(0, len(base), QUERY_CHUNK):
            projected[s : s + QUERY_CHUNK] = project(_unit(base, bnorms, slice(s, s + QUERY_CHUNK)))
        index = _ivf_index(base, bnorms, project, projected, nprobe, seed)
        nq, norms = len(query), (qnorms, bnorms)
        floor = min_similarity - (1e-4 if exact and project.axes is None else margin)

        def search(s: int) -> tuple[np.ndarray, np.ndarray]:
            q = projected[s : s + QUERY_CHUNK] if query is base else \
                project(_unit(query, qnorms, slice(s, s + QUERY_CHUNK)))
            sims, found = index.search(q, k)
            return sims >= floor, found
    else:
        index = faiss.IndexBinaryFlat(HASH_BITS)
        index.add(np.ascontiguousarray(bhashes.astype(">u8")).view(np.uint8).reshape(-1, 8))
        nq, norms = len(qhashes), None

        def search(s: int) -> tuple[np.ndarray, np.ndarray]:
            q = np.ascontiguousarray(qhashes[s : s + QUERY_CHUNK].astype(">u8")).view(np.uint8).reshape(-1, 8)
            dist, found = index.search(q, k)
            return dist <= max_hamming, found

    k = min(k, index.ntotal)
    qi_parts, bj_parts = [], []
    for s in range(0, nq, QUERY_CHUNK):
        close, found = search(s)
        rows = np.repeat(np.arange(s, s + len(found), dtype=np.int64), found.shape[1])
        cols = found.reshape(-1).astype(np.int64)
        ok = (cols >= 0) & close.reshape(-1)  # faiss pads with -1 when the probed cells hold fewer than k items
        qi_parts.append(rows[ok])
        bj_parts.append(cols[ok])
    qi = np.concatenate(qi_parts) if qi_parts else np.zeros(0, np.int64)
    bj = np.concatenate(bj_parts) if bj_parts else np.zeros(0, np.int64)
    return qi, bj, norms


def _scan_candidates(query: np.ndarray | None, qhashes: np.ndarray | None, base: np.ndarray | None,
                     bhashes: np.ndarray | None, min_similarity: float, max_hamming: int | None
                     ) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """(query index, base index) of every pair within the limits, and the norms used (None for hashes): all
    query x base pairs compared block by block, so nothing is capped by a k and the verdict on a pair does not
    depend on what else is in either set. Memory: one SCAN_BLOCK x SCAN_BLOCK block, plus the pairs found."""
    n_base = len(base) if base is not None else len(bhashes)
    n_query = len(query) if query is not None else len(qhashes)
    norms = (_norms(query), _norms(base)) if base is not None else None
    floor = min_similarity - 1e-4  # the candidates' cosine is confirmed pair by pair afterwards
    qi_parts, bj_parts = [], []
    for b in range(0, n_base, SCAN_BLOCK):
        bs = slice(b, min(b + SCAN_BLOCK, n_base))
        b_unit = _unit(base, norms[1], bs) if base is not None else None
        for q in range(0, n_query, SCAN_BLOCK):
            qs = slice(q, min(q + SCAN_BLOCK, n_query))
            close = None
            if qhashes is not None and max_hamming is not None:
                close = np.bitwise_count(qhashes[qs, None] ^ bhashes[None, bs]) <= max_hamming
            if base is not None:
                sims = _unit(query, norms[0], qs) @ b_unit.T >= floor
                close = sims if close is None else close & sims
            rows, cols = np.nonzero(close)
            qi_parts.append(rows.astype(np.int64) + q)
            bj_parts.append(cols.astype(np.int64) + b)
    qi = np.concatenate(qi_parts) if qi_parts else np.zeros(0, np.int64)
    bj = np.concatenate(bj_parts) if bj_parts else np.zeros(0, np.int64)
    return qi, bj, norms


def _unique_pairs(qi: np.ndarray, bj: np.ndarray, n_base: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (qi, bj) pairs, sorted (one int64 code per pair: much faster than np.unique(axis=0))."""
    codes = np.unique(qi * n_base + bj)
    return codes // n_base, codes % n_base


def _check(features: np.ndarray | None, hashes: np.ndarray | None, max_hamming: int | None, what: str) -> None:
    if features is None and (hashes is None or max_hamming is None):
        raise ValueError(f"{what}: give features, or hashes with max_hamming")
    if features is not None and features.ndim != 2:
        raise ValueError(f"{what}: features must be a (n, d) array, got shape {features.shape}")
    if features is not None and hashes is not None and len(hashes) != len(features):
        raise ValueError(f"{what}: {len(hashes)} hashes for {len(features)} feature rows")


def _pairs_from(query: np.ndarray | None, qhashes: np.ndarray | None, base: np.ndarray | None,
                bhashes: np.ndarray | None, min_similarity: float, max_hamming: int | None, k: int | None,
                nprobe: int, dim: int, seed: int, margin: float, self_search: bool) -> np.ndarray:
    n_base = len(base) if base is not None else len(bhashes)
    n_query = len(query) if query is not None else len(qhashes)
    if n_base == 0 or n_query == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if k is None:
        qi, bj, norms = _scan_candidates(query, qhashes, base, bhashes, min_similarity, max_hamming)
    else:
        qi, bj, norms = _knn_candidates(query, qhashes, base, bhashes, k + 1 if self_search else k, nprobe, dim,
                                        seed, min_similarity, max_hamming, margin)
    if self_search:
        qi, bj = np.minimum(qi, bj), np.maximum(qi, bj)
        keep = qi != bj
        qi, bj = qi[keep], bj[keep]
    qi, bj = _unique_pairs(qi, bj, n_base)
    # the hash test first: it is cheap, and every pair it drops is a feature comparison saved
    if qhashes is not None and bhashes is not None and max_hamming is not None:
        keep = _confirm_hashes(qhashes, bhashes, qi, bj, max_hamming)
        qi, bj = qi[keep], bj[keep]
    if base is not None:
        keep = _confirm_features(query, norms[0], base, norms[1], qi, bj, min_similarity)
        qi, bj = qi[keep], bj[keep]
    return np.stack([qi, bj], axis=1).astype(np.int64) if len(qi) else np.zeros((0, 2), dtype=np.int64)


def near_duplicate_pairs(features: np.ndarray | None, phashes: np.ndarray | Sequence[int] | None = None,
                         min_similarity: float = SIMILAR, max_hamming: int | None = HAMMING, k: int | None = 16,
                         seed: int = 0, nprobe: int = NPROBE, dim: int = 128, margin: float = MARGIN) -> np.ndarray:
    """(m, 2) int64 array of near-duplicate index pairs (i < j), unique and sorted.

    A pair is two items among each other's k nearest neighbours in the index whose full-feature cosine is at
    least min_similarity and, when phashes and max_hamming are given, whose hashes differ in at most max_hamming
    bits. features=None searches the hashes alone; max_hamming=None skips the hash test. k=None: every pair
    within the limits, by an exact scan of all pairs (no index; O(n^2) time).
    """
    features = None if features is None else np.asarray(features)
    hashes = None if phashes is None else as_hash_array(phashes)
    _check(features, hashes, max_hamming, "near_duplicate_pairs")
    return _pairs_from(features, hashes, features, hashes, min_similarity, max_hamming, k, nprobe, dim, seed, margin,
                       True)


def cross_pairs(query_features: np.ndarray | None, query_hashes: np.ndarray | Sequence[int] | None,
                base_features: np.ndarray | None, base_hashes: np.ndarray | Sequence[int] | None,
                min_similarity: float = SIMILAR, max_hamming: int | None = HAMMING, k: int | None = 16, seed: int = 0,
                nprobe: int = NPROBE, dim: int = 128, margin: float = MARGIN) -> np.ndarray:
    """(m, 2) int64 array of (query index, base index): the query items with a near-duplicate in base.

    The index is built over base (e.g. train) and searched with each query (e.g. test) item; the same tests
    as near_duplicate_pairs confirm each candidate. Sorted and unique. k=None lists every base item within the
    limits of each query item (an exact scan of all query x base pairs, in blocks; no index): what a gate needs,
    since with k a query item with more than k matches has only k of them listed.
    """
    qf = None if query_features is None else np.asarray(query_features)
    bf = None if base_features is None else np.asarray(base_features)
    qh = None if query_hashes is None else as_hash_array(query_hashes)
    bh = None if base_hashes is None else as_hash_array(base_hashes)
    if (qf is None) != (bf is None) or (qh is None) != (bh is None):
        raise ValueError("cross_pairs: give features (and hashes) for both sets or for neither")
    _check(qf, qh, max_hamming, "cross_pairs")
    _check(bf, bh, max_hamming, "cross_pairs")
    if qf is not None and qf.shape[1] != bf.shape[1]:
        raise ValueError(f"cross_pairs: query features have {qf.shape[1]} dimensions, base {bf.shape[1]}")
    return _pairs_from(qf, qh, bf, bh, min_similarity, max_hamming, k, nprobe, dim, seed, margin, False)


def pair_similarity(a: np.ndarray, b: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Cosine similarity of a[pairs[:, 0]] and b[pairs[:, 1]] (pass the same array twice for one set)."""
    a, b = np.asarray(a), np.asarray(b)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    an, bn = _norms(a), _norms(b)
    out = np.empty(len(pairs), dtype=np.float32)
    for s in range(0, len(pairs), QUERY_CHUNK):
        p = pairs[s : s + QUERY_CHUNK]
        out[s : s + QUERY_CHUNK] = np.einsum("ij,ij->i", _unit(a, an, p[:, 0]), _unit(b, bn, p[:, 1]))
    return out


def clusters(n: int, pairs: np.ndarray | Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components of the pairs over 0..n-1: each sorted, ordered by their smallest member.

    Singletons are included, so every index appears exactly once.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return []
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(p), dtype=np.int8), (p[:, 0], p[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    order = np.lexsort((np.arange(n), labels))
    first = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    groups = [g.tolist() for g in np.split(order, first[1:])]
    return sorted(groups, key=lambda g: g[0])


def keep_best(groups: Sequence[Sequence[int]], scores: Sequence[float] | np.ndarray) -> list[int]:
    """The index of the highest score in each group (the earliest on ties), in ascending order."""
    return sorted(max(g, key=lambda i: (scores[i], -i)) for g in groups)


def best_of(groups: Sequence[Sequence[int]], scores: Sequence[float] | np.ndarray) -> dict[int, int]:
    """For every member of a group of two or more, the index of its group's best (keep_best's choice)."""
    out: dict[int, int] = {}
    for g in groups:
        if len(g) > 1:
            best = max(g, key=lambda i: (scores[i], -i))
            out.update(dict.fromkeys(g, best))
    return out
