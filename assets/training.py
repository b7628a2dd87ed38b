"""Asset group `training`: nima_ava -> nima_sac -> nima_color, each a `python -m nima_train.train` run.

The training itself runs out of process through Dagster Pipes: locally with PipesSubprocessClient (or
torchrun with N processes), on a cluster with PipesK8sClient on a GPU node. Each finished run is published
content-addressed under $AESTHETIC_HOME/models/<name>/<sha256[:12]>/ (model.pt + model_card.json), recorded in
the `models` table, and that version is the asset's data version. Runs live under models/<name>/runs/<key>/,
keyed by inputs and config, so a run killed mid-way resumes from its last epoch when launched again.
"""


import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from assets.launch import MOVED_TO_LAUNCH, LaunchConfig, Toleration, launch
from assets.resources import StorageResource, WarehouseResource
from nima_train.atomic import write_atomic
from warehouse.models import ModelRow, latest_model, record_model

# Bump when nima_train's training code changes in a way that makes old models stale.
CODE_VERSION = "nima-train-1"
INDEX_NAME = "index.json"


class TrainConfig(dg.Config):
    """What a run computes: hyperparameters, input size, and how many processes share the batch. These are the
    run's identity (its run folder and resume point); where it runs is `launch`.

    Defaults train from scratch at a small size on a CPU (the demo); a GPU run sets weights=imagenet, crop=224.
    """

    backbone: str = "mobilenet_v2"
    weights: str = "none"  # "imagenet" needs torchvision's weights in the torch cache (no download here)
    loss: str = "paper"
    opt: str = "adam"
    epochs_head: int = 0
    epochs_full: int = 12
    lr_head: float = 1e-3
    lr_full: float = 1e-3  # from scratch; fine-tuning ImageNet weights wants about 3e-5
    lr_scale: float = 1.0
    batch_size: int = 16
    crop: int = 96
    resize: int = 108
    workers: int = 1  # loader processes: each seeds its own sample shuffle, so the count changes the data order
    nproc: int = 1  # >1: torchrun --nproc-per-node; changes the effective batch (batch_size x nproc)
    device: str = ""  # empty: cuda when available
    negatives: float = 0.0  # blank and broken renders labelled score 1, as a fraction of the training set
    launch: LaunchConfig = LaunchConfig()
    # Before launch settings had a section of their own they sat at the top level; such run configs still work.
    launcher: str | None = Field(None, description="moved: use launch.launcher")
    k8s_image: str | None = Field(None, description="moved: use launch.k8s_image")
    k8s_namespace: str | None = Field(None, description="moved: use launch.k8s_namespace")
    k8s_gpus: int | None = Field(None, description="moved: use launch.k8s_gpus")
    k8s_pvc_claim: str | None = Field(None, description="moved: use launch.k8s_pvc_claim")
    k8s_node_selector: dict[str, str] | None = Field(None, description="moved: use launch.k8s_node_selector")
    k8s_tolerations: list[Toleration] | None = Field(None, description="moved: use launch.k8s_tolerations")

    def hyperparameters(self) -> dict[str, Any]:
        """Everything that changes what the run computes: what its run key and model card record."""
        return self.model_dump(exclude={"launch", *MOVED_TO_LAUNCH})

    def launch_settings(self) -> LaunchConfig:
        """`launch`, with any setting an older run config gave at the top level."""
        moved = {name: getattr(self, name) for name in MOVED_TO_LAUNCH if getattr(self, name) is not None}
        return self.launch.model_copy(update=moved) if moved else self.launch


class SacTrainConfig(TrainConfig):
    epochs_full: int = 1
    lr_scale: float = 0.5


class ColorTrainConfig(TrainConfig):
    epochs_full: int = 7
    lr_scale: float = 0.5
    negatives: float = 0.1  # blank white and broken renders labelled score 1, as the notebook did


@dataclass(frozen=True)
class TrainingJob:
    name: str
    train: list[Path]
    val: list[Path]
    parent: ModelRow | None  # checkpoint_path absolute


def shards_digest(dirs: list[Path]) -> str:
    """Hash of the index files a run reads: what the model card calls the shard index hash."""
    h = hashlib.sha256()
    for d in dirs:
        index = d / INDEX_NAME
        if not index.is_file():
            raise FileNotFoundError(f"no shard index at {index}: materialise the shards first")
        h.update(str(d).encode() + b"\0" + index.read_bytes())
    return h.hexdigest()


