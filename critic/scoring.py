"""The aesthetic critic: a trained NIMA that scores images in batches.

Images are prepared exactly as the training data was: decoded and verified by
common.imaging (the square 256 crop every dataset stage stores), then
nima_train.transforms.eval_transform at the crop/resize the checkpoint was
trained with (its args "crop" and "resize"; 224/256 when absent). One forward pass
gives the score histogram, its mean and std, and the pooled features used to
find near-duplicates. A checkpoint trained with a validation split carries a
calibration (nima_train.calibration): the critic then also reports the calibrated
mean, on the human scale, and the percentile of its mean among the validation split's. Without
one the calibrated mean is the mean and the percentile is unknown (None).

    critic = Critic.from_checkpoint("models/nima_color/abc123/model.pt")
    for item in critic.score_sources(["a.jpg", "b.png"]):
        print(item.source, item.score.mean if item.score else item.error)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common.imaging import STORED_CROP, CropSpec, RejectedImage, crop_image, draft_for_crop, sha256_file
from common.regular_files import NotRegularFile, read_regular_file
from critic import detectors
from critic.backends import ScoringBackend, TorchBackend
from critic.neardup import perceptual_hash
from nima_train.calibration import Calibration
from nima_train.checkpoint import calibration_of, load_checkpoint, model_from_state
from nima_train.model import NIMA, score_moments
from nima_train.transforms import eval_transform

# The model input of a checkpoint that does not record its own (the ImageNet backbones' 224 px).
INPUT_SIZE = 224
# The stored-crop size the model was trained on; small inputs are still scored (min_side 8).
DECODE_SPEC = CropSpec(size=STORED_CROP, mode="center", min_side=8)


class UnreadableImage(ValueError):
    """An input that cannot be scored; str(exc) starts with a short kind ('not an image: ...')."""

    @property
    def kind(self) -> str:
        return str(self).split(":", 1)[0]


class CheckpointMismatch(RuntimeError):
    """The checkpoint file's sha256 is not the one the warehouse recorded."""


@dataclass(frozen=True)
class Score:
    mean: float  # the mean of the model's own distribution
    std: float
    histogram: tuple[float, ...]  # probabilities of the scores 1..10
    calibrated_mean: float | None = None  # on the human scale; the mean itself for a model without calibration
    percentile: float | None = None  # 0..100: where the mean falls among the calibration split's; None without one

    def __post_init__(self) -> None:
        if self.calibrated_mean is None:
            object.__setattr__(self, "calibrated_mean", self.mean)

    def as_dict(self) -> dict:
        return {"mean": self.mean, "calibrated_mean": self.calibrated_mean, "percentile": self.percentile,
                "std": self.std, "histogram": list(self.histogram)}


@dataclass(frozen=True)
class ScoredBatch:
    probs: torch.Tensor  # (B, 10)
    mean: torch.Tensor  # (B,)
    std: torch.Tensor  # (B,)
    features: torch.Tensor  # (B, D) pooled backbone features
    calibrated: torch.Tensor  # (B,) calibrated means (the means themselves without a calibration)
    percentile: torch.Tensor  # (B,) 0..100, NaN without a calibration

    def scores(self) -> list[Score]:
        return [
            Score(float(m), float(s), tuple(float(v) for v in p), float(c), None if q != q else float(q))
            for m, s, p, c, q in zip(self.mean.tolist(), self.std.tolist(), self.probs.tolist(),
                                     self.calibrated.tolist(), self.percentile.tolist(), strict=True)
        ]


@dataclass(frozen=True)
class ScoredItem:
    source: str
    score: Score | None
    features: torch.Tensor | None  # (D,), when asked for
    error: str | None  # why it was skipped
    phash: int | None = None  # perceptual hash (critic.neardup) of the decoded crop, when asked for
    measures: dict | None = None  # the quality detectors' columns (critic.detectors.measure), when asked for


@dataclass(frozen=True)
class ImageProbe:
    """What an image's header says, read without decoding a pixel."""

    width: int
    height: int
    decoded_pixels: int  # what decode_image will decode: fewer than width x height for a JPEG decoded at draft size


