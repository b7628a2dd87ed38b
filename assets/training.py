"""Asset group `training`: nima_ava -> nima_sac -> nima_color, each a `python -m nima_train.train` run.

The training itself runs out of process through Dagster Pipes (assets/launch.py): locally with
PipesSubprocessClient (or torchrun with N processes), on a cluster with PipesK8sClient on a GPU node. The run's
command, identity and publishing are nima_train/runs.py; the published version is recorded in the `models`
table and is the asset's data version.
"""


import json
from typing import Any

import dagster as dg
from pydantic import Field

from assets.launch import K8S_GPUS, MOVED_TO_LAUNCH, NPROC, LaunchConfig, Toleration, launch
from assets.resources import StorageResource, WarehouseResource
from common.bounds import config_field, ranged_field
from nima_train.runs import CODE_VERSION, TrainingRun, publish_model, run_key, train_command
from nima_train.settings import TrainSettings
from warehouse.models import ModelRow, latest_model, record_model


def _train_field(name: str, description: str, default: Any) -> Any:
    """A hyperparameter with the range `python -m nima_train.train` checks its flag against (nima_train/settings.py),
    and the demo's default."""
    return config_field(TrainSettings, name, description, default)


class TrainConfig(dg.Config):
    """What a run computes: hyperparameters, input size, and how many processes share the batch. These are the
    run's identity (its run folder and resume point); where it runs is `launch`.

    Defaults train from scratch at a small size on a CPU (the demo); a GPU run sets weights=imagenet, crop=224.
    """

    backbone: str = "mobilenet_v2"
    weights: str = "none"  # "imagenet" needs torchvision's weights in the torch cache (no download here)
    loss: str = "paper"
    opt: str = "adam"
    epochs_head: int = _train_field("epochs_head", "phase 1: only the head trains", 0)
    epochs_full: int = _train_field("epochs_full", "phase 2: the whole network trains", 12)
    lr_head: float = _train_field("lr_head", "phase 1 rate", 1e-3)
    lr_full: float = _train_field("lr_full", "phase 2 rate; from scratch; fine-tuning ImageNet weights wants about "
                                             "3e-5", 1e-3)
    lr_scale: float = _train_field("lr_scale", "multiplies every rate", 1.0)
    batch_size: int = _train_field("batch_size", "per process", 16)
    crop: int = _train_field("crop", "training/eval crop side", 96)
    resize: int = _train_field("resize", "short side before cropping", 108)
    workers: int = _train_field("workers", "loader processes: each seeds its own sample shuffle, so the count "
                                           "changes the data order", 1)
    nproc: int = ranged_field(1, NPROC, ">1: torchrun --nproc-per-node; changes the effective batch "
                                        "(batch_size x nproc)")
    device: str = ""  # empty: cuda when available
    negatives: float = _train_field("negatives", "blank and broken renders labelled score 1", 0.0)
    # `pipe:` URLs in the shard indexes run shell commands: only when the operator says so. Not a hyperparameter:
    # it changes where bytes come from, not what the run computes.
    allow_pipe: bool = False
    launch: LaunchConfig = LaunchConfig()
    # Before launch settings had a section of their own they sat at the top level; such run configs still work.
    launcher: str | None = Field(None, description="moved: use launch.launcher")
    k8s_image: str | None = Field(None, description="moved: use launch.k8s_image")
    k8s_namespace: str | None = Field(None, description="moved: use launch.k8s_namespace")
    k8s_gpus: int | None = ranged_field(None, K8S_GPUS, "moved: use launch.k8s_gpus")
    k8s_pvc_claim: str | None = Field(None, description="moved: use launch.k8s_pvc_claim")
    k8s_node_selector: dict[str, str] | None = Field(None, description="moved: use launch.k8s_node_selector")
    k8s_tolerations: list[Toleration] | None = Field(None, description="moved: use launch.k8s_tolerations")

    def hyperparameters(self) -> dict[str, Any]:
        """Everything that changes what the run computes: what its run key and model card record."""
        return self.model_dump(exclude={"launch", "allow_pipe", *MOVED_TO_LAUNCH})

    def launch_settings(self) -> LaunchConfig:
        """`launch`, with any setting an older run config gave at the top level."""
        moved = {name: getattr(self, name) for name in MOVED_TO_LAUNCH if getattr(self, name) is not None}
        return self.launch.model_copy(update=moved) if moved else self.launch


