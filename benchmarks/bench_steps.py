"""What a step process costs to start: `full_pipeline` at the demo test's size with step processes forked from
the run's forkserver (pipelines/executor.py's default) against Dagster's default of spawning a fresh interpreter
per step, each side in a fresh process with its own AESTHETIC_HOME, the two alternating in pairs.

    .venv/bin/python benchmarks/bench_steps.py [--pairs 1] [--ava 48 --sac 30 --kuler 40]

Per side: the run's wall time (RUN_START to RUN_SUCCESS), and for each step the time from
STEP_WORKER_STARTING (the executor asks for a process) to STEP_START (the step's code may begin): the part of a
step that is process start-up, Dagster and code-location import, and the job's reconstruction.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPAWN = {"execution": {"config": {"multiprocess": {"start_method": {"spawn": {}}}}}}


def child(args: argparse.Namespace) -> None:
    home = Path(args.home)
    os.environ.update({"AESTHETIC_HOME": str(home), "AESTHETIC_RAW": str(home / "raw"),
                       "DAGSTER_HOME": str(home / "dagster")})
    sys.path.insert(0, str(ROOT))
    import dagster as dg

    from ingest.sample_data import write_sample_data
    from pipelines.instance import prepare_instance

    write_sample_data(home / "raw", args.ava, args.sac, args.kuler, seed=0, faults=True)
    prepare_instance(home / "dagster")
    job = dg.build_reconstructable_job("pipelines.demo", "full_pipeline_job")
    with dg.DagsterInstance.get() as instance:
        with dg.execute_job(job, instance=instance, run_config=SPAWN if args.child == "spawn" else None) as result:
            assert result.success, f"{args.child} run failed"
            run_id = result.run_id
        stats = instance.get_run_stats(run_id)
        asked, starts = {}, []
        for entry in instance.all_logs(run_id):
            kind = entry.dagster_event.event_type_value if entry.dagster_event else None
            if kind == "STEP_WORKER_STARTING":
                asked[entry.step_key] = entry.timestamp
            elif kind == "STEP_START" and entry.step_key in asked:
                starts.append(entry.timestamp - asked[entry.step_key])
    print(json.dumps({"run_s": stats.end_time - stats.start_time, "start_s": starts}))


def side(mode: str, args: argparse.Namespace, home: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--home", str(home),
           "--ava", str(args.ava), "--sac", str(args.sac), "--kuler", str(args.kuler)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{mode} side failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=1)
    p.add_argument("--ava", type=int, default=48)
    p.add_argument("--sac", type=int, default=30)
    p.add_argument("--kuler", type=int, default=40)
    p.add_argument("--child", choices=("spawn", "forkserver"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--home", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; full_pipeline over "
          f"--ava {args.ava} --sac {args.sac} --kuler {args.kuler}, {args.pairs} pair(s), {os.cpu_count()} CPUs")
    runs: dict[str, list[dict]] = {"spawn": [], "forkserver": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            for mode in runs:
                runs[mode].append(side(mode, args, Path(tmp) / f"{mode}-{i}"))
    for mode, rows in runs.items():
        starts = [s for r in rows for s in r["start_s"]]
        each = ", ".join(f"{r['run_s']:.1f}" for r in rows)
        print(f"  {mode:10s} run {statistics.median(r['run_s'] for r in rows):6.1f} s ({each}); step start-up over "
              f"{len(starts)} steps: median {statistics.median(starts):.2f} s, mean {statistics.mean(starts):.2f} s, "
              f"max {max(starts):.2f} s")
    ratio = statistics.median(s["run_s"] / f["run_s"] for s, f in zip(runs["spawn"], runs["forkserver"], strict=True))
    print(f"  spawn / forkserver run time: {ratio:.2f}x (median of the pairs' ratios)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
