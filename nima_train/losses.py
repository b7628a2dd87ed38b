"""Earth Mover's Distance between score distributions (NIMA, eq. 1)."""

from __future__ import annotations

import torch


def emd(p: torch.Tensor, q: torch.Tensor, r: float = 2.0) -> torch.Tensor:
    """Per-sample EMD_r: (mean over bins of |CDF_p - CDF_q|^r)^(1/r); shape (batch,)."""
    cdf_diff = torch.cumsum(p, dim=-1) - torch.cumsum(q, dim=-1)
    return cdf_diff.abs().pow(r).mean(dim=-1).pow(1.0 / r)


def emd_loss(pred: torch.Tensor, target: torch.Tensor, r: float = 2.0) -> torch.Tensor:
    """The paper's loss: EMD with r=2 per sample, root taken, mean over the batch."""
    return emd(pred, target, r).mean()


def notebook_emd_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The original notebook's variant, kept for comparison: squared, no root, summed over the batch."""
    cdf_diff = torch.cumsum(pred, dim=-1) - torch.cumsum(target, dim=-1)
    return cdf_diff.pow(2).mean(dim=-1).sum()