def train_command(job: TrainingJob, config: TrainConfig, run_dir: Path) -> list[str]:
    """The exact `python -m nima_train.train` (or torchrun) command line of a run."""
    if config.nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={config.nproc}"]
    else:
        launcher = [sys.executable]
    weights = job.parent.checkpoint_path if job.parent else config.weights  # the chain starts from the parent
    args = [
        "-m", "nima_train.train", "--data", *map(str, job.train), "--val-data", *map(str, job.val),
        "--output-dir", str(run_dir), "--backbone", config.backbone, "--weights", weights,
        "--loss", config.loss, "--opt", config.opt, "--epochs-head", str(config.epochs_head),
        "--epochs-full", str(config.epochs_full), "--lr-head", str(config.lr_head),
        "--lr-full", str(config.lr_full), "--lr-scale", str(config.lr_scale),
        "--batch-size", str(config.batch_size), "--crop", str(config.crop), "--resize", str(config.resize),
        "--workers", str(config.workers), "--no-progress",
        "--negatives", str(config.negatives),
    ]
    if config.device:
        args += ["--device", config.device]
    return launcher + args


def run_key(job: TrainingJob, config: TrainConfig) -> str:
    """Same inputs and config -> same run folder, so a killed run resumes instead of starting over."""
    doc = {"config": config.hyperparameters(), "train": shards_digest(job.train), "val": shards_digest(job.val),
           "parent": job.parent.version if job.parent else None, "code": CODE_VERSION}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def publish_model(storage: StorageResource, job: TrainingJob, config: TrainConfig, run_dir: Path,
                  summary: dict[str, Any]) -> ModelRow:
    """Copy run_dir/model.pt to models/<name>/<sha256[:12]>/ beside its model card; the row to record."""
    payload = (run_dir / "model.pt").read_bytes()
    sha = hashlib.sha256(payload).hexdigest()
    version = sha[:12]
    dest = storage.models_dir() / job.name / version
    if not (dest / "model.pt").exists():  # pid-unique temp + rename: two publishers never share a half file
        write_atomic(dest / "model.pt", payload)
    final = summary.get("final", {})
    card = {
        "name": job.name, "version": version, "sha256": sha,
        "parent_version": job.parent.version if job.parent else None,
        "shards": {"train": [storage.to_stored(d) for d in job.train], "val": [storage.to_stored(d) for d in job.val]},
        "shard_index_sha256": {"train": shards_digest(job.train), "val": shards_digest(job.val)},
        "hyperparameters": config.hyperparameters(), "code_version": CODE_VERSION, "git_commit": git_commit(),
        "metrics": {k: v for k, v in final.items() if k.startswith("val_") or k == "loss"},
        "n_train": summary.get("n_train"), "history": summary.get("history", []),
    }
    write_atomic(dest / "model_card.json", json.dumps(card, indent=2, sort_keys=True, default=str).encode())
    return ModelRow(version, job.name, card["parent_version"], storage.to_stored(dest / "model.pt"), sha, card)


def train_asset(context: dg.AssetExecutionContext, config: TrainConfig, storage: StorageResource,
                warehouse: WarehouseResource, name: str, datasets: list[str],
                parent_name: str | None) -> dg.MaterializeResult:
    parent = None
    if parent_name:
        with warehouse.connect(read_only=False) as conn:
            parent = latest_model(conn, parent_name)
        if parent is None:
            raise RuntimeError(f"{name} starts from {parent_name}, which has no recorded model: materialise it first")
        parent = ModelRow(parent.version, parent.name, parent.parent_version,
                          str(storage.from_stored(parent.checkpoint_path)), parent.sha256, parent.config)
    job = TrainingJob(name, [storage.shards_dir(d) / "train" for d in datasets],
                      [storage.shards_dir(d) / "val" for d in datasets], parent)
    run_dir = storage.models_dir() / name / "runs" / run_key(job, config)
    command = train_command(job, config, run_dir)
    context.log.info("training: " + " ".join(command))
    summary = launch(context, config.launch_settings(), command, str(storage.home_path))
    if not summary:  # Pipes messages are the fast path; the file is what the run always leaves
        summary = json.loads((run_dir / "summary.json").read_text())
    row = publish_model(storage, job, config, run_dir, summary)
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
            "seconds": round(sum(h.get("seconds", 0.0) for h in summary.get("history", [])), 1),
            "run_dir": dg.MetadataValue.path(str(run_dir)),
        },
    )


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
