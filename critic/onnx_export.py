"""A model version exported to ONNX (`aesthetic export`, the `critic_onnx` asset), and an export opened for ONNX
Runtime (critic/backends.py) only once it is verified to be the model it claims.

FILE holds the graph: input `image` (batch, 3, S, S) float32, ImageNet-normalised; outputs `probs` (batch, 10)
and `features` (batch, D), the pooled backbone features near-duplicate search and the leak check use; the batch
axis is dynamic. FILE.json, the sidecar, holds what makes the export score exactly like its checkpoint: the
model's identity (version, name, backbone, checkpoint sha256, input size and resize, normalisation), its
calibration, and FILE's sha256, opset and exporter. Before anything is published the exported graph is run by
ONNX Runtime on a probe batch and compared with PyTorch, so a wrong export is refused rather than recorded.
Both files are written under temporary names and renamed into place; the warehouse row (table `exports`) comes
last, so an export exists for `--backend auto` only once it is whole.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_path, write_atomic
from common.imaging import sha256_file
from critic.backends import OrtBackend
from critic.scoring import Critic
from nima_train.calibration import Calibration
from nima_train.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from warehouse.models_lookup import ResolvedModel

SIDECAR_FORMAT = 1
# How far ONNX Runtime's outputs may be from PyTorch's on the probe batch (float32 kernels differ in rounding).
PROBE_PROBS_TOL = 1e-4
PROBE_FEATURES_TOL = 1e-3  # relative to the largest feature


class ExportRefused(RuntimeError):
    """The exporter could not export this model (or its graph scores differently); one line."""


class ExportInvalid(ValueError):
    """A file that is not the verified export it claims to be; str(exc) is one line naming it."""


def sidecar_path(path: str | Path) -> Path:
    return Path(f"{path}.json")


class _TwoOutputs(torch.nn.Module):
    """NIMA with both outputs a critic needs: the distribution and the features under it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.embed(image)
        return torch.softmax(self.model.head(features), dim=-1), features


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:240]}" if lines else type(exc).__name__


def _run_exporter(module: torch.nn.Module, dest: Path, side: int, opset: int, exporter: str) -> None:
    import warnings

    example = (torch.zeros(2, 3, side, side),)
    names = {"input_names": ["image"], "output_names": ["probs", "features"]}
    # The exporters narrate on stdout; a verb's stdout is its result.
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(module, example, str(dest), dynamo=True, opset_version=opset, external_data=False,
                              dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=4096)}},
                              verbose=False, **names)
        else:
            torch.onnx.export(module, example, str(dest), dynamo=False, opset_version=opset,
                              dynamic_axes={n: {0: "batch"} for n in ("image", "probs", "features")}, **names)


def _probe(side: int) -> torch.Tensor:
    """Three fixed smooth pseudo-pictures (a batch other than the example's 2, so the dynamic axis is exercised).
    Smooth, not pixel noise: on noise a network's activations leave the range its BatchNorm statistics were
    measured on, and float rounding is amplified into differences no picture would show."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(3, 3, 6, 6, generator=g) * 255
    fine = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)
    return normalize(fine.clamp(0, 255).round().to(torch.uint8))


def _check_opset(path: Path, opset: int, exporter: str) -> None:
    """The torch.export-based exporter falls back to its own opset when converting to the one asked fails (it
    logs and goes on); a sidecar must not claim an opset the file is not."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    actual = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if actual != opset:
        raise ExportRefused(f"the {exporter} exporter wrote opset {actual}, not the {opset} asked")


def _check_same_scores(path: Path, critic: Critic) -> None:
    x = _probe(critic.image_size)
    ort_probs, ort_feats = OrtBackend(path, critic.backend.feature_dim, threads=1).run(x)
    probs, feats = critic.backend.run(x)
    dp = float((ort_probs - probs).abs().max())
    df = float((ort_feats - feats).abs().max()) / max(1.0, float(feats.abs().max()))
    if dp > PROBE_PROBS_TOL or df > PROBE_FEATURES_TOL:
        raise ExportRefused(f"the exported graph scores differently from the checkpoint (probabilities differ by "
                            f"{dp:.2e}, features by {df:.2e} relative)")


@dataclass(frozen=True)
class Exported:
    path: Path
    sha256: str
    opset: int
    exporter: str
    sidecar: dict[str, Any]


def _sidecar(critic: Critic, model: ResolvedModel, sha: str, size: int, opset: int, exporter: str,
             out: Path) -> dict[str, Any]:
    return {
        "format": SIDECAR_FORMAT,
        "model": {"version": model.version, "name": model.name, "backbone": critic.model.backbone_name,
                  "checkpoint_sha256": model.sha256, "image_size": critic.image_size, "resize": critic.resize,
                  "feature_dim": critic.backend.feature_dim,
                  "normalization": {"scale": "uint8 / 255", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}},
        "calibration": critic.calibration.as_dict() if critic.calibration else None,
        "onnx": {"file": out.name, "sha256": sha, "bytes": size, "opset": opset, "exporter": exporter,
                 "torch": torch.__version__, "input": "image", "outputs": ["probs", "features"],
                 "dynamic_axes": "batch (axis 0) of every input and output"},
    }


