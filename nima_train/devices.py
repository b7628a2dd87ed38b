"""The --device argument type of the training and evaluation command lines, checked by torch."""

from __future__ import annotations

import argparse


def torch_device(text: str) -> str:
    """A torch device name: cpu, cuda, cuda:N, mps, ... (checked by torch, imported only here)."""
    import torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. cpu, cuda, cuda:0)") from None
    return text
