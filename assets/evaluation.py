"""Asset group `evaluation`: each trained model on its dataset's test split, a report, and promotion.

The metrics and plots are nima_train/evaluate.py; the rows are warehouse/models.py. Reports live under
$AESTHETIC_HOME/reports/<version>/<dataset>-test/ (report.md, metrics.json, PNG plots) and are shown in the UI.
"""


from pathlib import Path

import dagster as dg
import duckdb

from assets.metadata import inline_images
from assets.resources import StorageResource, WarehouseResource
from assets.versions import latest_data_version
from common.bounds import config_field
from nima_train.runs import CODE_VERSION
from nima_train.settings import EvalSettings
from warehouse.models import ModelRow, get_model, latest_model, record_eval_report, set_alias

PROMOTED_MODEL = "nima_color"  # the critic scores designs, so the end of the chain is what gets promoted
PROMOTED_EVAL = "eval_nima_color"  # its evaluation, gated by the blocking check; names the version to promote


class EvalConfig(dg.Config):
    batch_size: int = config_field(EvalSettings, "batch_size", "test images per forward pass")
    device: str = "cpu"
    allow_pipe: bool = False  # `pipe:` URLs in the test shards' index may run shell commands


def model_to_evaluate(conn: duckdb.DuckDBPyConnection, instance: dg.DagsterInstance, name: str) -> ModelRow:
    """The version the latest `name` materialisation published; the newest recorded one if Dagster has none."""
    version = latest_data_version(instance, name)
    model = get_model(conn, version) if version else latest_model(conn, name)
    if model is None:
        raise RuntimeError(f"no recorded {name} model" + (f" {version}" if version else "")
                           + f" to evaluate: materialise {name} first")
    return model


def evaluate_model(instance: dg.DagsterInstance, storage: StorageResource, warehouse: WarehouseResource,
                   name: str, dataset: str, config: EvalConfig) -> tuple[str, dict, Path]:
    """Evaluate the `name` model its asset last published on dataset/test; record the row; return
    (version, metrics, report)."""
    from nima_train.evaluate import evaluate_checkpoint, write_report

    with warehouse.connect() as conn:
        model = model_to_evaluate(conn, instance, name)
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


@dg.asset(group_name="evaluation", deps=["nima_ava", "ava_shards"], code_version=CODE_VERSION)
def eval_nima_ava(context: dg.AssetExecutionContext, config: EvalConfig, storage: StorageResource,
                  warehouse: WarehouseResource) -> dg.MaterializeResult:
    """nima_ava on the AVA test split."""
    return _result(*evaluate_model(context.instance, storage, warehouse, "nima_ava", "ava", config))


@dg.asset(group_name="evaluation", deps=["nima_sac", "sac_shards"], code_version=CODE_VERSION)
def eval_nima_sac(context: dg.AssetExecutionContext, config: EvalConfig, storage: StorageResource,
                  warehouse: WarehouseResource) -> dg.MaterializeResult:
    """nima_sac on the SAC test split."""
    return _result(*evaluate_model(context.instance, storage, warehouse, "nima_sac", "sac", config))


@dg.asset(group_name="evaluation", deps=["nima_color", "kuler_shards"], code_version=CODE_VERSION)
def eval_nima_color(context: dg.AssetExecutionContext, config: EvalConfig, storage: StorageResource,
                    warehouse: WarehouseResource) -> dg.MaterializeResult:
    """nima_color on the Kuler test split (gated by the blocking check before promotion)."""
    return _result(*evaluate_model(context.instance, storage, warehouse, "nima_color", "kuler", config))


@dg.asset(group_name="evaluation", deps=[PROMOTED_EVAL])
def production_model(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Points the alias 'production' (what the critic loads) at the nima_color version eval_nima_color evaluated
    (and the blocking check passed); a version recorded since, never evaluated, is not promoted."""
    version = latest_data_version(context.instance, PROMOTED_EVAL)
    if version is None:
        raise RuntimeError(f"{PROMOTED_EVAL} has no materialisation naming a model version: evaluate one first")
    with warehouse.connect() as conn:
        model = get_model(conn, version)
        if model is None or model.name != PROMOTED_MODEL:
            raise RuntimeError(f"{PROMOTED_EVAL} evaluated {version}, which is not a recorded {PROMOTED_MODEL} model")
        set_alias(conn, version, "production")
    return dg.MaterializeResult(data_version=dg.DataVersion(version),
                                metadata={"version": version, "alias": "production"})
