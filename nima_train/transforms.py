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


# Tensor versions of the same crops, for the shard reader's hot path: uint8 (C,H,W) in, uint8 out, by slicing
# (no resampling, no per-call v2 dispatch). Normalisation is left to `normalize`, applied to whole batches
# (on the device when the loader ships uint8).


def random_crop_flip(image: torch.Tensor, size: int = 224) -> torch.Tensor:
    """train_transform's random `size` crop + horizontal flip (p=0.5) on a uint8 (C,H,W) tensor.

    Offsets are uniform like v2.RandomCrop's and drawn from torch's RNG, which DataLoader seeds per worker.
    """
    height, width = image.shape[-2:]
    if height < size or width < size:  # rare (stored crops are 256): keep v2's pad_if_needed behaviour exactly
        return v2.Compose([v2.RandomCrop(size, pad_if_needed=True), v2.RandomHorizontalFlip()])(image)
    top = int(torch.randint(0, height - size + 1, ()))
    left = int(torch.randint(0, width - size + 1, ()))
    crop = image[..., top : top + size, left : left + size]
    return crop.flip(-1) if float(torch.rand(())) < 0.5 else crop


def center_crop(image: torch.Tensor, size: int = 224, resize: int = 256) -> torch.Tensor:
    """eval_transform's crop on a uint8 (C,H,W) tensor: short side to `resize` (skipped when it already is),
    then the centre `size` crop, placed where v2.CenterCrop places it."""
    height, width = image.shape[-2:]
    if min(height, width) != resize:
        image = v2.functional.resize(image, [resize], antialias=True)
        height, width = image.shape[-2:]
    if height < size or width < size:
        return v2.functional.center_crop(image, [size, size])  # pads, like v2.CenterCrop
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return image[..., top : top + size, left : left + size]


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 image(s) (..., 3, H, W) -> float32 in [0, 1], ImageNet-normalised: the tail of train/eval_transform."""
    fresh = images.dtype != torch.float32  # to_dtype copies: normalising in place then touches only our copy
    scaled = v2.functional.to_dtype(images, torch.float32, scale=True)
    return v2.functional.normalize(scaled, list(IMAGENET_MEAN), list(IMAGENET_STD), inplace=fresh)
