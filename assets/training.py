"""Asset group `training`: one asset per row of the chain (nima_train/chain.py: nima_ava -> nima_sac -> nima_color),
each a `python -m nima_train.train` run; assets/chain.py builds them.

The training itself runs out of process through Dagster Pipes (assets/launch.py): locally with
PipesSubprocessClient (or torchrun with N processes), on a cluster with PipesK8sClient on a GPU node. The run's
command, identity and publishing are nima_train/runs.py; the published version is recorded in the `models`
table and made the model's current version (its alias in `model_aliases`), which is the asset's data version.
"""


import json
from typing import Any

import dagster as dg

from assets.launch import launch
from assets.resources import StorageResource, WarehouseResource
from assets.train_config import TrainConfig, train_config_class
from nima_train.chain import ChainModel
from nima_train.runs import CODE_VERSION, TrainingRun, publish_model, run_key, train_command
from warehouse.db import transaction
from warehouse.models import TRAINED_ON_COLUMNS, ModelRow, TrainedOn, record_model
from warehouse.models_lookup import current_model, make_current


def config_for(model: ChainModel) -> type[TrainConfig]:
    """TrainConfig with the row's own defaults (epochs, learning-rate scale, negatives), named after the model."""
    short = model.name.removeprefix("nima_").title().replace("_", "")
    return train_config_class(f"{short}TrainConfig", TrainConfig, epochs_full=model.epochs, lr_scale=model.lr_scale,
                              negatives=model.negatives)


def parent_of(warehouse: WarehouseResource, model: ChainModel) -> ModelRow | None:
    """The current version of the row's parent (None for a row without one), as the warehouse names it."""
    if not model.parent:
        return None
    with warehouse.connect() as conn:
        parent = current_model(conn, model.parent)
    if parent is None:
        raise RuntimeError(f"{model.name} starts from {model.parent}, which has no current model in the warehouse: "
                           f"materialise {model.parent} first")
    return parent


def train_asset(context: dg.AssetExecutionContext, config: TrainConfig, storage: StorageResource,
                warehouse: WarehouseResource, model: ChainModel) -> dg.MaterializeResult:
    name, parent = model.name, parent_of(warehouse, model)
    shards = storage.shards_dir(model.dataset)
    run = TrainingRun(name, [shards / "train"], [shards / "val"], parent.version if parent else None,
                      storage.from_stored(parent.checkpoint_path) if parent else None)
    hp = config.hyperparameters()
    run_dir = storage.models_dir() / name / "runs" / run_key(run, hp)
    command = train_command(run, hp, run_dir, allow_pipe=config.allow_pipe, device=config.device)
    context.log.info("training: " + " ".join(command))
    summary = launch(context, config.launch, command, str(storage.home_path))
    if not summary:  # Pipes messages are the fast path; the file is what the run always leaves
        summary = json.loads((run_dir / "summary.json").read_text())
    where = trained_where(context, summary)
    published = publish_model(run, hp, run_dir, summary, storage.models_dir(), storage.to_stored, where)
    row = ModelRow(published.version, name, run.parent_version, storage.to_stored(published.checkpoint),
                   published.sha256, published.card, TrainedOn.from_mapping(where))
    with warehouse.connect() as conn, transaction(conn):
        record_model(conn, row)
        make_current(conn, row)
        current = current_model(conn, name)
    final = summary.get("final", {})
    return dg.MaterializeResult(
        data_version=dg.DataVersion(current.version),  # the warehouse's current version, as everyone reads it
        metadata={
            "version": row.version,
            "checkpoint": dg.MetadataValue.path(str(storage.from_stored(row.checkpoint_path))),
            "parent_version": row.parent_version or "",
            "shards_data_version": row.config["shard_index_sha256"]["train"][:16],
            "epochs": len(summary.get("history", [])),
            "train_loss": float(final.get("loss", float("nan"))),
            "val_srcc_mean": float(final.get("val_srcc_mean", float("nan"))),
            "val_binary_accuracy": float(final.get("val_binary_accuracy", float("nan"))),
            **_calibration_metadata(summary.get("calibration")),
            "seconds": round(sum(h.get("seconds", 0.0) for h in summary.get("history", [])), 1),
            "run_dir": dg.MetadataValue.path(str(run_dir)),
            **where,
        },
    )


def trained_where(context: dg.AssetExecutionContext, summary: dict[str, Any]) -> dict[str, str]:
    """Where the run trained, as the training process reported it (nima_train.devices.trained_on), and the code
    location whose run launched it ("" when materialised outside a code location, as tests do)."""
    origin = context.run.remote_job_origin
    reported = summary.get("trained_on") or {}
    where = {k: str(reported.get(k, "")) for k in TRAINED_ON_COLUMNS}
    return {**where, "code_location": origin.location_name if origin else ""}


def _calibration_metadata(fitted: dict[str, Any] | None) -> dict[str, Any]:
    """What the run's calibration did on the validation split (nima_train.train.fit_val_calibration)."""
    if not fitted:
        return {"calibration": "none (no validation split)"}
    if "map" not in fitted:  # too few validation samples to fit anything
        return {"calibration": f"none ({fitted['reason']}: {fitted['n']})"}
    return {"calibration": f"{fitted['method']}, chosen on {fitted['n']} {fitted['split']} samples "
                           f"({fitted['reason']})",
            **{f"val_{k}": float(fitted[k]) for k in ("mae_mean", "mae_mean_calibrated", "spread_ratio",
                                                       "spread_ratio_calibrated", "srcc_mean_calibrated")}}


def training_asset(model: ChainModel) -> dg.AssetsDefinition:
    """The row's training asset: after its shards and its parent, on the gpu pool."""
    config_class = config_for(model)
    start = f"starts from the current {model.parent}" if model.parent else "starts from `weights`"
    description = (f"{model.about} ({model.shards}; {start}; by default {model.epochs} epochs of the whole network "
                   f"at {model.lr_scale:g}x the rates, {model.negatives:.0%} negatives).")

    @dg.asset(name=model.name, group_name="training", deps=[model.shards, *filter(None, [model.parent])],
              pool="gpu", code_version=CODE_VERSION, description=description)
    def train(context: dg.AssetExecutionContext, config: config_class, storage: StorageResource,  # type: ignore[valid-type]
              warehouse: WarehouseResource) -> dg.MaterializeResult:
        return train_asset(context, config, storage, warehouse, model)

    return train
