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


# Quality detectors (critic/detectors.py): what each measures is a column of DIR/scores/*.parquet; a detector
# drops a sample only when `detect` names it. Each threshold's default depends on the domain, because photos and
# designs differ (grey entropy: photos 6-7 bits, Kuler swatches 2.7-3.0, rendered designs 1.7-2.6). The defaults
# were chosen from benchmarks/bench_detectors.py (docs/critic.md, "Quality detectors").
DETECTORS = ("blurry", "dark", "light", "low_information", "grayscale", "odd_size", "odd_aspect")
DOMAINS = ("photo", "design")
# "auto": per shard, by the dataset folder of our own shards (shards/<dataset>/<split>/): ava photos, sac and
# kuler designs; any other shard or folder is a photo.
DOMAIN_CHOICES = (*DOMAINS, "auto")
DESIGN_DATASETS = ("sac", "kuler")
DOMAIN_DEFAULTS: dict[str, dict[str, float]] = {
    "photo": {"blur_threshold": 60.0, "edge_ratio_threshold": 1.0, "dark_threshold": 40.0, "light_threshold": 215.0,
              "entropy_threshold": 3.0, "gray_threshold": 2.0, "min_side": 64, "max_aspect": 3.0},
    "design": {"blur_threshold": 8.0, "edge_ratio_threshold": 1.0, "dark_threshold": 40.0, "light_threshold": 215.0,
               "entropy_threshold": 0.5, "gray_threshold": 2.0, "min_side": 64, "max_aspect": 3.0},
}
# The detectors' thresholds (DetectorSettings fields, each a flag: --blur-threshold ...); blurry has two.
DETECTOR_THRESHOLDS = tuple(DOMAIN_DEFAULTS["photo"])
LEVEL = Range(0.0, 255.0, "a grey level of 8-bit luminance")


def parse_detect(text: str) -> tuple[str, ...]:
    """The detectors named in "blurry,dark" ("all": every one; ""/"none": none); ValueError naming the unknown."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names in (["all"],):
        return DETECTORS
    if names in ([], ["none"]):
        return ()
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown detector {unknown[0]!r}: choose from {', '.join(DETECTORS)}, all or none")
    return tuple(n for n in DETECTORS if n in names)


@dataclass(frozen=True)
class DetectorSettings:
    """The quality detectors' decisions: which drop a sample, for which domain, and any threshold set by hand
    (unset: the domain's default, DOMAIN_DEFAULTS)."""

    detect: str = setting("", f"comma-separated detectors that drop a sample ({', '.join(DETECTORS)}; all; none); "
                              "their columns are written either way")
    domain: str = setting("auto", "photo or design: which defaults the thresholds take; auto: per shard, sac and "
                                  "kuler shards are designs, the rest photos")
    blur_threshold: float | None = bounded(None, Range(0.0, 1e6, "a variance of 8-bit grey levels"),
                                           "blurry below this variance of the Laplacian of the 128 px grey "
                                           "thumbnail; unset: the domain's default")
    edge_ratio_threshold: float | None = bounded(None, Range(0.0, 16.0, "Laplacian energy over gradient energy"),
                                                 "blurry also below this ratio of the thumbnail's Laplacian "
                                                 "variance to its mean squared gradient (contrast-free); unset: "
                                                 "the domain's default")
    dark_threshold: float | None = bounded(None, LEVEL, "dark when the 95th percentile of luminance is below "
                                                        "this; unset: the domain's default")
    light_threshold: float | None = bounded(None, LEVEL, "light when the 5th percentile of luminance is above "
                                                         "this; unset: the domain's default")
    entropy_threshold: float | None = bounded(None, Range(0.0, 8.0, "bits of a 256-level histogram"),
                                              "low_information below this grey-level entropy, bits; unset: the "
                                              "domain's default")
    gray_threshold: float | None = bounded(None, LEVEL, "grayscale when the mean spread of a pixel's channels is "
                                                        "below this; unset: the domain's default")
    min_side: int | None = bounded(None, Range(1, 65535, "pixels of an image side"),
                                   "odd_size when the header's short side is below this, px; unset: the domain's "
                                   "default")
    max_aspect: float | None = bounded(None, Range(1.0, 1000.0, "long side over short side"),
                                       "odd_aspect when long side / short side is above this; unset: the domain's "
                                       "default")

    def __post_init__(self) -> None:
        parse_detect(self.detect)
        if self.domain not in DOMAIN_CHOICES:
            raise ValueError(f"domain must be one of {', '.join(DOMAIN_CHOICES)}, got {self.domain!r}")
        check_ranges(self)

    @property
    def enabled(self) -> tuple[str, ...]:
        return parse_detect(self.detect)

    def thresholds(self, domain: str) -> dict[str, float]:
        """Each threshold (field name -> value) for a domain ("photo" or "design"): the one set here, else the
        domain's default."""
        return {t: getattr(self, t) if getattr(self, t) is not None else DOMAIN_DEFAULTS[domain][t]
                for t in DETECTOR_THRESHOLDS}

    def domain_of(self, source: str) -> str:
        """The domain a shard (its URL or path) or a folder's image is judged as."""
        if self.domain != "auto":
            return self.domain
        parts = source.replace("\\", "/").split("/")
        return "design" if any(p in DESIGN_DATASETS for p in parts[:-1]) else "photo"


@dataclass(frozen=True)
class CurateSettings(DetectorSettings):
    """`aesthetic curate` and the `curated_corpus` asset (critic/curate.py); the detectors' fields first."""

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
        super().__post_init__()


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
