"""The numbers and choices a training or evaluation run takes, each declared once with its default and range
(common/bounds.py). Torch-free and Dagster-free, so the code location can read it.

`TrainSettings` is the spec of a training run: every field that changes what the run computes, and nothing
else. `python -m nima_train.train` takes one flag per field from it (`add_flags`), the training assets' config is
generated from it (assets/train_config.py), and a run's key and model card hash the whole resolved spec
(`identity`). What the trainer takes besides (its data, folders, device, logging) is listed with the reason in
nima_train/train.py's NOT_IDENTITY. docs/training.md's table of the fields is `markdown_table()`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.arguments import MAX_SEED, existing_file
from common.bounds import HELP, RANGE, Range, bounded, check_ranges, settings_from

# Images in one forward pass: past 1024 a typo asks for gigabytes of memory.
FORWARD_BATCH = Range(1, 1024, "images in one forward pass: more asks for gigabytes of memory")
SEED = Range(0, MAX_SEED, "numpy takes 0..2**32-1, and training adds 1000 per epoch and the rank")
IMAGE_SIDE = Range(32, 1024, "model input side, px: under 32 the backbone's feature map vanishes, over 1024 the "
                             "stored 256 px crops are only blown up")
EPOCHS = Range(0, 1000, "epochs of one phase; 0 skips it (not both: nothing would train)")
RATE = Range(0.0, 1.0, "a learning rate past 1 diverges at once", lo_open=True)
# Not part of the spec (it changes the log, not the model): nima_train/train.py's --print-freq.
PRINT_FREQ = Range(0, 10**6, "steps between log lines, 0: none")

BACKBONES = ("mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "resnet50", "vgg16")
LOSSES = ("paper", "notebook")
OPTIMISERS = ("adam", "sgd")
# The rates an unset lr_head / lr_full / head_lr_mult takes. Adam's are the from-scratch ones (the default
# weights are none); fine-tuning ImageNet weights wants lr_full about 3e-5. SGD's are the paper's (section 4):
# 3e-7 for the baseline CNN, 3e-6 for the last layer.
OPTIMISER_RATES: dict[str, dict[str, float]] = {
    "adam": {"lr_head": 1e-3, "lr_full": 1e-3, "head_lr_mult": 1.0},
    "sgd": {"lr_head": 3e-6, "lr_full": 3e-7, "head_lr_mult": 10.0},
}
_CHOICES, _PARSE, _VALUES = "choices", "parse", "values"


def initial_weights(text: str) -> str:
    """weights: imagenet, none, or a checkpoint file that exists."""
    return text if text in ("imagenet", "none") else existing_file(text)


def _chosen(default: str, choices: tuple[str, ...], help: str) -> Any:  # noqa: A002 (argparse's word)
    return dataclasses.field(default=default, metadata={_CHOICES: choices, HELP: help})


def _text(default: Any, help: str, parse: Callable[[str], Any] | None = None, values: str = "") -> Any:  # noqa: A002
    return dataclasses.field(default=default, metadata={_PARSE: parse, HELP: help, _VALUES: values})


@dataclass(frozen=True)
class TrainSettings:
    """What a training run computes besides its data and its parent model. The defaults are the CPU demo's
    (`make demo`): from scratch at 96 px, 12 epochs of the whole network."""

    backbone: str = _chosen("mobilenet_v2", BACKBONES, "the ImageNet network under the head")
    weights: str = _text("none", "initial weights: imagenet (torchvision's, from the torch cache), none (random), "
                                 "or the path of a NIMA checkpoint", initial_weights,
                           "imagenet, none, a checkpoint file")
    dropout: float = bounded(0.75, Range(0.0, 1.0, "a probability; at 1 nothing reaches the head", hi_open=True),
                             "dropout before the head's linear layer")
    loss: str = _chosen("paper", LOSSES, "paper: EMD r=2, root, batch mean; notebook: squared, no root, batch sum")
    opt: str = _chosen("adam", OPTIMISERS, "sgd: momentum 0.9, the paper's rates")
    epochs_head: int = bounded(0, EPOCHS, "phase 1: only the head trains, the backbone frozen (with weights none "
                                          "it trains on random features: only when asked, with a warning)")
    epochs_full: int = bounded(12, EPOCHS, "phase 2: the whole network trains")
    lr_head: float | None = bounded(None, RATE, "phase 1 rate; unset: adam 1e-3, sgd 3e-6")
    lr_full: float | None = bounded(None, RATE, "phase 2 backbone rate; unset: adam 1e-3 (from scratch; "
                                                "fine-tuning ImageNet weights wants about 3e-5), sgd 3e-7")
    head_lr_mult: float | None = bounded(None, Range(0.0, 1000.0, "head rate / backbone rate; the paper's is 10",
                                                     lo_open=True),
                                         "phase 2 head rate / backbone rate; unset: adam 1, sgd 10")
    lr_scale: float = bounded(1.0, Range(0.0, 10.0, "multiplies every rate; fine-tuning halves them", lo_open=True),
                              "multiplies every rate (fine-tuning: 0.5)")
    lr_decay: float = bounded(0.95, Range(0.0, 1.0, "exponential decay per epoch; 1 keeps the rate", lo_open=True),
                              "exponential decay of the rate per epoch")
    weight_decay: float = bounded(0.0, Range(0.0, 1.0, "L2 penalty per step; at 1 it erases the weights"),
                                  "the optimiser's L2 penalty")
    batch_size: int = bounded(16, FORWARD_BATCH, "per process")
    crop: int = bounded(96, IMAGE_SIDE, "training/eval crop side")
    resize: int = bounded(108, IMAGE_SIDE, "short side before cropping (256 = the stored crops)")
    workers: int = bounded(1, Range(0, 64, "loader processes per rank, 0: in the training process; each holds a "
                                          "shuffle buffer"),
                           "data loader processes per rank: each shuffles its own samples, so the count changes "
                           "the data order")
    shuffle_buffer: int = bounded(1000, Range(0, 100_000, "encoded samples held in memory per loader process"),
                                  "samples each loader process shuffles among")
    negatives: float = bounded(0.0, Range(0.0, 1.0, "blank and broken renders, as a fraction of the training set"),
                               "extra negatives (blank white, broken renders) labelled score 1, as a fraction "
                               "of the training samples")
    max_steps: int = bounded(0, Range(0, 10**8, "steps per epoch, 0: all of them"),
                             "stop each epoch after this many steps (0: all)")
    seed: int = bounded(0, SEED, "initial weights, negatives and each epoch's data draws")
    amp: bool | None = _text(None, "bf16 autocast; unset: on when the device is CUDA")

    def __post_init__(self) -> None:
        check_ranges(self)
        for f in dataclasses.fields(self):
            allowed = f.metadata.get(_CHOICES)
            if allowed and getattr(self, f.name) not in allowed:
                raise ValueError(f"{f.name} must be one of {', '.join(allowed)}, got {getattr(self, f.name)!r}")
        if self.epochs_head + self.epochs_full < 1:
            raise ValueError("epochs_head and epochs_full are both 0: nothing to train")

    @classmethod
    def from_mapping(cls, values: typing.Mapping[str, Any]) -> TrainSettings:
        """The spec from a mapping holding its fields (an argparse namespace's vars, a config's dump); other keys
        are ignored."""
        return settings_from(cls, values)

    def resolved(self) -> TrainSettings:
        """The spec with the unset rates set to the optimiser's (OPTIMISER_RATES)."""
        rates = OPTIMISER_RATES[self.opt]
        return dataclasses.replace(self, **{k: v for k, v in rates.items() if getattr(self, k) is None})

    def identity(self) -> dict[str, Any]:
        """Every field of the resolved spec: what a run key and a model card hash."""
        return dataclasses.asdict(self.resolved())

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()

    def flags(self) -> list[str]:
        """The command line that gives `python -m nima_train.train` exactly this spec (unset fields left out)."""
        out: list[str] = []
        for name in field_names():
            value = getattr(self, name)
            if isinstance(value, bool):
                out.append(f"--{'' if value else 'no-'}{_flag(name)}")
            elif value is not None:
                out += [f"--{_flag(name)}", str(value)]
        return out


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainSettings)]


