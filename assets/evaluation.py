"""Asset group `evaluation`: each trained model on its dataset's test split, a report, and promotion.

The metrics and plots are nima_train/evaluate.py; the rows are warehouse/models.py. Reports live under
$AESTHETIC_HOME/reports/<version>/<dataset>-test/ (report.md, metrics.json, PNG plots) and are shown in the UI.
"""


import base64
from pathlib import Path

import dagster as dg

from assets.resources import StorageResource, WarehouseResource
from assets.training import CODE_VERSION
from warehouse.models import latest_model, record_eval_report, set_alias

PROMOTED_MODEL = "nima_color"  # the critic scores designs, so the end of the chain is what gets promoted


class EvalConfig(dg.Config):
    batch_size: int = 64
    device: str = "cpu"


def evaluate_model(storage: StorageResource, warehouse: WarehouseResource, name: str, dataset: str,
                   config: EvalConfig) -> tuple[str, dict, Path]:
    """Evaluate the newest `name` model on dataset/test; record the row; return (version, metrics, report)."""
    from nima_train.evaluate import evaluate_checkpoint, write_report

    with warehouse.connect() as conn:
        model = latest_model(conn, name)
    if model is None:
        raise RuntimeError(f"no recorded {name} model to evaluate: materialise {name} first")
    checkpoint = storage.from_stored(model.checkpoint_path)
    ev = evaluate_checkpoint(checkpoint, [storage.shards_dir(dataset) / "test"], config.batch_size,
                             device=config.device)
    history = model.config.get("history", [])  # the model card keeps the run's per-epoch losses
    out = storage.reports_dir() / model.version / f"{dataset}-test"
    report = write_report(out, ev, f"{name} {model.version} on {dataset}/test", history,
                          {"model": name, "version": model.version, "parent": model.parent_version or "-"})
    metrics = ev.metrics.as_dict()
    with warehouse.connect() as conn:
        record_eval_report(conn, model.version, dataset, "test", metrics)
    return model.version, metrics, report


def _markdown_with_plots(report: Path) -> str:
    """The report with its PNGs inlined, so the Dagster UI shows them without file access."""
    text = report.read_text()
    for png in sorted(report.parent.glob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode()
        text = text.replace(f"]({png.name})", f"](data:image/png;base64,{data})")
    return text


def _result(version: str, metrics: dict, report: Path) -> dg.MaterializeResult:
    meta = {k: (float(v) if isinstance(v, float) else v) for k, v in metrics.items()}
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={**meta, "version": version, "report": dg.MetadataValue.md(_markdown_with_plots(report)),
                  "report_path": dg.MetadataValue.path(str(report))},
    )


@dg.asset(group_name="evaluation", deps=["nima_ava", "ava_shards"], code_version=CODE_VERSION)
def eval_nima_ava(config: EvalConfig, storage: StorageResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """nima_ava on the AVA test split."""
    return _result(*evaluate_model(storage, warehouse, "nima_ava", "ava", config))


@dg.asset(group_name="evaluation", deps=["nima_sac", "sac_shards"], code_version=CODE_VERSION)
def eval_nima_sac(config: EvalConfig, storage: StorageResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """nima_sac on the SAC test split."""
    return _result(*evaluate_model(storage, warehouse, "nima_sac", "sac", config))


@dg.asset(group_name="evaluation", deps=["nima_color", "kuler_shards"], code_version=CODE_VERSION)
def eval_nima_color(config: EvalConfig, storage: StorageResource,
                    warehouse: WarehouseResource) -> dg.MaterializeResult:
    """nima_color on the Kuler test split (gated by the blocking check before promotion)."""
    return _result(*evaluate_model(storage, warehouse, "nima_color", "kuler", config))


@dg.asset(group_name="evaluation", deps=["eval_nima_color"])
def production_model(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Points the alias 'production' (what the critic loads) at the newest nima_color; runs only if the check passed."""
    with warehouse.connect() as conn:
        model = latest_model(conn, PROMOTED_MODEL)
        if model is None:
            raise RuntimeError(f"no {PROMOTED_MODEL} model to promote")
        set_alias(conn, model.version, "production")
    return dg.MaterializeResult(data_version=dg.DataVersion(model.version),
                                metadata={"version": model.version, "alias": "production"})