class SacTrainConfig(TrainConfig):
    epochs_full: int = _train_field("epochs_full", "phase 2: the whole network trains", 1)
    lr_scale: float = _train_field("lr_scale", "multiplies every rate: fine-tuning halves them", 0.5)


class ColorTrainConfig(TrainConfig):
    epochs_full: int = _train_field("epochs_full", "phase 2: the whole network trains", 7)
    lr_scale: float = _train_field("lr_scale", "multiplies every rate: fine-tuning halves them", 0.5)
    negatives: float = _train_field("negatives", "blank white and broken renders labelled score 1, as the "
                                                 "notebook did", 0.1)


def train_asset(context: dg.AssetExecutionContext, config: TrainConfig, storage: StorageResource,
                warehouse: WarehouseResource, name: str, datasets: list[str],
                parent_name: str | None) -> dg.MaterializeResult:
    parent = None
    if parent_name:
        with warehouse.connect() as conn:
            parent = latest_model(conn, parent_name)
        if parent is None:
            raise RuntimeError(f"{name} starts from {parent_name}, which has no recorded model: materialise it first")
    run = TrainingRun(name, [storage.shards_dir(d) / "train" for d in datasets],
                      [storage.shards_dir(d) / "val" for d in datasets], parent.version if parent else None,
                      storage.from_stored(parent.checkpoint_path) if parent else None)
    hp = config.hyperparameters()
    run_dir = storage.models_dir() / name / "runs" / run_key(run, hp)
    command = train_command(run, hp, run_dir, allow_pipe=config.allow_pipe)
    context.log.info("training: " + " ".join(command))
    summary = launch(context, config.launch_settings(), command, str(storage.home_path))
    if not summary:  # Pipes messages are the fast path; the file is what the run always leaves
        summary = json.loads((run_dir / "summary.json").read_text())
    model = publish_model(run, hp, run_dir, summary, storage.models_dir(), storage.to_stored)
    row = ModelRow(model.version, name, run.parent_version, storage.to_stored(model.checkpoint), model.sha256,
                   model.card)
    with warehouse.connect() as conn:
        record_model(conn, row)
    final = summary.get("final", {})
    return dg.MaterializeResult(
        data_version=dg.DataVersion(row.version),
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
        },
    )


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


@dg.asset(group_name="training", deps=["ava_shards"], pool="gpu", code_version=CODE_VERSION)
def nima_ava(context: dg.AssetExecutionContext, config: TrainConfig, storage: StorageResource,
             warehouse: WarehouseResource) -> dg.MaterializeResult:
    """NIMA trained on the AVA shards (head first, then the whole network)."""
    return train_asset(context, config, storage, warehouse, "nima_ava", ["ava"], None)


@dg.asset(group_name="training", deps=["sac_shards", "nima_ava"], pool="gpu", code_version=CODE_VERSION)
def nima_sac(context: dg.AssetExecutionContext, config: SacTrainConfig, storage: StorageResource,
             warehouse: WarehouseResource) -> dg.MaterializeResult:
    """nima_ava fine-tuned on SAC (1 epoch at half the learning rate by default)."""
    return train_asset(context, config, storage, warehouse, "nima_sac", ["sac"], "nima_ava")


@dg.asset(group_name="training", deps=["kuler_shards", "nima_sac"], pool="gpu", code_version=CODE_VERSION)
def nima_color(context: dg.AssetExecutionContext, config: ColorTrainConfig, storage: StorageResource,
               warehouse: WarehouseResource) -> dg.MaterializeResult:
    """nima_sac fine-tuned on Kuler themes plus blank/broken negatives (7 epochs at half the learning rate)."""
    return train_asset(context, config, storage, warehouse, "nima_color", ["kuler"], "nima_sac")
