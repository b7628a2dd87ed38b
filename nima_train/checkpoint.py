"""Checkpoints: everything needed to resume or to serve, loadable with weights_only=True.

A checkpoint is a dict: "model" (state dict of the unwrapped NIMA), "args" (plain
dict with at least "backbone"), and for training runs "optimizer", "scheduler",
"epoch", "phase"; a final model.pt trained with a validation split also holds "calibration"
(nima_train.calibration.Calibration.as_dict()). It is written to a temporary name and renamed into place, so a
kill never leaves a half-written file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_path
from common.regular_files import open_regular
from nima_train.calibration import Calibration
from nima_train.model import NIMA


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


class NotACheckpoint(ValueError):
    """A file that is not a checkpoint this project wrote; str(exc) is one line naming the file."""


def _first_line(exc: BaseException) -> str:
    """The exception's first sentence: torch's loader errors run to a paragraph of advice."""
    lines = str(exc).strip().splitlines()
    sentence = lines[0].split(". ", 1)[0].strip().rstrip(".:")[:200] if lines else ""
    return f"{type(exc).__name__}: {sentence}" if sentence else type(exc).__name__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with open_regular(path) as fh:  # NotRegularFile (a FIFO, a device) says so itself
        try:
            with warnings.catch_warnings():
                # A foreign pickle makes torch warn about its protocol before failing; the failure says enough.
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(fh, map_location=map_location, weights_only=True)
        except Exception as exc:  # torch.load fails on foreign bytes with anything from EOFError to OSError(EINVAL)
            raise NotACheckpoint(f"{path} is not a readable checkpoint ({_first_line(exc)})") from exc
    if not isinstance(state, dict):
        raise NotACheckpoint(f"{path} holds a {type(state).__name__}, not a checkpoint (a dict with 'model')")
    return state


def model_from_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> NIMA:
    """A NIMA with the checkpoint's backbone and weights, in eval mode."""
    return model_from_state(load_checkpoint(path, map_location), path)


def model_from_state(state: dict[str, Any], path: str | Path) -> NIMA:
    """model_from_checkpoint for a checkpoint already loaded (its args or calibration read too): one read."""
    args = state.get("args") or {}
    if "model" not in state or not isinstance(args, dict) or "backbone" not in args:
        raise NotACheckpoint(f"{path} is not a NIMA checkpoint (needs 'model' and args.backbone)")
    try:
        model = NIMA(args["backbone"], weights="none", dropout=float(args.get("dropout", 0.75)))
        model.load_state_dict(state["model"])
    except (ValueError, TypeError, RuntimeError) as exc:  # unknown backbone, weights of another shape
        raise NotACheckpoint(f"{path} does not hold NIMA weights ({_first_line(exc)})") from exc
    return model.eval()


def calibration_of(state: dict[str, Any]) -> Calibration | None:
    """The calibration a loaded checkpoint carries; None for one saved without (older or no validation split)."""
    stored = state.get("calibration")
    return Calibration.from_dict(stored) if stored else None
