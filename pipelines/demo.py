"""`make demo`: sample data when AESTHETIC_RAW has none, the whole asset graph, then a summary.

The run goes through the Dagster instance in DAGSTER_HOME with the default
multiprocess executor, exactly as a launch from the UI would, so it shows up in
`make ui` afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import dagster as dg

from ingest.paths import Paths
from pipelines.definitions import defs
from pipelines.instance import prepare_instance
from warehouse.db import connect
from warehouse.records import evaluation_summary, rejects_by_reason, shards_by_split, table_counts

DATASET_MARKERS = {"ava": "ava/AVA.txt", "sac": "sac", "kuler": "kuler/themeData.mat"}


def raw_is_empty(raw: Path) -> bool:
    return not any((raw / marker).exists() for marker in DATASET_MARKERS.values())


def full_pipeline_job() -> dg.JobDefinition:
    return defs.resolve_job_def("full_pipeline")


def run_full_pipeline(instance: dg.DagsterInstance) -> dg.ExecutionResult:
    # Addressed by module, not as `__main__`: the steps' forkserver then preloads this module, and with it the
    # code location (pipelines/executor.py).
    job = dg.build_reconstructable_job("pipelines.demo", "full_pipeline_job")
    with dg.execute_job(job, instance=instance) as result:
        return result


def _fmt(value: float | None) -> str:
    """Metrics are NULL or NaN when a test split is too small to define them (e.g. one sample)."""
    return "n/a" if value is None or value != value else f"{value:.3f}"


def summarize(warehouse_path: Path, home: Path) -> str:
    lines = []
    with connect(warehouse_path, read_only=True) as conn:
        lines.append("warehouse rows: " + ", ".join(f"{k}={v}" for k, v in table_counts(conn).items()))
        rejects = rejects_by_reason(conn)
        lines.append("rejects by reason:" if rejects else "rejects by reason: none")
        lines += [f"  {ds:6s} {stage:10s} {kind:28s} {n}" for ds, stage, kind, n in rejects]
        shards = shards_by_split(conn)
        lines.append("shards:" if shards else "shards: none")
        lines += [f"  {d:6s} {s:5s} {k} tar(s), {n} samples, {b / 1e6:.1f} MB" for d, s, k, n, b in shards]
        reports = evaluation_summary(conn)
        if reports:
            lines.append("evaluation:")
            for name, version, ds, split, n, acc, srcc, lcc, emd in reports:
                lines.append(
                    f"  {name or '?'} {version} on {ds}/{split} (n={n}): binary accuracy {_fmt(acc)},"
                    f" SRCC {_fmt(srcc)}, LCC {_fmt(lcc)}, EMD(r=1) {_fmt(emd)}"
                )
            lines.append(f"  reports under {home / 'reports'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ava", type=int, default=240)
    parser.add_argument("--sac", type=int, default=120)
    parser.add_argument("--kuler", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-faults", action="store_true", help="sample data without planted damage")
    args = parser.parse_args(argv)

    paths = Paths.from_env()
    home, raw = paths.home, paths.raw
    dagster_home = prepare_instance(os.environ.get("DAGSTER_HOME") or home / "dagster")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    print(f"AESTHETIC_HOME={home}\nAESTHETIC_RAW={raw}\nDAGSTER_HOME={dagster_home}")
    if raw_is_empty(raw):
        from ingest.sample_data import write_sample_data

        t0 = time.perf_counter()
        report = write_sample_data(raw, args.ava, args.sac, args.kuler, args.seed, not args.no_faults)
        print(f"sample data written to {raw} in {time.perf_counter() - t0:.1f}s "
              f"({report.ava_rows} AVA rows, {report.sac_images} SAC images, {report.kuler_themes} themes)")
    else:
        print(f"using the raw drops already in {raw}")

    t0 = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        result = run_full_pipeline(instance)
        elapsed = time.perf_counter() - t0
        status = "succeeded" if result.success else "FAILED"
        print(f"\nfull_pipeline run {result.run_id} {status} in {elapsed:.0f}s")
    print(summarize(home / "warehouse.duckdb", home))
    print("\nNext: `make ui`, then open http://127.0.0.1:3000 to browse the asset graph and this run.")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
