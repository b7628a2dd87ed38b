"""Asset group `evaluation`: each model of the chain (its current version in the warehouse) on its dataset's test
split, a report, and promotion; assets/chain.py builds them from nima_train/chain.py.

The metrics and plots are nima_train/evaluate.py; the rows are warehouse/models.py. Reports live under
$AESTHETIC_HOME/reports/<version>/<dataset>-test/ (report.md, metrics.json, PNG plots) and are shown in the UI.
"""


from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from assets.metadata import inline_images
from assets.resources import StorageResource, WarehouseResource
from assets.settings_config import settings_config
from nima_train.chain import ChainModel
from nima_train.runs import CODE_VERSION
from nima_train.settings import EvalSettings
from warehouse.db import transaction
from warehouse.models import ModelRow, eval_report, record_eval_report, set_alias
from warehouse.models_lookup import current_model, promoted_version

if TYPE_CHECKING:
    import duckdb


class EvalConfig(settings_config(EvalSettings, "evaluation")):
    """EvalSettings' fields (nima_train/settings.py) and where the run goes."""

    device: str = Field("cpu", description="where the model runs: cpu, cuda, cuda:N")
    allow_pipe: bool = Field(False, description="let `pipe:` URLs in the test shards' index run (they run shell "
                                                "commands)")


def model_to_evaluate(conn: "duckdb.DuckDBPyConnection", name: str) -> ModelRow:
    """The current version of `name` (its alias in the warehouse)."""
    model = current_model(conn, name)
    if model is None:
        raise RuntimeError(f"no current {name} model in the warehouse to evaluate: materialise {name} first")
    return model


def evaluate_model(storage: StorageResource, warehouse: WarehouseResource, model_def: ChainModel,
                   config: EvalConfig) -> tuple[str, dict, Path]:
    """Evaluate the current version of the row's model on its dataset's test split; record the row; return
    (version, metrics, report)."""
    from nima_train.evaluate import evaluate_checkpoint, write_report

    name, dataset = model_def.name, model_def.dataset
    with warehouse.connect() as conn:
        model = model_to_evaluate(conn, name)
    checkpoint = storage.from_stored(model.checkpoint_path)
    ev = evaluate_checkpoint(checkpoint, [storage.shards_dir(dataset) / "test"], config.batch_size,
                             device=config.device, allow_pipe=config.allow_pipe)
    history = model.config.get("history", [])  # the model card keeps the run's per-epoch losses
    out = storage.reports_dir() / model.version / f"{dataset}-test"
    with storage.full_disk_as_failure():
        report = write_report(out, ev, f"{name} {model.version} on {dataset}/test", history,
                              {"model": name, "version": model.version, "parent": model.parent_version or "-"})
        metrics = ev.metrics.as_dict()
        with warehouse.connect() as conn:
            record_eval_report(conn, model.version, dataset, "test", metrics)
    return model.version, metrics, report


def _result(version: str, metrics: dict, report: Path) -> dg.MaterializeResult:
    # A model without a calibration has no calibrated metrics (None): left out rather than shown as 0.
    meta = {k: (float(v) if isinstance(v, float) else v) for k, v in metrics.items() if v is not None}
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={**meta, "version": version,
                  "report": dg.MetadataValue.md(inline_images(report.read_text(), report.parent)),
                  "report_path": dg.MetadataValue.path(str(report))},
    )


def evaluation_asset(model: ChainModel) -> dg.AssetsDefinition:
    """The row's evaluation asset: its model's current version on its dataset's test split."""

    @dg.asset(name=model.eval_asset, group_name="evaluation", deps=[model.name, model.shards],
              code_version=CODE_VERSION, description=f"the current {model.name} on the {model.dataset} test split"
              + (f" (gated by a blocking check before promotion to {model.promoted})" if model.promoted else ""))
    def evaluate(config: EvalConfig, storage: StorageResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
        return _result(*evaluate_model(storage, warehouse, model, config))

    return evaluate


def promote(conn: "duckdb.DuckDBPyConnection", model: ChainModel) -> str:
    """Point the row's promotion alias at the current version of its model, which must have been evaluated on the
    row's test split (a version made current since, never evaluated, is refused); return that version."""
    current = current_model(conn, model.name)
    if current is None:
        raise RuntimeError(f"no current {model.name} model in the warehouse to promote: materialise it first")
    if eval_report(conn, current.version, model.dataset, "test") is None:
        raise RuntimeError(f"the current {model.name} {current.version} has no {model.dataset}/test report: "
                           f"materialise {model.eval_asset} first")
    set_alias(conn, current.version, model.promoted)
    return current.version


def promotion_asset(model: ChainModel) -> dg.AssetsDefinition:
    """`<alias>_model` (production_model): points the alias (what the critic loads for 'production') at the version
    the row's evaluation evaluated, after its blocking check passed."""

    @dg.asset(name=model.promotion_asset, group_name="evaluation", deps=[model.eval_asset],
              description=f"points the alias {model.promoted!r} at the current {model.name}, evaluated by "
                          f"{model.eval_asset} and passed by its blocking check")
    def promotion(warehouse: WarehouseResource) -> dg.MaterializeResult:
        with warehouse.connect() as conn, transaction(conn):
            promote(conn, model)
            version = promoted_version(conn, model.promoted)
        return dg.MaterializeResult(data_version=dg.DataVersion(version),
                                    metadata={"version": version, "alias": model.promoted})

    return promotion
