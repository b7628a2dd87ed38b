"""The numbers a training or evaluation run takes, with their ranges (common/bounds.py) and the command line's
defaults. `python -m nima_train.train` / `nima_train.evaluate` take each flag's type and default from here, and
the training and evaluation assets' configs (assets/training.py, assets/evaluation.py) take each range: one
declaration per number. Torch-free, so the code location can read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.arguments import MAX_SEED
from common.bounds import Range, bounded, check_ranges

# Images in one forward pass: past 1024 a typo asks for gigabytes of memory.
FORWARD_BATCH = Range(1, 1024, "images in one forward pass: more asks for gigabytes of memory")
SEED = Range(0, MAX_SEED, "numpy takes 0..2**32-1, and training adds 1000 per epoch and the rank")
IMAGE_SIDE = Range(32, 1024, "model input side, px: under 32 the backbone's feature map vanishes, over 1024 the "
                             "stored 256 px crops are only blown up")
EPOCHS = Range(0, 1000, "epochs of one phase; 0 skips it (not both: nothing would train)")
RATE = Range(0.0, 1.0, "a learning rate past 1 diverges at once", lo_open=True)


@dataclass(frozen=True)
class TrainSettings:
    """What `python -m nima_train.train` computes, besides its data, backbone, loss and device."""

    dropout: float = bounded(0.75, Range(0.0, 1.0, "a probability; at 1 nothing reaches the head", hi_open=True))
    epochs_head: int = bounded(5, EPOCHS)
    epochs_full: int = bounded(10, EPOCHS)
    lr_head: float | None = bounded(None, RATE)  # None: the optimiser's default
    lr_full: float | None = bounded(None, RATE)
    head_lr_mult: float | None = bounded(None, Range(0.0, 1000.0, "head rate / backbone rate; the paper's is 10",
                                                     lo_open=True))
    lr_scale: float = bounded(1.0, Range(0.0, 10.0, "multiplies every rate; fine-tuning halves them",
                                         lo_open=True))
    lr_decay: float = bounded(0.95, Range(0.0, 1.0, "exponential decay per epoch; 1 keeps the rate", lo_open=True))
    weight_decay: float = bounded(0.0, Range(0.0, 1.0, "L2 penalty per step; at 1 it erases the weights"))
    batch_size: int = bounded(32, FORWARD_BATCH)
    crop: int = bounded(224, IMAGE_SIDE)
    resize: int = bounded(256, IMAGE_SIDE)
    workers: int = bounded(2, Range(0, 64, "loader processes per rank, 0: in the training process; each holds a "
                                          "shuffle buffer"))
    shuffle_buffer: int = bounded(1000, Range(0, 100_000, "encoded samples held in memory per loader process"))
    negatives: float = bounded(0.0, Range(0.0, 1.0, "blank and broken renders, as a fraction of the training set"))
    max_steps: int = bounded(0, Range(0, 10**8, "steps per epoch, 0: all of them"))
    seed: int = bounded(0, SEED)
    print_freq: int = bounded(10, Range(0, 10**6, "steps between log lines, 0: none"))

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class EvalSettings:
    """What `python -m nima_train.evaluate` takes besides its checkpoint, data and device."""

    batch_size: int = bounded(64, FORWARD_BATCH)

    def __post_init__(self) -> None:
        check_ranges(self)
