"""Image transforms for NIMA: only crops and flips, never a change that alters the aesthetics."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(size: int = 224) -> v2.Compose:
    """Random `size` crop of the stored 256 crop and a horizontal flip (the paper's augmentation)."""
    return v2.Compose([
        v2.ToImage(),
        v2.RandomCrop(size, pad_if_needed=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(size: int = 224, resize: int = 256) -> v2.Compose:
    """Resize the short side to `resize` (a no-op for stored crops), then the centre `size` crop."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize, antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
