"""The data location's side of the model ledger (warehouse/ledger.py): a job that records the training host's
events into the warehouse, and a sensor that runs it when new events appear on the shared volume."""

import dagster as dg

from assets.resources import StorageResource, WarehouseResource
from pipelines.resources import ledger_folder
from warehouse.ledger import event_numbers, record_ledger


@dg.op(description="copy the model ledger's new events (models, aliases, evaluation reports) into the warehouse")
def record_model_ledger(context: dg.OpExecutionContext, storage: StorageResource,
                        warehouse: WarehouseResource) -> None:
    with warehouse.connect() as conn:
        recorded = record_ledger(conn, ledger_folder(storage.home_path))
    context.log.info(f"recorded ledger events {recorded}" if recorded else "no new ledger events")


@dg.job(description="record the training location's models in the warehouse (two-host shape)")
def record_models() -> None:
    record_model_ledger()


@dg.sensor(job=record_models, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def model_ledger_sensor(context: dg.SensorEvaluationContext, storage: StorageResource):
    """A record_models run when the ledger holds an event numbered above the cursor (the last one it asked for);
    its run key is that number, so each state of the ledger is recorded by one run."""
    numbers = event_numbers(ledger_folder(storage.home_path))
    last, seen = (numbers[-1] if numbers else 0), int(context.cursor or 0)
    if last <= seen:
        return dg.SkipReason(f"no model ledger event after {seen}")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"ledger:{last}")], cursor=str(last))
