"""NIMA (Talebi & Milanfar, 2018): an ImageNet backbone whose last layer becomes a 10-way softmax.

The head is Dropout(0.75) -> Linear(features, 10) -> softmax over the scores 1..10,
as in the paper. `weights` is "imagenet" (torchvision's, read from the torch hub
cache; see WeightsUnavailable for offline use) or "none".
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models

from nima_train.settings import BACKBONES

N_SCORES = 10


class WeightsUnavailable(RuntimeError):
    """ImageNet weights are not in the torch cache and downloading was not allowed or failed."""


def _strip_classifier(backbone: nn.Module, name: str) -> tuple[nn.Module, int]:
    """Replace the ImageNet classifier's last layer (and a dropout right before it) by Identity."""
    if name.startswith("resnet"):
        dim = backbone.fc.in_features
        backbone.fc = nn.Identity()
        return backbone, dim
    layers = list(backbone.classifier.children())
    dim = layers[-1].in_features
    layers = layers[:-1]
    if layers and isinstance(layers[-1], nn.Dropout):
        layers = layers[:-1]  # the NIMA head brings its own dropout
    backbone.classifier = nn.Sequential(*layers) if layers else nn.Identity()
    return backbone, dim


def imagenet_weights(name: str, download: bool = False) -> dict:
    """The state dict of torchvision's default ImageNet weights for `name`, from the hub cache."""
    weights = models.get_model_weights(name).DEFAULT
    filename = Path(weights.url).name
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    how = (
        f"ImageNet weights for {name} are not in the torch cache ({cached}). On a machine with internet, "
        f"download {weights.url} and copy it to that path (or set TORCH_HOME to a folder holding "
        f"checkpoints/{filename}); or pass --weights none to train from scratch."
    )
    if not cached.exists() and not download:
        raise WeightsUnavailable(how)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise WeightsUnavailable(f"{how} (download failed: {exc})") from exc


class NIMA(nn.Module):
    def __init__(self, backbone: str = "mobilenet_v2", weights: str = "none", dropout: float = 0.75,
                 download: bool = False) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        if weights not in ("imagenet", "none"):
            raise ValueError(f"weights must be 'imagenet' or 'none' here, got {weights!r}")
        net = models.get_model(backbone, weights=None)
        if weights == "imagenet":
            net.load_state_dict(imagenet_weights(backbone, download))
        self.backbone_name = backbone
        self.backbone, self.feature_dim = _strip_classifier(net, backbone)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.feature_dim, N_SCORES))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (what the head sees): used for near-duplicate search."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities over the scores 1..10, shape (batch, 10)."""
        return torch.softmax(self.head(self.embed(x)), dim=-1)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Replace BatchNorm running statistics by the plain average over `images`; returns the model in eval mode.

    A freshly initialised network (weights "none") has running statistics that make every image look alike;
    one pass over a few real pictures gives it usable ones.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average rather than an exponential one
    model.train()
    model(images)
    return model.eval()


def score_moments(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of score distributions p (batch, 10) over the scores 1..10."""
    scores = torch.arange(1, p.shape[-1] + 1, dtype=p.dtype, device=p.device)
    mean = (p * scores).sum(-1)
    var = (p * (scores - mean.unsqueeze(-1)) ** 2).sum(-1)
    return mean, var.clamp_min(0).sqrt()
