"""The --device argument type of the training and evaluation command lines, checked by torch, and the record of
where a run trained."""

from __future__ import annotations

import argparse
import os


def torch_device(text: str) -> str:
    """A torch device name: cpu, cuda, cuda:N, mps, ... (checked by torch, imported only here)."""
    import torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. cpu, cuda, cuda:0)") from None
    return text


def trained_on(device: str) -> dict[str, str]:
    """Where this process trains: the operator's name for the host (AESTHETIC_WORKER, "" when unset), the host,
    the device (cuda:0 or cpu) and its name, and the torch and CUDA versions. Recorded on the model card and in
    `models`; never part of the run key, the checkpoint or the model version."""
    import platform
    import socket

    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
        name = torch.cuda.get_device_name(dev)
    else:
        name = _cpu_name() or platform.processor() or platform.machine()
    return {"worker": os.environ.get("AESTHETIC_WORKER", ""), "host": socket.gethostname(), "device": str(dev),
            "device_name": name, "torch_version": torch.__version__, "cuda_version": torch.version.cuda or ""}


def _cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), or "" where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
