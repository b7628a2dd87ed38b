"""A training run as the pipeline launches it: its inputs, its command line, its identity, and publishing
the model it produced. No Dagster here: the training assets call these.

A run's folder is keyed by what it computes (the whole resolved spec, nima_train/settings.TrainSettings, and the
process count; the shard indexes it reads; its parent model; the code version), so a run killed mid-way resumes
from its last epoch when it is launched again, by whatever launcher. A finished model is published
content-addressed: models/<name>/<sha256[:12]>/model.pt + model_card.json.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from common.atomic import write_atomic
from common.regular_files import read_regular_file
from common.shard_format import INDEX_NAME
from nima_train.settings import TrainSettings

# Bump when nima_train's training code changes what a run computes from the same spec and inputs. A new or changed
# setting needs no bump: every field of the spec is in the run key and on the model card.
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


def hyperparameters(spec: TrainSettings, nproc: int = 1) -> dict[str, Any]:
    """A run's identity besides its inputs and parent: every field of the resolved spec, and how many processes
    share the batch (the effective batch is batch_size x nproc)."""
    return {**spec.identity(), "nproc": nproc}


def train_command(run: TrainingRun, hp: dict[str, Any], run_dir: Path, allow_pipe: bool = False,
                  device: str = "") -> list[str]:
    """The exact `python -m nima_train.train` (or torchrun) command line of a run with hyperparameters hp (see
    hyperparameters()): every spec field as its flag. allow_pipe adds --allow-pipe (`pipe:` URLs in the shard
    indexes may run); device, when given, --device."""
    if hp["nproc"] > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={hp['nproc']}"]
    else:
        launcher = [sys.executable]
    spec = TrainSettings.from_mapping(hp)
    if run.parent_checkpoint:  # the chain goes on
        spec = replace(spec, weights=str(run.parent_checkpoint))
    args = ["-m", "nima_train.train", "--data", *map(str, run.train), "--val-data", *map(str, run.val),
            "--output-dir", str(run_dir), *spec.flags(), "--no-progress"]
    if device:
        args += ["--device", device]
    if allow_pipe:
        args.append("--allow-pipe")
    return launcher + args


def run_key(run: TrainingRun, hp: dict[str, Any]) -> str:
    """Same inputs and hyperparameters -> same run folder, so a killed run resumes instead of starting over."""
    doc = {"config": hp, "train": shards_digest(run.train), "val": shards_digest(run.val),
           "parent": run.parent_version, "code": CODE_VERSION}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def hyperparameters_digest(hp: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(hp, sort_keys=True).encode()).hexdigest()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def publish_model(run: TrainingRun, hp: dict[str, Any], run_dir: Path, summary: dict[str, Any],
                  models_dir: Path, stored: Any, trained_on: dict[str, str] | None = None) -> PublishedModel:
    """Copy run_dir/model.pt to models_dir/<name>/<sha256[:12]>/ beside its model card.

    `stored` turns a path into the form the warehouse keeps (relative to AESTHETIC_HOME when inside it);
    `trained_on` (worker, host, code location, device, versions) goes on the card only: the version is model.pt's.
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
        "hyperparameters": hp, "hyperparameters_sha256": hyperparameters_digest(hp),
        "code_version": CODE_VERSION, "git_commit": git_commit(),
        "metrics": {k: v for k, v in final.items() if k.startswith("val_") or k == "loss"},
        "n_train": summary.get("n_train"), "history": summary.get("history", []),
        # The calibration model.pt holds (map), the split and size it was fitted on, and its effect there.
        "calibration": summary.get("calibration"),
        "trained_on": trained_on if trained_on is not None else summary.get("trained_on"),
    }
    write_atomic(dest / "model_card.json", json.dumps(card, indent=2, sort_keys=True, default=str).encode())
    return PublishedModel(version, sha, dest / "model.pt", card)
