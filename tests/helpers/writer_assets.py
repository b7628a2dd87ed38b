"""Four assets that all write the warehouse, for the concurrent-writer test (run in subprocesses)."""

from __future__ import annotations

import os
import time

import dagster as dg

from assets.resources import WarehouseResource

ROWS_PER_WRITER = 15


def _writer(name: str) -> dg.AssetsDefinition:
    @dg.asset(name=name)
    def write_rows(warehouse: WarehouseResource) -> dg.MaterializeResult:
        for i in range(ROWS_PER_WRITER):
            # One short connection per unit of work, as the real stages do.
            with warehouse.connect() as conn:
                conn.execute(
                    "INSERT INTO rejects (dataset, item_id, stage, reason, batch) VALUES ('ava', ?, ?, 'test: row', ?)",
                    [f"{name}-{i}", name, str(os.getpid())],
                )
                time.sleep(0.01)
        return dg.MaterializeResult(metadata={"rows": ROWS_PER_WRITER})

    return write_rows


WRITERS = [_writer(f"writer_{k}") for k in range(4)]


def writers_job() -> dg.JobDefinition:
    defs = dg.Definitions(
        assets=WRITERS,
        resources={"warehouse": WarehouseResource(path=os.environ["WRITER_TEST_WAREHOUSE"])},
        jobs=[
            dg.define_asset_job(
                "writers", executor_def=dg.multiprocess_executor.configured({"max_concurrent": 4})
            )
        ],
    )
    return defs.resolve_job_def("writers")
