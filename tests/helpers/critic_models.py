"""A real, deterministic NIMA for the critic tests, and pictures to score with it.

The test model is a real NIMA (mobilenet_v2, weights 'none', fixed seed) whose BatchNorm statistics are measured
on a few generated pictures: an untrained network with default statistics maps every image to features of norm
~1e-8, so its scores would not depend on the image at all.
"""

from __future__ import annotations

import functools
import io
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from critic.scoring import Critic
from ingest.crops import sha256_file
from nima_train.calibration import Calibration
from nima_train.checkpoint import save_checkpoint
from nima_train.model import NIMA, recalibrate_batchnorm
from warehouse.db import connect


def picture(seed: int, side: int = 300) -> Image.Image:
    """A smooth, seed-dependent colour pattern (distinct seeds give clearly different pictures)."""
    r = np.random.default_rng(seed)
    x = np.linspace(0, 1, side)
    img = np.zeros((side, side, 3))
    for k in range(3):
        img[..., k] = np.sin(r.uniform(2, 12) * x[None, :] + r.uniform(0, 6)) * np.cos(r.uniform(2, 12) * x[:, None])
    img = (img - img.min()) / (img.max() - img.min())
    return Image.fromarray((img * 255).astype(np.uint8))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def make_model(seed: int = 0) -> NIMA:
    torch.manual_seed(seed)
    model = NIMA("mobilenet_v2", weights="none")
    calibration = Critic(model, image_size=96).preprocess([picture(1000 + i, 128) for i in range(16)])
    return recalibrate_batchnorm(model, calibration)


@functools.cache
def _model_state(seed: int) -> dict:
    return make_model(seed).state_dict()


def stretching_calibration() -> Calibration:
    """What training fits for a model that squeezes its means towards 5.6 (as the test model does, whose means
    lie within about 5.4..5.9): a line three times as steep around 5.6, with percentiles of a split whose
    calibrated means run 2..9 (the quantiles are of the predicted means, 4.4..6.7)."""
    predicted = 5.6 + (np.linspace(2.0, 9.0, 1001) - 5.6) / 3.0
    return Calibration("linear", (4.6, 6.6), (2.6, 8.6), 3.0, 3.0, tuple(predicted), "val", 500,
                       {"folds": 5, "chosen": "linear", "reason": "a test's fixed map"})


def save_test_checkpoint(path: Path, seed: int = 0, calibration: Calibration | None = None, **train_args) -> Path:
    """A checkpoint as nima_train.train writes it: the state dict plus args (e.g. crop=96, resize=108), and the
    calibration when given."""
    state = {"model": _model_state(seed), "args": {"backbone": "mobilenet_v2", "dropout": 0.75, **train_args}}
    if calibration is not None:
        state["calibration"] = calibration.as_dict()
    save_checkpoint(path, state)
    return path


def register_model(home: Path, name: str = "nima_color", seed: int = 0, alias: str | None = "production",
                   calibration: Calibration | None = None, **train_args) -> str:
    """Save a checkpoint content-addressed under home/models and record its `models` (and alias) row."""
    tmp = save_test_checkpoint(home / "tmp-model.pt", seed, calibration, **train_args)
    sha = sha256_file(tmp)
    version = sha[:12]
    dest = home / "models" / name / version / "model.pt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(tmp, dest)
    with connect(home / "warehouse.duckdb") as conn:
        conn.execute(
            "INSERT OR REPLACE INTO models (version, name, parent_version, checkpoint_path, sha256, config)"
            " VALUES (?, ?, NULL, ?, ?, ?)",
            [version, name, str(dest.relative_to(home)), sha, '{"backbone": "mobilenet_v2"}'],
        )
        if alias:
            conn.execute("INSERT OR REPLACE INTO model_aliases (alias, version) VALUES (?, ?)", [alias, version])
    return version