def probe_image(data: bytes, label: str = "image", max_pixels: int | None = None) -> ImageProbe | None:
    """The header's size and the pixels decoding will cost; None when Pillow cannot tell (decode_image says why).

    UnreadableImage("decompression bomb: ...") when the image has more than max_pixels pixels or more than
    Pillow's own limit.
    """
    import io
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            draft_for_crop(img, DECODE_SPEC)
    except Image.DecompressionBombError as exc:
        # Pillow refuses before reporting the size; its own limit is the most that can be said.
        raise UnreadableImage(f"decompression bomb: {label} is beyond Pillow's limit of "
                              f"{2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels"
                              + (f", limit {max_pixels}" if max_pixels is not None else "")) from exc
    except Exception:  # noqa: BLE001 - crop_image reports the real fault with its reason
        return None
    if max_pixels is not None and width * height > max_pixels:
        raise UnreadableImage(
            f"decompression bomb: {width}x{height} is {width * height} pixels, limit {max_pixels}")
    return ImageProbe(width, height, img.width * img.height)


def decode_image(data: bytes, label: str = "image", max_pixels: int | None = None) -> Image.Image:
    """Verify and decode encoded bytes into the 256 square RGB crop; UnreadableImage on any fault.

    A JPEG is decoded at draft size (common.imaging.draft_for_crop), as the dataset stages crop it.
    """
    return decode_image_sized(data, label, max_pixels)[0]