def export_onnx(critic: Critic, model: ResolvedModel, out: str | Path, opset: int, exporter: str) -> Exported:
    """Write out and its sidecar for a torch-backed critic of model; ExportRefused (nothing written) when the
    exporter refuses the model or its graph scores differently."""
    out = Path(out)
    if critic.model is None:
        raise ValueError("export needs the critic's PyTorch model (the torch backend)")
    module = _TwoOutputs(critic.model).eval()
    side = sidecar_path(out)
    with atomic_path(out) as tmp:
        try:
            _run_exporter(module, tmp, critic.image_size, opset, exporter)
        except Exception as exc:  # noqa: BLE001 - the exporters fail with anything from their many layers
            raise ExportRefused(f"the {exporter} exporter refuses {critic.model.backbone_name} at opset {opset}: "
                                f"{_first_line(exc)}") from exc
        _check_opset(tmp, opset, exporter)
        _check_same_scores(tmp, critic)
        sha = sha256_file(tmp)
        card = _sidecar(critic, model, sha, tmp.stat().st_size, opset, exporter, out)
        write_atomic(side, (json.dumps(card, indent=1, sort_keys=True) + "\n").encode())
    return Exported(out, sha, opset, exporter, card)


def read_sidecar(path: str | Path) -> dict[str, Any]:
    side = sidecar_path(path)
    try:
        card = json.loads(side.read_text())
        if card.get("format") != SIDECAR_FORMAT or not {"model", "onnx"} <= card.keys():
            raise ValueError("unknown format")
        return card
    except FileNotFoundError:
        raise ExportInvalid(f"{path} has no sidecar {side.name}: not an export this project wrote") from None
    except (OSError, ValueError, AttributeError) as exc:
        raise ExportInvalid(f"{side} is not an export sidecar ({_first_line(exc)})") from None


def verified_sidecar(path: str | Path, expected_sha256: str | None = None,
                     checkpoint_sha256: str | None = None) -> dict[str, Any]:
    """The sidecar of an export whose file is the one exported (its sha256, and the warehouse's when given) of
    the checkpoint given; ExportInvalid with one line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ExportInvalid(f"ONNX export {path} does not exist")
    card = read_sidecar(path)
    actual, claimed = sha256_file(path), card["onnx"].get("sha256")
    if actual != claimed or (expected_sha256 and actual != expected_sha256):
        raise ExportInvalid(f"ONNX export {path} has sha256 {actual[:12]}..., its sidecar says {str(claimed)[:12]}..."
                            + (f" and the warehouse {expected_sha256[:12]}..." if expected_sha256 else "")
                            + ": the file is not the one exported (truncated or replaced)")
    pinned = card["model"].get("checkpoint_sha256")
    if checkpoint_sha256 and pinned != checkpoint_sha256:
        raise ExportInvalid(f"ONNX export {path} is of checkpoint {str(pinned)[:12]}..., the model's is "
                            f"{checkpoint_sha256[:12]}...: export that model again")
    return card


def open_export(path: str | Path, expected_sha256: str | None = None, checkpoint_sha256: str | None = None,
                threads: int | None = None, batch_size: int = 32, image_size: int | None = None,
                resize: int | None = None) -> Critic:
    """The critic of a verified export on ONNX Runtime; ExportInvalid with one line for a file that is not one.
    image_size/resize, when given, must be the export's (its input side is fixed)."""
    card = verified_sidecar(path, expected_sha256, checkpoint_sha256)
    info = card["model"]
    if image_size is not None and (image_size, resize or info["resize"]) != (info["image_size"], info["resize"]):
        raise ExportInvalid(f"ONNX export {path} takes {info['image_size']} px inputs (resize {info['resize']}), "
                            f"not {image_size} px (resize {resize})")
    try:
        backend = OrtBackend(path, int(info["feature_dim"]), threads)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types for foreign or broken graphs
        raise ExportInvalid(f"ONNX Runtime cannot load {path}: {_first_line(exc)}") from None
    names = ([i.name for i in backend.session.get_inputs()], [o.name for o in backend.session.get_outputs()])
    if names != (["image"], ["probs", "features"]):
        raise ExportInvalid(f"{path} has inputs {names[0]} and outputs {names[1]}, not a NIMA export "
                            "(image -> probs, features)")
    calibration = Calibration.from_dict(card["calibration"]) if card.get("calibration") else None
    return Critic(backend, image_size=int(info["image_size"]), resize=int(info["resize"]), batch_size=batch_size,
                  version=info["version"], calibration=calibration)