def field_types() -> dict[str, Any]:
    """Each spec field's type (real types, not the strings `from __future__ import annotations` leaves)."""
    return typing.get_type_hints(TrainSettings)


def _flag(name: str) -> str:
    return name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per spec field, with its type (range or choices), default and help: `--epochs-head N`, ...;
    bool fields as --x / --no-x."""
    for f in dataclasses.fields(TrainSettings):
        option, help_text = f"--{_flag(f.name)}", f.metadata[HELP]
        if f.metadata.get(_CHOICES):
            parser.add_argument(option, default=f.default, choices=f.metadata[_CHOICES], help=help_text)
        elif RANGE in f.metadata:
            parser.add_argument(option, type=f.metadata[RANGE].flag(), default=f.default, help=help_text)
        elif field_types()[f.name] in (bool, bool | None):
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            parser.add_argument(option, type=f.metadata[_PARSE], default=f.default, help=help_text)


def markdown_table() -> str:
    """The spec as docs/training.md shows it: field, flag, default, the values it takes, what it is."""
    lines = ["| field | flag | default | values | what it is |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(TrainSettings):
        if f.metadata.get(_CHOICES):
            values = ", ".join(f.metadata[_CHOICES])
        elif RANGE in f.metadata:
            values = str(f.metadata[RANGE])
        else:
            values = f.metadata[_VALUES] or "true, false"
        flag = f"`--{_flag(f.name)}`" + (f", `--no-{_flag(f.name)}`" if field_types()[f.name] in (bool, bool | None)
                                        else "")
        default = "unset" if f.default is None else f"`{f.default}`"
        lines.append(f"| `{f.name}` | {flag} | {default} | {values} | {f.metadata[HELP]} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class EvalSettings:
    """What `python -m nima_train.evaluate` takes besides its checkpoint, data and device."""

    batch_size: int = bounded(64, FORWARD_BATCH, "test images per forward pass")

    def __post_init__(self) -> None:
        check_ranges(self)
