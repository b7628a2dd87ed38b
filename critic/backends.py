"""The one scoring interface: a NIMA's forward pass, run by PyTorch or by ONNX Runtime.

A backend takes a batch of ImageNet-normalised (B, 3, S, S) float images (or uint8 ones it normalises itself)
and gives the 10-bin probabilities and the pooled features, as float32 CPU tensors. critic.scoring.Critic holds
one and does the rest (moments, calibration, batching), so no verb knows which backend runs. Which one runs is
decided once, when critic/models.py loads a critic (`choose`):

- `torch`: the checkpoint in PyTorch, on the CPU or CUDA;
- `onnxruntime`: the model version's recorded ONNX export (critic/onnx_export.py) on ONNX Runtime's CPU
  execution provider; an error with one line when there is none, or it does not verify;
- `auto`: `onnxruntime` on the CPU when the version has a usable export, `torch` otherwise and on CUDA; when an
  export was refused or does not verify it says why in one line and runs `torch`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from common.allocator import keep_freed_memory
from nima_train.model import NIMA
from nima_train.transforms import normalize

Report = Callable[[str], None]


class BackendUnavailable(RuntimeError):
    """The backend asked for cannot run this model; str(exc) is one line saying why."""


class ScoringBackend(Protocol):
    name: str  # "torch" or "onnxruntime"
    device: torch.device
    feature_dim: int
    threads: int | None

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probs (B, 10), features (B, D)), float32 on the CPU, for normalised float images."""
        ...

    def run_uint8(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same for uint8 (B, 3, S, S) images, normalised where the backend computes."""
        ...


class TorchBackend:
    """A NIMA in eval mode on a device: float32 on the CPU; bf16 autocast and channels_last on CUDA."""

    name = "torch"

    def __init__(self, model: NIMA, device: str | torch.device = "cpu", threads: int | None = None) -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.feature_dim = int(model.feature_dim)
        self.threads = threads
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        else:
            keep_freed_memory()
            if threads:
                # Process-wide in PyTorch: the process that loads a critic is the one that scores with it.
                torch.set_num_threads(threads)

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            x = x.to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return self._forward(x.contiguous(memory_format=torch.channels_last))
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # NIMA.forward is softmax(head(embed(x))); split here so one pass also yields the features.
        features = self.model.embed(x)
        probs = torch.softmax(self.model.head(features), dim=-1)
        return probs.float().cpu(), features.float().cpu()

    def run_uint8(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.type == "cuda":  # normalise on the GPU: the loader ships uint8, a quarter of the bytes
            return self.run(normalize(images.to(self.device, non_blocking=True)))
        return self.run(normalize(images))


class OrtBackend:
    """An exported NIMA (inputs `image`, outputs `probs` and `features`) on ONNX Runtime's CPU provider."""

    name = "onnxruntime"
    device = torch.device("cpu")

    def __init__(self, path: str | Path, feature_dim: int, threads: int | None = None) -> None:
        import onnxruntime as ort  # only when an export is scored

        keep_freed_memory()  # the batch's input array is allocated by NumPy, outside ONNX Runtime's arena
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one graph at a time: parallelism is inside each operator
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle intra-op threads sleep rather than spin: the cores are shared with decode workers and the
        # service's threads (spinning made one-image requests 3x slower at p95, docs/critic.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.feature_dim, self.threads = feature_dim, threads

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        probs, features = self.session.run(["probs", "features"], {"image": array})
        return torch.from_numpy(probs), torch.from_numpy(features)

    def run_uint8(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.run(normalize(images))


def choose(backend: str, device: str | torch.device, export_reason: str | None, report: Report) -> str:
    """"torch" or "onnxruntime" for the backend asked (auto, torch, onnxruntime) on this device, given why the
    model's export cannot be scored (None: it can). BackendUnavailable when onnxruntime is asked and cannot run;
    under auto, report() gets the one line when an export exists but cannot be used."""
    if backend == "torch":
        return "torch"
    on_cuda = torch.device(device).type == "cuda"
    if backend == "onnxruntime":
        if on_cuda:
            raise BackendUnavailable("the onnxruntime backend runs on the CPU; use --backend torch on CUDA")
        if export_reason:
            raise BackendUnavailable(export_reason)
        return "onnxruntime"
    if on_cuda:
        return "torch"
    if export_reason is None:
        return "onnxruntime"
    if not export_reason.startswith(NO_EXPORT):
        report(f"{export_reason}; scoring with torch")
    return "torch"


NO_EXPORT = "no ONNX export"  # the start of the reason that is no fault: auto then runs torch without a word
