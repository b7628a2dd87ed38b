"""The critic's settings with their ranges (common/bounds.py), torch-free: `aesthetic curate|evolve` take each
flag's type from here, and the `curation` and `critic` assets' configs take each range, so a range is written
once. critic/curate.py and critic/evolve.py, which import torch, take these objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from common.bounds import Range, bounded, check_ranges, setting
from nima_train.settings import FORWARD_BATCH, SEED

MIN_SCORE = Range(0.0, 10.0, "the score scale is 1..10; 0 keeps every sample")
SIMILARITY = Range(0.0, 1.0, "a cosine of pooled features; at 0 everything is a near-duplicate", lo_open=True)
MAX_HAMMING = Range(0, 64, "bits of a 64-bit perceptual hash")
# What makes two items near-duplicates unless a caller asks otherwise (critic/neardup.py): cosine of pooled
# features at least NEAR_DUPLICATE_SIMILARITY and perceptual hashes at most NEAR_DUPLICATE_HAMMING bits apart.
# Here, not in neardup.py, so that the command line reads them without loading numpy.
NEAR_DUPLICATE_SIMILARITY = 0.95
NEAR_DUPLICATE_HAMMING = 6
# Where `aesthetic serve` listens unless told (critic/service.py).
SERVE_HOST = "127.0.0.1"
SERVE_PORT = 8080
STUDIO_PORT = 8090  # beside serve's, so both run on one machine
# `aesthetic filter` (critic/filtering.py): what its thresholds compare and take, and how it finds duplicates.
THRESHOLD_FIELDS = ("calibrated_mean", "mean")
DEDUPE_METHODS = ("features", "phash", "both")
PERCENTILE = Range(0.0, 100.0, "a percentile of the model's validation split")
TOP_FRACTION = Range(0.0, 1.0, "a share of the images being filtered; 0 keeps none", lo_open=True)
# Which engine runs the model's forward (critic/backends.py): auto is ONNX Runtime on the CPU when the model
# version has a recorded export, PyTorch otherwise and on CUDA.
BACKENDS = ("auto", "torch", "onnxruntime")
THREADS = Range(1, 256, "threads of the model's forward; more than the machine's cores only fight over them")
# ONNX export (critic/onnx_export.py): PyTorch's exporters write opsets 13..23 for these backbones. The
# TorchScript-based one is the default here: it exports a MobileNetV2 NIMA 5-8x faster than the torch.export-based
# one ("dynamo", which needs onnxscript; 2.9 s against 23 s on 2 cores) and both graphs score alike (the export's
# probe check holds them to the checkpoint either way).
OPSET = Range(13, 23, "ONNX opsets the exporters write and ONNX Runtime runs for these backbones")
DEFAULT_OPSET = 18
EXPORTERS = ("dynamo", "torchscript")
# Rendered designs, px: the renderer draws the whole picture in memory, and past 4096 a typo asks for gigabytes.
DESIGN_SIDE = Range(32, 4096, "rendered design side, px: past 4096 a render is gigabytes of pixels")


@dataclass(frozen=True)
class CurateSettings:
    """`aesthetic curate` and the `curated_corpus` asset (critic/curate.py)."""

    min_score: float | None = bounded(None, MIN_SCORE, "keep samples scoring at least this (on the calibrated mean "
                                                       "when the model has a calibration, else the mean); unset: "
                                                       "every score")
    dedupe: bool = setting(True, "keep only the best sample of each near-duplicate cluster")
    similarity: float = bounded(NEAR_DUPLICATE_SIMILARITY, SIMILARITY, "cosine of pooled features that makes a "
                                                                       "near-duplicate")
    max_hamming: int = bounded(NEAR_DUPLICATE_HAMMING, MAX_HAMMING, "perceptual-hash bits (of 64) that may differ")
    workers: int = bounded(4, Range(0, 64, "DataLoader processes decoding shards per rank, 0: in the scoring "
                                          "process"),
                           "DataLoader processes decoding shards, per process")
    batch_size: int = bounded(64, FORWARD_BATCH, "samples per forward pass")
    allow_pipe: bool = setting(False, "allow pipe: shard URLs (they run a shell command)")

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class EvolveSettings:
    """The numbers of the design loop (critic/evolve.py): `aesthetic evolve` and the `critic_evolution` asset."""

    rounds: int = bounded(10, Range(1, 1000, "rounds, each scoring `batch` renders"), "rounds of mutation and "
                                                                                      "scoring")
    batch: int = bounded(32, FORWARD_BATCH, "variants mutated from the parent each round")
    seed: int = bounded(0, SEED, "seeds the first design and every mutation")
    size: int = bounded(256, DESIGN_SIDE, "rendered design side, px")
    rate: float = bounded(0.3, Range(0.0, 1.0, "the probability that a gene mutates"), "the probability that a gene "
                                                                                       "mutates")
    strength: float = bounded(0.15, Range(0.0, 1.0, "mutation noise as a fraction of a gene's range"),
                              "mutation noise as a fraction of a gene's range")

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class BackendSettings:
    """The scoring backend and its threads: every scoring verb's --backend/--threads and the critic and curation
    assets' config."""

    backend: str = setting("auto", f"which engine runs the model's forward: {', '.join(BACKENDS)} (auto: ONNX Runtime "
                                   "on the CPU when this model version has a recorded export, else PyTorch)")
    threads: int | None = bounded(None, THREADS, "threads of the model's forward; unset: the cores this process may "
                                                 "use minus its decode workers")

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        check_ranges(self)

    def resolved_threads(self, decode_workers: int = 0) -> int:
        return self.threads or default_threads(decode_workers)


def default_threads(decode_workers: int = 0) -> int:
    """The cores this process may use (its affinity, which a container or taskset narrows) minus the workers
    that decode beside the forward, at least 1: the two never oversubscribe the cores."""
    return max(1, len(os.sched_getaffinity(0)) - decode_workers)


@dataclass(frozen=True)
class ExportSettings:
    """`aesthetic export` and the `critic_onnx` asset (critic/onnx_export.py)."""

    opset: int = bounded(DEFAULT_OPSET, OPSET, "ONNX opset of the export")
    exporter: str = setting("torchscript", f"PyTorch's exporter: {', '.join(EXPORTERS)} (torchscript: 5-8x faster "
                                           "to export here, the same scores)")

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {self.exporter!r}")
        check_ranges(self)