def decode_image_sized(data: bytes, label: str = "image",
                       max_pixels: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """decode_image's crop and the source's (oriented) size, which the quality detectors read."""
    if max_pixels is not None:
        probe_image(data, label, max_pixels)
    try:
        return crop_image(data, DECODE_SPEC, label)
    except RejectedImage as exc:
        raise UnreadableImage(str(exc)) from exc


def load_image(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """The 256 square crop of an image file; UnreadableImage for anything but a readable regular file holding
    an image (a FIFO, socket, device or folder is refused without being read, so it never blocks)."""
    return load_image_sized(path, max_pixels)[0]


def load_image_sized(path: str | Path, max_pixels: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """load_image's crop and the file's (oriented) image size."""
    path = Path(path)
    try:
        data = read_regular_file(path)
    except FileNotFoundError as exc:
        raise UnreadableImage(f"missing: {path} does not exist") from exc
    except NotRegularFile as exc:
        raise UnreadableImage(str(exc)) from exc
    except OSError as exc:
        raise UnreadableImage(f"unreadable: {path}: {exc.strerror or exc}") from exc
    return decode_image_sized(data, str(path), max_pixels)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def expand_sources(args: Iterable[str]) -> list[Path]:
    """Files, folders (searched recursively for image suffixes) and globs, in order, without repeats.

    An argument that matches nothing is kept, so that it is reported as missing rather than vanishing. Whatever
    a folder or glob holds under an image name that is not a folder (a FIFO, a socket, a broken link) is kept
    too: load_image refuses it with the reason, so it is reported as skipped rather than dropped unseen.
    """
    import glob

    out: dict[Path, None] = {}
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
        elif path.exists() or not glob.has_magic(arg):
            found = [path]
        else:
            found = [Path(p) for p in sorted(glob.glob(arg, recursive=True)) if not Path(p).is_dir()] or [path]
        out.update(dict.fromkeys(found))
    return list(out)


class Critic:
    """A NIMA's scoring backend (critic/backends.py: PyTorch or ONNX Runtime) plus its preprocessing and
    calibration; thread-safe (one forward at a time)."""

    def __init__(self, model: NIMA | ScoringBackend, image_size: int = INPUT_SIZE, batch_size: int = 32,
                 device: str | torch.device = "cpu", version: str | None = None,
                 resize: int | None = None, calibration: Calibration | None = None,
                 threads: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if image_size < 1 or (resize is not None and resize < 1):
            raise ValueError(f"image_size and resize must be positive, got {image_size} and {resize}")
        self.backend = TorchBackend(model, device, threads) if isinstance(model, torch.nn.Module) else model
        self.device = self.backend.device
        self.image_size = image_size
        # Without a trained resize, keep the stored-crop ratio (256 for a 224 input) at any input size.
        self.resize = resize or round(image_size * STORED_CROP / INPUT_SIZE)
        self.batch_size = batch_size
        self.version = version
        self.calibration = calibration
        self.transform = eval_transform(image_size, resize=self.resize)
        # Concurrent CPU forwards only fight over the same cores; serialising them keeps latency flat.
        self._lock = threading.Lock()

    @property
    def model(self) -> NIMA | None:
        """The PyTorch model under the torch backend; None under another."""
        return getattr(self.backend, "model", None)

    @classmethod
    def from_checkpoint(cls, path: str | Path, expected_sha256: str | None = None,
                        image_size: int | None = None, resize: int | None = None, **kwargs) -> Critic:
        """The critic of a checkpoint, scoring at the crop/resize it was trained with unless overridden.

        A model trained on 96 px crops scores nonsense on 224 px inputs, so the input size comes from the
        checkpoint's args ("crop", "resize", as nima_train.train saves them, 224/256 when absent), like
        nima_train.evaluate. An explicit image_size without resize keeps the stored-crop ratio.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        if expected_sha256:
            actual = sha256_file(path)
            if actual != expected_sha256:
                raise CheckpointMismatch(
                    f"checkpoint {path} has sha256 {actual[:12]}..., the warehouse recorded "
                    f"{expected_sha256[:12]}...: the file changed since it was registered")
        state = load_checkpoint(path)
        if image_size is None:
            trained_with = state.get("args") or {}
            image_size = int(trained_with.get("crop") or INPUT_SIZE)
            resize = resize or int(trained_with.get("resize") or STORED_CROP)
        return cls(model_from_state(state, path), image_size=image_size, resize=resize,
                   calibration=calibration_of(state), **kwargs)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 3, S, S) float tensors, ImageNet-normalised centre crops."""
        return torch.stack([self.transform(img if img.mode == "RGB" else img.convert("RGB")) for img in images])

    def forward(self, x: torch.Tensor) -> ScoredBatch:
        """Normalised (B, 3, S, S) float images scored."""
        with self._lock:
            probs, features = self.backend.run(x)
        return self._scored(probs, features)

    def forward_uint8(self, images: torch.Tensor) -> ScoredBatch:
        """uint8 (B, 3, S, S) images scored (normalised where the backend computes: on the GPU under CUDA)."""
        with self._lock:
            probs, features = self.backend.run_uint8(images)
        return self._scored(probs, features)

    def _scored(self, probs: torch.Tensor, features: torch.Tensor) -> ScoredBatch:
        mean, std = score_moments(probs)
        calibrated, percentile = mean, torch.full_like(mean, float("nan"))
        if self.calibration is not None:
            cm = self.calibration.apply(mean.double().numpy())
            calibrated = torch.from_numpy(cm).float()
            percentile = torch.from_numpy(self.calibration.percentile(mean.double().numpy())).float()
        return ScoredBatch(probs, mean, std, features, calibrated, percentile)

    def score_images(self, images: Sequence[Image.Image]) -> ScoredBatch:
        """Score decoded images, batch_size at a time."""
        if not images:
            raise ValueError("no images to score")
        parts = [self.forward(self.preprocess(images[i : i + self.batch_size]))
                 for i in range(0, len(images), self.batch_size)]
        if len(parts) == 1:
            return parts[0]
        return ScoredBatch(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(ScoredBatch)))

    def score_sources(
        self,
        sources: Iterable[str | Path],
        with_features: bool = False,
        with_hash: bool = False,
        max_pixels: int | None = None,
        on_progress: Callable[[int], None] | None = None,
        with_detectors: bool = False,
    ) -> Iterator[ScoredItem]:
        """Score files in input order; an unreadable one yields an item with `error` and the rest go on."""
        # Failed items wait in the queue too, so results come back in input order without breaking batches.
        pending: list[tuple[str, Image.Image | None, str | None, dict | None]] = []

        def flush() -> Iterator[ScoredItem]:
            good = [img for _, img, _, _ in pending if img is not None]
            batch = self.score_images(good) if good else None
            scores = iter(batch.scores() if batch else [])
            feats = iter(batch.features if batch else [])
            for src, img, err, measures in pending:
                if img is None:
                    yield ScoredItem(src, None, None, err)
                else:
                    feat = next(feats)
                    yield ScoredItem(src, next(scores), feat if with_features else None, None,
                                     perceptual_hash(img) if with_hash else None, measures)
            if on_progress:
                on_progress(len(pending))
            pending.clear()

        n_good = 0
        for source in sources:
            try:
                img, size = load_image_sized(source, max_pixels)
                measures = detectors.measure(np.asarray(img), *size) if with_detectors else None
                pending.append((str(source), img, None, measures))
                n_good += 1
            except UnreadableImage as exc:
                pending.append((str(source), None, str(exc), None))
            if n_good >= self.batch_size or len(pending) >= 4 * self.batch_size:
                yield from flush()
                n_good = 0
        if pending:
            yield from flush()
