"""The shards leak search (critic.leakage.find_leaks with its cache) at AVA scale: three passes per size.

    .venv/bin/python benchmarks/bench_leakage.py [--sizes 20000,80000,255000] [--real-up-to 20000]

Items are split 90% train, 5% val, 5% test (AVA's ~255k crops hold ~20k test crops), as the shards drop sees them:
(key, CropFile(path, sha256)). 0.5% of the held-out items are near-copies of train items. Per size, each pass
runs in its own process (peak memory: that process's ru_maxrss, the interpreter and numpy included; `base` is
its RSS before the pass):
1. first: an empty pair cache (every held-out x train pair compared, the exact scan);
2. unchanged: the same items again;
3. 1% new: n/100 new items added (same 90/5/5 split) and searched against the unchanged train index.
Sizes up to --real-up-to use real 256 x 256 JPEG crops on disk (random smooth pictures; copies re-encoded at
quality 80): their first pass decodes and dHashes every crop, the 1% pass the new ones. Larger sizes have their
dHashes generated directly (random 64-bit hashes, copies 0-6 bits away) and stored in the signature cache before
the first pass, which then measures the search alone; the output says which is which. Prints the load average:
the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HELD_SHARE, COPY_SHARE, NEW_SHARE = 0.10, 0.005, 0.01


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _one_pass(manifest: str, cache: str) -> None:
    """Child process: build the items from the manifest and run find_leaks once; print what it measured."""
    from critic.leakage import CropFile, LeakRule, find_leaks

    base = _rss_mb()
    started = time.perf_counter()
    with np.load(manifest) as z:
        keys, shas, paths, splits = z["keys"], z["shas"], z["paths"], z["splits"]
    items: dict[str, list] = {"train": [], "val": [], "test": []}
    for key, sha, path, split in zip(keys.tolist(), shas.tolist(), paths.tolist(), splits.tolist(), strict=True):
        items[split].append((key, CropFile(path, sha)))
    report = find_leaks(items, LeakRule("dhash", 6), cache=cache, dataset="ava")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "base_mb": base, "pairs": len(report.leaks),
                      **report.work}))


def _picture(rng: np.random.Generator):
    from PIL import Image

    small = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    return small.resize((256, 256), Image.Resampling.BICUBIC)


def _real_items(folder: Path, start: int, n: int, sources: list[str], rng: np.random.Generator
                ) -> tuple[list[str], list[str]]:
    """n JPEG crops written to folder (a COPY_SHARE of the held-out ones re-encoded copies of train files in
    `sources`, to which the train files written here are added); returns their paths and sha256s."""
    import io

    from PIL import Image

    from critic.leak_cache import content_sha

    paths, shas = [], []
    for i in range(start, start + n):
        buf = io.BytesIO()
        if sources and rng.random() < COPY_SHARE / HELD_SHARE and _split(i) != "train":
            with Image.open(sources[int(rng.integers(len(sources)))]) as img:
                img.convert("RGB").save(buf, "JPEG", quality=80)
        else:
            _picture(rng).save(buf, "JPEG", quality=90)
        path = folder / f"{i}.jpg"
        path.write_bytes(buf.getvalue())
        if _split(i) == "train":
            sources.append(str(path))
        paths.append(str(path))
        shas.append(content_sha(buf.getvalue()))
    return paths, shas


def _split(i: int) -> str:
    r = (i * 2654435761) % 1000 / 1000  # a fixed scatter of items over splits
    return "train" if r >= HELD_SHARE else "val" if r < HELD_SHARE / 2 else "test"


def _generated_items(cache: Path, start: int, n: int, train_hashes: np.ndarray | None,
                     rng: np.random.Generator) -> tuple[list[str], list[str], np.ndarray]:
    """n items whose dHashes are drawn directly and stored in the signature cache (no files); the copies are of
    train_hashes (None: of this batch's train items)."""
    from critic.leak_cache import SignatureCache, as_shas, content_sha

    hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    hashes |= rng.integers(0, 2, n).astype(np.uint64)
    held = np.array([_split(i) != "train" for i in range(start, start + n)])
    copy = held & (rng.random(n) < COPY_SHARE / HELD_SHARE)
    train_hashes = hashes[~held] if train_hashes is None else train_hashes
    if copy.any():
        src = train_hashes[rng.integers(len(train_hashes), size=int(copy.sum()))]
        order = np.argsort(rng.random((len(src), 64)), axis=1)
        flips = order < rng.integers(0, 7, len(src))[:, None]  # 0..6 random bits per copy
        masks = (flips.astype(np.uint64) << np.arange(64, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
        hashes[copy] = src ^ masks
    shas = [content_sha(f"generated {i}".encode()) for i in range(start, start + n)]
    SignatureCache(cache).store("dhash", as_shas(shas), np.ones(n, bool), hashes)
    return ["/nonexistent"] * n, shas, hashes


def _write_manifest(path: Path, start_ids: range, paths: list[str], shas: list[str]) -> None:
    ids = list(start_ids)
    np.savez(path, keys=np.array([f"ava_{i}" for i in ids]), shas=np.array(shas), paths=np.array(paths),
             splits=np.array([_split(i) for i in ids]))


def _run_pass(manifest: Path, cache: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--pass", str(manifest), str(cache)], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__)
                                                                                               .parents[1])})
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_size(n: int, real: bool, work: Path) -> dict[str, dict]:
    rng = np.random.default_rng(n)
    cache, folder = work / f"cache-{n}", work / f"crops-{n}"
    folder.mkdir(parents=True)
    n_new = max(1, int(n * NEW_SHARE))
    made = time.perf_counter()
    if real:
        sources: list[str] = []
        paths, shas = _real_items(folder, 0, n, sources, rng)
        new_paths, new_shas = _real_items(folder, n, n_new, sources, rng)
    else:
        paths, shas, hashes = _generated_items(cache, 0, n, None, rng)
        train = hashes[[_split(i) == "train" for i in range(n)]]
        new_paths, new_shas, _ = _generated_items(cache, n, n_new, train, rng)
    print(f"  n={n}: items made in {time.perf_counter() - made:.1f} s", file=sys.stderr)
    _write_manifest(work / f"m-{n}.npz", range(n), paths, shas)
    _write_manifest(work / f"m-{n}-new.npz", range(n + n_new), paths + new_paths, shas + new_shas)
    return {"first": _run_pass(work / f"m-{n}.npz", cache),
            "unchanged": _run_pass(work / f"m-{n}.npz", cache),
            "1% new": _run_pass(work / f"m-{n}-new.npz", cache)}


def _growth(sizes: list[int], values: list[float]) -> str:
    """The exponent b of value ~ n^b between the smallest and largest size."""
    if len(sizes) < 2 or min(values) <= 0:
        return "-"
    return f"n^{math.log(values[-1] / values[0]) / math.log(sizes[-1] / sizes[0]):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,80000,255000")
    parser.add_argument("--real-up-to", type=int, default=20000)
    parser.add_argument("--pass", dest="one_pass", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_pass:
        _one_pass(*args.one_pass)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            results[n] = bench_size(n, n <= args.real_up_to, Path(tmp))
    print(f"load average after: {os.getloadavg()}")
    print("\n| n | signatures | pass | seconds | peak RSS MB (before pass) | computed | cached | pairs compared "
          "| leak pairs |\n|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for n, passes in results.items():
        kind = "decoded from JPEG crops" if n <= args.real_up_to else "generated directly"
        for name, r in passes.items():
            print(f"| {n:,} | {kind} | {name} | {r['seconds']:.2f} | {r['peak_mb']:.0f} ({r['base_mb']:.0f}) | "
                  f"{r['signatures_computed']:,} | {r['signatures_cached']:,} | {r['pairs_compared']:,} | "
                  f"{r['pairs']:,} |")
    print("\ngrowth from the smallest to the largest size (value ~ n^b):")
    for name in ("first", "unchanged", "1% new"):
        secs = [results[n][name]["seconds"] for n in sizes]
        mem = [results[n][name]["peak_mb"] - results[n][name]["base_mb"] for n in sizes]
        print(f"- {name}: time {_growth(sizes, secs)}, memory above the interpreter's {_growth(sizes, mem)}")


if __name__ == "__main__":
    main()
