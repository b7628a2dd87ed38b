"""A training run as the pipeline launches it: its inputs, its command line, its identity, and publishing
the model it produced. No Dagster here: the training assets call these.

A run's folder is keyed by what it computes (hyperparameters, the shard indexes it reads, its parent model and
the code version), so a run killed mid-way resumes from its last epoch when it is launched again, by whatever
launcher. A finished model is published content-addressed: models/<name>/<sha256[:12]>/model.pt + model_card.json.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import write_atomic
from common.regular_files import read_regular_file
from common.shard_format import INDEX_NAME

# Bump when nima_train's training code changes in a way that makes old models stale.
CODE_VERSION = "nima-train-1"


@dataclass(frozen=True)
class TrainingRun:
    name: str
    train: list[Path]  # split folders, each with an index.json
    val: list[Path]
    parent_version: str | None = None  # the model this run starts from, if any
    parent_checkpoint: Path | None = None


@dataclass(frozen=True)
class PublishedModel:
    version: str  # sha256[:12] of model.pt
    sha256: str
    checkpoint: Path
    card: dict[str, Any]


def shards_digest(dirs: list[Path]) -> str:
    """Hash of the index files a run reads: what the model card calls the shard index hash."""
    h = hashlib.sha256()
    for d in dirs:
        index = d / INDEX_NAME
        if not index.is_file():
            raise FileNotFoundError(f"no shard index at {index}: materialise the shards first")
        h.update(str(d).encode() + b"\0" + read_regular_file(index))
    return h.hexdigest()


def train_command(run: TrainingRun, hp: dict[str, Any], run_dir: Path, allow_pipe: bool = False) -> list[str]:
    """The exact `python -m nima_train.train` (or torchrun) command line of a run with hyperparameters hp;
    allow_pipe adds --allow-pipe (`pipe:` URLs in the shard indexes may run)."""
    if hp["nproc"] > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={hp['nproc']}"]
    else:
        launcher = [sys.executable]
    weights = str(run.parent_checkpoint) if run.parent_checkpoint else hp["weights"]  # the chain goes on
    args = [
        "-m", "nima_train.train", "--data", *map(str, run.train), "--val-data", *map(str, run.val),
        "--output-dir", str(run_dir), "--backbone", hp["backbone"], "--weights", weights,
        "--loss", hp["loss"], "--opt", hp["opt"], "--epochs-head", str(hp["epochs_head"]),
        "--epochs-full", str(hp["epochs_full"]), "--lr-head", str(hp["lr_head"]),
        "--lr-full", str(hp["lr_full"]), "--lr-scale", str(hp["lr_scale"]),
        "--batch-size", str(hp["batch_size"]), "--crop", str(hp["crop"]), "--resize", str(hp["resize"]),
        "--workers", str(hp["workers"]), "--no-progress", "--negatives", str(hp["negatives"]),
    ]
    if hp["device"]:
        args += ["--device", hp["device"]]
    if allow_pipe:
        args.append("--allow-pipe")
    return launcher + args


def run_key(run: TrainingRun, hp: dict[str, Any]) -> str:
    """Same inputs and hyperparameters -> same run folder, so a killed run resumes instead of starting over."""
    doc = {"config": hp, "train": shards_digest(run.train), "val": shards_digest(run.val),
           "parent": run.parent_version, "code": CODE_VERSION}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def publish_model(run: TrainingRun, hp: dict[str, Any], run_dir: Path, summary: dict[str, Any],
                  models_dir: Path, stored: Any) -> PublishedModel:
    """Copy run_dir/model.pt to models_dir/<name>/<sha256[:12]>/ beside its model card.

    `stored` turns a path into the form the warehouse keeps (relative to AESTHETIC_HOME when inside it).
    """
    payload = (run_dir / "model.pt").read_bytes()
    sha = hashlib.sha256(payload).hexdigest()
    version = sha[:12]
    dest = models_dir / run.name / version
    if not (dest / "model.pt").exists():  # pid-unique temp + rename: two publishers never share a half file
        write_atomic(dest / "model.pt", payload)
    final = summary.get("final", {})
    card = {
        "name": run.name, "version": version, "sha256": sha, "parent_version": run.parent_version,
        "shards": {"train": [stored(d) for d in run.train], "val": [stored(d) for d in run.val]},
        "shard_index_sha256": {"train": shards_digest(run.train), "val": shards_digest(run.val)},
        "hyperparameters": hp, "code_version": CODE_VERSION, "git_commit": git_commit(),
        "metrics": {k: v for k, v in final.items() if k.startswith("val_") or k == "loss"},
        "n_train": summary.get("n_train"), "history": summary.get("history", []),
        # The calibration model.pt holds (map), the split and size it was fitted on, and its effect there.
        "calibration": summary.get("calibration"),
    }
    write_atomic(dest / "model_card.json", json.dumps(card, indent=2, sort_keys=True, default=str).encode())
    return PublishedModel(version, sha, dest / "model.pt", card)
