"""Start-up cost of the code location: `import pipelines.definitions` beside bare `import dagster`, in one run.

Every step process of a multiprocess run, and every sensor or schedule evaluation in the code server,
imports the code location first, so what it imports is paid many times per run.

    .venv/bin/python benchmarks/bench_import.py              # 7 fresh interpreters per import, interleaved
    .venv/bin/python benchmarks/bench_import.py --repeats 11

Each sample is a fresh `python -c "import X"` subprocess timed from inside (perf_counter around the import
alone, so interpreter start-up is left out on both sides). One warm-up run of each comes first, so both
read their files from the page cache. Samples alternate between the two imports, so a machine that drifts
affects both alike; the figures are medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"dagster": "import dagster", "pipelines.definitions": "import pipelines.definitions"}
HEAVY = ("torch", "torchvision", "scipy", "matplotlib", "pandas", "duckdb", "pyarrow", "PIL", "numpy")


def import_seconds(statement: str) -> tuple[float, list[str]]:
    """Seconds the statement takes in a fresh interpreter, and which heavy libraries it loaded."""
    probe = (
        "import sys, time, warnings; warnings.simplefilter('ignore'); t0 = time.perf_counter(); "
        f"{statement}; dt = time.perf_counter() - t0; "
        f"print(dt, ','.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    seconds, _, heavy = out.stdout.strip().partition(" ")
    return float(seconds), [h for h in heavy.split(",") if h]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="fresh interpreters per import (at least 5)")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")
    for statement in TARGETS.values():
        import_seconds(statement)  # warm the page cache
    samples: dict[str, list[float]] = {name: [] for name in TARGETS}
    loaded: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for name, statement in TARGETS.items():
            seconds, loaded[name] = import_seconds(statement)
            samples[name].append(seconds)
    for name, values in samples.items():
        print(f"import {name:24s} median {statistics.median(values):.3f}s  range {min(values):.3f}-{max(values):.3f}s"
              f"  heavy libraries loaded: {', '.join(loaded[name]) or 'none'}")
    extra = statistics.median(samples["pipelines.definitions"]) - statistics.median(samples["dagster"])
    print(f"code location above bare dagster: {extra:+.3f}s (target: at most +0.600s), "
          f"{args.repeats} fresh interpreters each")


if __name__ == "__main__":
    main()
