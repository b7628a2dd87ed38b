"""Image transforms for NIMA: only crops and flips, never a change that alters the aesthetics."""

from __future__ import annotations

from collections.abc import Sequence

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


def random_crop_params(
    height: int, width: int, size: int = 224, draws: Sequence[float] | None = None
) -> tuple[int, int, bool]:
    """(top, left, flip) of train_transform's random crop + flip, for an image of at least size x size.

    Offsets are uniform like v2.RandomCrop's and flip has p=0.5, from three uniform [0, 1) draws: `draws`, or
    fresh ones from torch's RNG (which DataLoader seeds per worker). Batch builders draw a whole batch's at once
    (one torch call instead of three per image).
    """
    u_top, u_left, u_flip = torch.rand(3).tolist() if draws is None else draws
    top = min(int(u_top * (height - size + 1)), height - size)  # min: float rounding must never reach the edge
    left = min(int(u_left * (width - size + 1)), width - size)
    return top, left, u_flip < 0.5


def center_crop_params(height: int, width: int, size: int = 224) -> tuple[int, int, bool]:
    """(top, left, flip=False) of the centre size x size window, placed where v2.CenterCrop places it."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0)), False


def random_crop_flip(image: torch.Tensor, size: int = 224) -> torch.Tensor:
    """train_transform's random `size` crop + horizontal flip (p=0.5) on a uint8 (C,H,W) tensor."""
    height, width = image.shape[-2:]
    if height < size or width < size:  # rare (stored crops are 256): keep v2's pad_if_needed behaviour exactly
        return v2.Compose([v2.RandomCrop(size, pad_if_needed=True), v2.RandomHorizontalFlip()])(image)
    top, left, flip = random_crop_params(height, width, size)
    crop = image[..., top : top + size, left : left + size]
    return crop.flip(-1) if flip else crop


def resize_short_side(image: torch.Tensor, resize: int = 256) -> torch.Tensor:
    """eval_transform's first step on a uint8 (C,H,W) tensor: short side to `resize` (skipped when it already is)."""
    if min(image.shape[-2:]) == resize:
        return image
    return v2.functional.resize(image, [resize], antialias=True)


def center_crop(image: torch.Tensor, size: int = 224, resize: int = 256) -> torch.Tensor:
    """eval_transform's crop on a uint8 (C,H,W) tensor: short side to `resize`, then the centre `size` crop."""
    image = resize_short_side(image, resize)
    height, width = image.shape[-2:]
    if height < size or width < size:
        return v2.functional.center_crop(image, [size, size])  # pads, like v2.CenterCrop
    top, left, _ = center_crop_params(height, width, size)
    return image[..., top : top + size, left : left + size]


_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def normalize(images: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 image(s) (..., 3, H, W) -> float32 in [0, 1], ImageNet-normalised: the tail of train/eval_transform.

    Float input is taken as already in [0, 1]. Computed as x * 1/(255 std) - mean/std, a multiply and an add per
    element instead of to_dtype's multiply and Normalize's subtract and divide (equal within float32 rounding).
    `out` (float32, images' shape, any memory format) receives the result, e.g. a batch in shared memory.
    """
    integer = not images.is_floating_point()
    scale = (1.0 / (255 * _STD) if integer else 1.0 / _STD).to(images.device)
    bias = (-_MEAN / _STD).to(images.device)
    out = images.to(torch.float32, copy=True) if out is None else out.copy_(images)
    return out.mul_(scale).add_(bias)
