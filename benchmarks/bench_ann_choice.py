"""Why critic.neardup uses faiss: faiss IVF against usearch HNSW on the same projected vectors, side by side.

    .venv/bin/python benchmarks/bench_ann_choice.py [--n 50000]     # needs `pip install usearch` (not a dependency)

The vectors are bench_neardup.py's synthetic features (planted copies at the measured cosine range), L2-normalised
and projected to 128 dimensions as critic.neardup projects them. Each library builds its index twice with every
core and searches each vector's 17 nearest neighbours; printed per library: build and search time, recall of the
planted pairs, and whether the two builds answered identically (the curation output must be byte-identical).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_neardup import COPY_RANGE, write_features  # noqa: E402

from critic.neardup import NPROBE, _ivf_index, _norms, _Projection, _unit  # noqa: E402

K = 17


def _recall(found: np.ndarray, planted: np.ndarray) -> float:
    return float(np.mean([b in set(found[a].tolist()) or a in set(found[b].tolist()) for a, b in planted]))


def faiss_ivf(feats: np.ndarray, norms: np.ndarray, project: _Projection, y: np.ndarray) -> tuple:
    started = time.perf_counter()
    index = _ivf_index(feats, norms, project, y, NPROBE, seed=0)
    built = time.perf_counter()
    found = index.search(y, K)[1]
    return built - started, time.perf_counter() - built, found


def usearch_hnsw(y: np.ndarray) -> tuple:
    from usearch.index import Index

    started = time.perf_counter()
    index = Index(ndim=y.shape[1], metric="ip", dtype="f32", connectivity=16, expansion_add=128,
                  expansion_search=64)
    index.add(np.arange(len(y)), y, threads=os.cpu_count())
    built = time.perf_counter()
    found = index.search(y, K, threads=os.cpu_count()).keys
    return built - started, time.perf_counter() - built, np.asarray(found, dtype=np.int64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--planted", type=int, default=2_500)
    args = p.parse_args()
    print(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        planted = write_features(Path(tmp) / "f.npy", args.n, 1280, args.planted, COPY_RANGE, 0)
        feats = np.load(Path(tmp) / "f.npy")
    norms = _norms(feats)
    project = _Projection(feats, norms, 128, 0)
    y = np.ascontiguousarray(project(_unit(feats, norms, slice(None))))
    print(f"{args.n} vectors, 128 dimensions, {len(planted)} planted pairs, {K} neighbours each")
    for name, run in (("faiss IVF-Flat", lambda: faiss_ivf(feats, norms, project, y)),
                      ("usearch HNSW", lambda: usearch_hnsw(y))):
        b1, s1, f1 = run()
        b2, s2, f2 = run()
        print(f"  {name:15s} build {min(b1, b2):6.1f} s  search {min(s1, s2):6.1f} s  recall(planted) "
              f"{_recall(f1, planted):.4f}  two builds identical: {bool(np.array_equal(f1, f2))}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
