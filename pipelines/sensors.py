"""Sensors keep a cursor and set a run_key so a file is never run twice."""

from __future__ import annotations

import json

import dagster as dg

from assets.resources import StorageResource
from assets.sac import INBOX, inbox_files, read_snapshot, sac_snapshot_partitions, whole_by_header
from pipelines.jobs import sac_backfill_job


@dg.sensor(job=sac_backfill_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def sac_inbox_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    """A dynamic partition and a run for every new SQLite snapshot in $AESTHETIC_RAW/sac/inbox/, once it is whole.

    The cursor maps each file name to (size, mtime_ns, key) so unchanged files are not hashed again; key is
    null while the file waits. A file is taken (hashed) when its SQLite header's page count x page size equals
    its size, or when its size and mtime are those the previous tick saw: a copy still being written would
    otherwise be hashed half-way, and each tick of a slow copy would make a partition and a run of its own.
    The run_key is the partition key (name + content hash), so a snapshot never runs twice.
    """
    seen: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
    current: dict[str, list] = {}
    new_keys: list[str] = []
    for path in inbox_files(storage.raw_path / "sac" / INBOX):
        stat = path.stat()
        now, before = [stat.st_size, stat.st_mtime_ns], seen.get(path.name)
        unchanged = before is not None and before[:2] == now
        if unchanged and before[2] is not None:  # taken on an earlier tick
            current[path.name] = before
            continue
        if not (unchanged or whole_by_header(path)):
            current[path.name] = [*now, None]
            context.log.info(f"waiting for {path.name}: not whole by its header, and changed since the last tick")
            continue
        key = read_snapshot(path).key
        current[path.name] = [*now, key]
        if key not in new_keys and not context.instance.has_dynamic_partition(sac_snapshot_partitions.name, key):
            new_keys.append(key)
    if new_keys:
        context.log.info(f"new SAC snapshots: {', '.join(new_keys)}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=key, partition_key=key) for key in new_keys],
        dynamic_partitions_requests=[sac_snapshot_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=json.dumps(current, sort_keys=True),
    )


def all_sensors() -> list:
    return [sac_inbox_sensor]
