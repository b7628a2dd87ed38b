"""Near-duplicate search: critic.neardup's index against exact chunked search, side by side in one run.

    .venv/bin/python benchmarks/bench_neardup.py [--n 1000000] [--exact-n 50000] [--planted 10000]
    .venv/bin/python benchmarks/bench_neardup.py --measure-copies CHECKPOINT   # the copy cosine range of a critic

Data: n float16 feature vectors of the critic's width (1280), drawn from a model of pooled features (a positive
mean, a 64-dimensional low-rank part with a decaying spectrum and an isotropic rest; unrelated vectors have a
cosine of about 0.45), with `planted` near-duplicate pairs whose cosine is drawn uniformly from the range that
real resized (0.5-0.9x) and re-encoded (JPEG quality 50-90) copies have through a critic's features
(--copy-range; --measure-copies prints it for a checkpoint). Each pair sits in two adjacent rows, so the first
exact-n rows hold their share of the pairs.

1. On the first exact-n rows: the index and exact chunked search (all pairs with cosine >= threshold, 256 query
   rows at a time), time and peak memory of each; the index's recall of exact search's pairs and of the planted
   pairs.
2. On all n rows: the index, time and peak memory, recall of the planted pairs. Exact search on all n rows runs
   only with --exact-full (it is O(n^2 d): hours at 1M on a few cores); otherwise its time is extrapolated from
   step 1 by n^2 and its memory computed (n x d float32 plus a 256 x n block).
Each search runs in its own process (peak RSS is that process's high-water mark, the input included: the
float16 features file, mapped). Prints the load average before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Measured with --measure-copies on a critic trained by the demo pipeline (mobilenet_v2, 96 px input): the
# cosine of 160 rendered photos and their resized, re-encoded copies ranged 0.922..0.998 (1st percentile 0.930).
COPY_RANGE = (0.922, 0.998)
THRESHOLD = 0.92
RANK = 64


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_features(path: Path, n: int, d: int, planted: int, copy_range: tuple[float, float], seed: int
                   ) -> np.ndarray:
    """The synthetic corpus as a float16 .npy file; returns the planted pairs (i, i + 1)."""
    rng = np.random.default_rng(seed)
    mean = np.abs(rng.standard_normal(d))
    mean /= np.linalg.norm(mean)
    basis = np.linalg.qr(rng.standard_normal((d, RANK)))[0]
    spectrum = 1 / np.sqrt(np.arange(1, RANK + 1))
    spectrum *= np.sqrt(0.7 / (spectrum**2).sum())  # low-rank variance 0.7, isotropic 0.5: |mean|^2 is 1
    iso = np.sqrt(0.5 / d)

    def fluctuation(m: int) -> np.ndarray:
        return (rng.standard_normal((m, RANK)) * spectrum) @ basis.T + iso * rng.standard_normal((m, d))

    starts = np.sort(rng.choice(n // 2, planted, replace=False)) * 2
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, d))
    chunk = 65536
    for s in range(0, n, chunk):
        out[s : s + chunk] = (mean + fluctuation(min(chunk, n - s))).astype(np.float16)
    src = out[starts].astype(np.float64)
    unit = src / np.linalg.norm(src, axis=1, keepdims=True)
    u = fluctuation(planted)
    u -= (u * unit).sum(1, keepdims=True) * unit
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    cos = rng.uniform(*copy_range, (planted, 1))
    out[starts + 1] = (np.linalg.norm(src, axis=1, keepdims=True) * (cos * unit + np.sqrt(1 - cos**2) * u)
                       ).astype(np.float16)
    out.flush()
    return np.stack([starts, starts + 1], axis=1)


def _index_search(path: str, rows: int, threshold: float, k: int, nprobe: int | None, queue) -> None:
    from critic.neardup import NPROBE, near_duplicate_pairs

    feats = np.load(path, mmap_mode="r")[:rows]
    started = time.perf_counter()
    pairs = near_duplicate_pairs(feats, None, threshold, None, k=k, nprobe=nprobe or NPROBE)
    queue.put((time.perf_counter() - started, _peak_mb(), pairs))


def _exact_search(path: str, rows: int, threshold: float, queue) -> None:
    import torch

    feats = np.load(path, mmap_mode="r")[:rows]
    started = time.perf_counter()
    unit = torch.empty((rows, feats.shape[1]), dtype=torch.float32)
    for s in range(0, rows, 65536):
        unit[s : s + 65536] = torch.nn.functional.normalize(torch.from_numpy(feats[s : s + 65536].astype(np.float32)))
    found = []
    block = 256
    for s in range(0, rows, block):
        sims = unit[s : s + block] @ unit[s:].T
        i, j = torch.nonzero(sims >= threshold, as_tuple=True)
        keep = j > i  # the upper triangle: j counts from row s
        found.append(torch.stack([i[keep] + s, j[keep] + s], 1))
    pairs = torch.cat(found).numpy() if found else np.zeros((0, 2), np.int64)
    queue.put((time.perf_counter() - started, _peak_mb(), pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]))


def _in_process(target, *args) -> tuple[float, float, np.ndarray]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _recall(found: np.ndarray, wanted: np.ndarray) -> float:
    if not len(wanted):
        return float("nan")
    have = {tuple(p) for p in found.tolist()}
    return sum(tuple(p) in have for p in wanted.tolist()) / len(wanted)


def measure_copies(checkpoint: str, n: int = 160, seed: int = 0) -> np.ndarray:
    """Cosine of rendered photos and their resized, re-encoded copies through the checkpoint's features."""
    import io

    import torch
    from PIL import Image

    from critic.curate import stored_crop
    from critic.scoring import Critic
    from ingest.sample_data import render_photo
    from nima_train.transforms import center_crop, normalize

    critic = Critic.from_checkpoint(checkpoint)
    rng = np.random.default_rng(seed)

    def jpeg(img: Image.Image, quality: int) -> bytes:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        return buf.getvalue()

    originals, copies = [], []
    for _ in range(n):
        img = render_photo(rng, float(rng.random()), 320, 256)
        originals.append(jpeg(img, 92))
        scale = float(rng.uniform(0.5, 0.9))
        small = img.resize((int(320 * scale), int(256 * scale)), Image.Resampling.BICUBIC)
        copies.append(jpeg(small, int(rng.integers(50, 91))))

    def features(blobs: list[bytes]) -> torch.Tensor:
        x = torch.stack([center_crop(stored_crop(b), critic.image_size, critic.resize) for b in blobs])
        return torch.nn.functional.normalize(critic.forward(normalize(x)).features, dim=1)

    return (features(originals) * features(copies)).sum(1).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--exact-n", type=int, default=50_000)
    p.add_argument("--planted", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--threshold", type=float, default=THRESHOLD)
    p.add_argument("--copy-range", type=float, nargs=2, default=COPY_RANGE)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--nprobe", type=int, default=None, help="cells scanned per query (default: critic.neardup's)")
    p.add_argument("--exact-full", action="store_true", help="also run exact search on all n rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--measure-copies", metavar="CHECKPOINT", help="print the copy cosine range and exit")
    args = p.parse_args()
    if args.measure_copies:
        cos = measure_copies(args.measure_copies)
        print(f"copies' cosine through {args.measure_copies}: min {cos.min():.4f}, 1% {np.percentile(cos, 1):.4f}, "
              f"median {np.median(cos):.4f}, max {cos.max():.4f} ({len(cos)} pairs)")
        return
    print(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.npy"
        started = time.perf_counter()
        planted = write_features(path, args.n, args.dim, args.planted, tuple(args.copy_range), args.seed)
        print(f"{args.n} x {args.dim} float16 features ({path.stat().st_size / 2**30:.2f} GiB), {len(planted)} planted "
              f"pairs at cosine {args.copy_range[0]}..{args.copy_range[1]}, threshold {args.threshold}: "
              f"made in {time.perf_counter() - started:.0f} s")
        sub = min(args.exact_n, args.n)
        sub_planted = planted[planted[:, 1] < sub]
        t_idx, m_idx, p_idx = _in_process(_index_search, str(path), sub, args.threshold, args.k, args.nprobe)
        t_ex, m_ex, p_ex = _in_process(_exact_search, str(path), sub, args.threshold)
        print(f"\n{sub} rows, side by side       time s   peak RSS MB   pairs   recall(exact)   recall(planted, "
              f"{len(sub_planted)})")
        print(f"  index (faiss IVF, k={args.k})  {t_idx:8.1f}   {m_idx:11.0f}   {len(p_idx):5d}   "
              f"{_recall(p_idx, p_ex):13.4f}   {_recall(p_idx, sub_planted):.4f}")
        print(f"  exact chunked search       {t_ex:8.1f}   {m_ex:11.0f}   {len(p_ex):5d}   {1.0:13.4f}   "
              f"{_recall(p_ex, sub_planted):.4f}")
        print(f"  ratio exact / index: time {t_ex / t_idx:.1f}x, memory {m_ex / m_idx:.2f}x")
        if args.n > sub:
            t_full, m_full, p_full = _in_process(_index_search, str(path), args.n, args.threshold, args.k,
                                                 args.nprobe)
            print(f"\n{args.n} rows: index {t_full:.1f} s, peak RSS {m_full:.0f} MB, {len(p_full)} pairs, "
                  f"recall of the {len(planted)} planted pairs {_recall(p_full, planted):.4f}")
            if args.exact_full:
                t_exf, m_exf, p_exf = _in_process(_exact_search, str(path), args.n, args.threshold)
                print(f"  exact: {t_exf:.1f} s, peak RSS {m_exf:.0f} MB; index recall of exact's {len(p_exf)} pairs "
                      f"{_recall(p_full, p_exf):.4f}; ratio exact / index: time {t_exf / t_full:.1f}x")
            else:
                est = t_ex * (args.n / sub) ** 2
                mem = (args.n * args.dim * 4 + 256 * args.n * 4) / 2**20
                print(f"  exact (not run): ~{est:.0f} s by n^2 from the {sub}-row run ({est / t_full:.0f}x the "
                      f"index), at least {mem:.0f} MB (n x d float32 + a 256 x n block) besides the input")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
