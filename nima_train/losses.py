"""Earth Mover's Distance between score distributions (NIMA, eq. 1)."""

from __future__ import annotations

import torch


def emd(p: torch.Tensor, q: torch.Tensor, r: float = 2.0) -> torch.Tensor:
    """Per-sample EMD_r: (mean over bins of |CDF_p - CDF_q|^r)^(1/r); shape (batch,)."""
    cdf_diff = torch.cumsum(p, dim=-1) - torch.cumsum(q, dim=-1)
    mean_power = cdf_diff.abs().pow(r).mean(dim=-1)
    # The root's derivative is infinite at 0: a sample whose CDFs coincide exactly (in float32, a softmax saturated
    # onto a one-hot target) gave 0 x inf = NaN gradients, and the optimiser step after it NaN weights. There the
    # EMD is at its minimum, so its gradient is 0; the root is taken only where the mean is positive (both wheres:
    # the masked branch must not produce the infinity either). Values elsewhere are unchanged, bit for bit.
    zero = mean_power == 0
    root = torch.where(zero, torch.ones_like(mean_power), mean_power).pow(1.0 / r)
    return torch.where(zero, torch.zeros_like(mean_power), root)


def emd_loss(pred: torch.Tensor, target: torch.Tensor, r: float = 2.0) -> torch.Tensor:
    """The paper's loss: EMD with r=2 per sample, root taken, mean over the batch."""
    return emd(pred, target, r).mean()


def notebook_emd_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The original notebook's variant, kept for comparison: squared, no root, summed over the batch."""
    cdf_diff = torch.cumsum(pred, dim=-1) - torch.cumsum(target, dim=-1)
    return cdf_diff.pow(2).mean(dim=-1).sum()
