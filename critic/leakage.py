"""Cross-split leakage: train items that are near-duplicates of val or test items (issue 19, point 5).

One search, used twice on the same data: by the shards stage, as its leak finder (the train samples it names are
left out of the train shards), and by the blocking asset checks on the shards assets, over the shards as written
(what training will read). Both call `find_leaks` with the same rule: the shards asset records the rule it used
next to the shards (`record_rule`, shards/<dataset>/leak_rule.json) and the check reads it (`recorded_rule`).
Every match is listed (not each held-out item's nearest k) and a pair's verdict depends on its two items alone,
so the check over the train items a drop left finds no pair.

What makes two items near-duplicates (docs/shards.md, "Cross-split near-duplicates", has the measurements):
- photos (AVA, SAC), by default: the perceptual hash alone (critic.neardup's 64-bit dHash), Hamming distance at
  most PHOTO_MAX_HAMMING; exact search over the hashes. A promoted model changes nothing here: the shards feed
  the training that makes models, so a rule that followed the promotions would make every promotion change the
  shards (or block them) behind the asset graph's back.
- photos, a model version pinned in the shards config (`leak_model`): the same dHash pairs, plus the pairs whose
  pooled features (the model's) have a cosine of at least PHOTO_MIN_SIMILARITY (approximate nearest-neighbour
  index) and whose dHash is within the looser MODEL_MAX_HAMMING. The model widens the search and never narrows
  it: the test model put planted copies at cosine 0.80-0.89 and unrelated pairs up to 0.92, so confirming the hash
  pairs by such features would have lost every planted copy, and a verdict that a weak model can weaken is no gate.
- Kuler swatches, always: the palette, i.e. the mean colour of each of the five stripes. A swatch is a render of
  those 15 numbers, so nothing else in its pixels can tell two themes apart, and the dHash of five vertical
  stripes carries at most 4 informative bits (every pair of sample swatches lies within 8 bits of each other).
  Two themes match when their colours differ by at most KULER_MAX_LEVELS (RMS over the 15 channels, in 0..255
  levels).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from critic.neardup import cross_pairs, pair_similarity, perceptual_hash
from critic.settings import NEAR_DUPLICATE_HAMMING, NEAR_DUPLICATE_SIMILARITY

HELD_OUT = ("val", "test")
SPLITS = ("train", *HELD_OUT)
PHOTO_MAX_HAMMING = NEAR_DUPLICATE_HAMMING
PHOTO_MIN_SIMILARITY = NEAR_DUPLICATE_SIMILARITY
MODEL_MAX_HAMMING = 10  # the model's pairs: the hash still has to agree, loosely (docs/shards.md)
KULER_MAX_LEVELS = 4.0
KULER_STRIPES = 5  # ingest/kuler.py render_swatch: five equal vertical stripes
# Palette vectors are lifted onto a sphere of this squared radius (at least 15 + 1: the lift coordinate stays >= 1).
_LIFT = 16.0
BATCH = 64
RULE_FILE = "leak_rule.json"  # in shards/<dataset>/: the rule the shards were written under (record_rule)
# What the leak finder reads: (key, image bytes) per split.
Items = Mapping[str, Iterable[tuple[str, bytes]]]


@dataclass(frozen=True)
class LeakRule:
    """How items are compared: 'dhash', 'features' (dHash pairs plus a model's) or 'palette' (Kuler)."""

    signal: str
    max_hamming: int | None = None
    min_similarity: float | None = None
    model_max_hamming: int | None = None
    max_levels: float | None = None
    # 'features' only: the model version whose features are compared, and its checkpoint's sha256 as the
    # warehouse recorded it when the rule was chosen (the rule pins that file, not whatever is promoted later)
    model: str | None = None
    model_sha256: str | None = None

    def describe(self) -> str:
        if self.signal == "dhash":
            return f"dHash within {self.max_hamming} bits"
        if self.signal == "features":
            return (f"dHash within {self.max_hamming} bits, or model features cosine >= {self.min_similarity} "
                    f"with dHash within {self.model_max_hamming} bits" + (f", model {self.model}" if self.model
                                                                           else ""))
        return f"stripe colours within {self.max_levels} levels RMS"

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> LeakRule:
        rule = cls(**doc)
        if rule.signal not in ("dhash", "features", "palette") or (rule.signal == "features") != bool(rule.model):
            raise ValueError(f"not a leak rule: {dict(doc)}")
        return rule


def rule_for(dataset: str, with_model: bool) -> LeakRule:
    if dataset == "kuler":
        return LeakRule("palette", max_levels=KULER_MAX_LEVELS)
    if with_model:
        return LeakRule("features", PHOTO_MAX_HAMMING, PHOTO_MIN_SIMILARITY, MODEL_MAX_HAMMING)
    return LeakRule("dhash", PHOTO_MAX_HAMMING)


@dataclass(frozen=True)
class Leak:
    """A train item that is a near-duplicate of a val or test item; distance in the rule's own unit."""

    held_out_key: str
    held_out_split: str
    train_key: str
    distance: float
    unit: str  # "dHash bits" or "levels RMS"
    cosine: float | None = None  # of the model's features, for pairs the model found

    def reason(self) -> str:
        """The `rejects` reason of the train sample left out (its kind is the text before the colon)."""
        cosine = f", cosine {self.cosine:g}" if self.cosine is not None else ""
        return (f"cross-split duplicate: of {self.held_out_split} sample {self.held_out_key} "
                f"({self.unit} {self.distance:g}{cosine})")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Signatures:
    keys: list[str]
    hashes: np.ndarray | None  # (n,) uint64 dHash
    vectors: np.ndarray | None  # (n, d) float32: model features or lifted palettes
    unreadable: list[str]


def palette(img: Image.Image) -> np.ndarray:
    """The mean colour of each of the swatch's five vertical stripes, 15 numbers in 0..1."""
    strip = img.convert("RGB").resize((KULER_STRIPES, 1), Image.Resampling.BOX)
    return np.asarray(strip, dtype=np.float32).reshape(-1) / 255.0


def lift(colours: np.ndarray) -> np.ndarray:
    """Palettes (n, 15) onto a sphere: [x, sqrt(R^2 - |x|^2)], so that cosine similarity is 1 - |v - v'|^2 / 2R^2.

    neardup's index compares unit vectors by inner product; lifted, every vector has the same norm, and a small
    colour distance is a cosine near 1 (the maximum-inner-product reduction of Bachrach et al., 2014).
    """
    x = np.asarray(colours, dtype=np.float64)
    extra = np.sqrt(np.maximum(_LIFT - (x * x).sum(axis=1, keepdims=True), 0.0))
    return np.hstack([x, extra]).astype(np.float32)


def palette_similarity_bound(max_levels: float, n_channels: int = 3 * KULER_STRIPES) -> float:
    """The lowest cosine of two lifted palettes whose colours differ by at most max_levels RMS.

    |v - v'|^2 = |x - y|^2 + (a - b)^2 with a = sqrt(R^2 - |x|^2) >= 1, and |a - b| <= |x - y| |x + y| / 2 <=
    sqrt(n) |x - y|, so |v - v'|^2 <= (1 + n) |x - y|^2: every pair within the colour limit clears this cosine,
    and the colour test itself is applied afterwards.
    """
    d2 = n_channels * (max_levels / 255.0) ** 2
    return 1.0 - (1 + n_channels) * d2 / (2 * _LIFT)


def _decode(data: bytes | memoryview) -> Image.Image:
    img = Image.open(io.BytesIO(bytes(data)))
    img.load()
    return img


def signatures(items: Iterable[tuple[str, bytes]], rule: LeakRule, critic: Any = None) -> Signatures:
    """What the rule compares, for each decodable item (the others are listed as unreadable)."""
    if rule.signal == "features" and critic is None:
        raise ValueError("the 'features' rule needs a model (critic)")
    keys, hashes, vectors, unreadable, pending = [], [], [], [], []

    def flush() -> None:
        if pending:
            vectors.append(critic.score_images(pending).features.numpy().astype(np.float32))
            pending.clear()

    for key, data in items:
        try:
            img = _decode(data)
        except (OSError, UnidentifiedImageError, ValueError):
            unreadable.append(key)
            continue
        keys.append(key)
        if rule.signal == "palette":
            vectors.append(palette(img)[None])
            continue
        hashes.append(perceptual_hash(img))
        if rule.signal == "features":
            pending.append(img.convert("RGB"))
            if len(pending) >= BATCH:
                flush()
    flush()
    stacked = np.concatenate(vectors) if vectors else None
    if rule.signal == "palette" and stacked is None:
        stacked = np.zeros((0, 3 * KULER_STRIPES), np.float32)
    return Signatures(keys, np.asarray(hashes, dtype=np.uint64) if rule.signal != "palette" else None,
                      stacked, unreadable)


def _pairs(held: Signatures, train: Signatures, rule: LeakRule) -> list[tuple[int, int, float, float | None]]:
    """(held-out index, train index, distance, model cosine or None) of every match, through
    critic.neardup.cross_pairs with k=None: all matches of each held-out item, not its nearest k, and a pair's
    verdict independent of the other items, so the check over the shards left after a drop finds none."""
    if not held.keys or not train.keys:
        return []
    if rule.signal == "palette":
        pairs = cross_pairs(lift(held.vectors), None, lift(train.vectors), None,
                            min_similarity=palette_similarity_bound(rule.max_levels), max_hamming=None, k=None)
        diff = (held.vectors[pairs[:, 0]] - train.vectors[pairs[:, 1]]) * 255.0
        rms = np.sqrt((diff * diff).mean(axis=1)) if len(pairs) else np.zeros(0)
        return [(int(i), int(j), round(float(r), 2), None) for (i, j), r in zip(pairs, rms, strict=True)
                if r <= rule.max_levels]
    found: dict[tuple[int, int], float | None] = {}
    for i, j in cross_pairs(None, held.hashes, None, train.hashes, max_hamming=rule.max_hamming, k=None):
        found[(int(i), int(j))] = None
    if rule.signal == "features":
        pairs = cross_pairs(held.vectors, held.hashes, train.vectors, train.hashes,
                            min_similarity=rule.min_similarity, max_hamming=rule.model_max_hamming, k=None)
        for (i, j), c in zip(pairs, pair_similarity(held.vectors, train.vectors, pairs), strict=True):
            found[(int(i), int(j))] = round(float(c), 4)
    bits = {p: int((int(held.hashes[p[0]]) ^ int(train.hashes[p[1]])).bit_count()) for p in found}
    return [(i, j, float(bits[(i, j)]), cos) for (i, j), cos in sorted(found.items())]


@dataclass
class LeakReport:
    rule: LeakRule
    leaks: list[Leak]
    counts: dict[str, int]  # items read per split
    unreadable: list[str]

    def closest_per_train(self) -> dict[str, Leak]:
        """Each leaking train key's closest held-out match (test before val, then key, on ties)."""
        best: dict[str, Leak] = {}
        for leak in sorted(self.leaks, key=lambda x: (x.distance, x.held_out_split != "test", x.held_out_key)):
            best.setdefault(leak.train_key, leak)
        return dict(sorted(best.items()))


def find_leaks(items: Items, rule: LeakRule, critic: Any = None) -> LeakReport:
    """Every (val or test item, train item) pair that the rule calls near-duplicates, sorted."""
    sigs = {split: signatures(items.get(split, ()), rule, critic) for split in SPLITS}
    leaks = []
    for split in HELD_OUT:
        unit = "levels RMS" if rule.signal == "palette" else "dHash bits"
        for i, j, distance, cosine in _pairs(sigs[split], sigs["train"], rule):
            leaks.append(Leak(sigs[split].keys[i], split, sigs["train"].keys[j], distance, unit, cosine))
    leaks.sort(key=lambda x: (x.held_out_split, x.held_out_key, x.train_key))
    return LeakReport(rule, leaks, {s: len(sigs[s].keys) + len(sigs[s].unreadable) for s in SPLITS},
                      sorted(k for s in SPLITS for k in sigs[s].unreadable))


def _crop_bytes(samples: Iterable[Any]) -> Iterator[tuple[str, bytes]]:
    """(key, bytes) of shard samples' crop files; a missing one is skipped here (the shard writer rejects it)."""
    for s in samples:
        try:
            yield s.key, Path(s.path).read_bytes()
        except OSError:
            continue


def leak_finder(rule: LeakRule, critic: Any = None,
                on_report: Callable[[LeakReport], None] | None = None
                ) -> Callable[[Mapping[str, Sequence[Any]]], dict[str, str]]:
    """ingest.shards.LeakFinder: given each split's ShardSamples, train image_id -> reject reason."""

    def find(samples: Mapping[str, Sequence[Any]]) -> dict[str, str]:
        report = find_leaks({split: _crop_bytes(samples.get(split, ())) for split in SPLITS}, rule, critic)
        if on_report:
            on_report(report)
        ids = {s.key: s.image_id for s in samples.get("train", ())}
        return {ids[key]: leak.reason() for key, leak in report.closest_per_train().items()}

    return find


def shard_items(shards_root: str | Path, dataset: str, split: str) -> Iterator[tuple[str, bytes]]:
    """(key, jpg bytes) of every sample in the split's shards as its index lists them (nothing when no index)."""
    from nima_train.data import index_path, shard_urls
    from nima_train.tarstream import tar_samples

    index = Path(index_path(shards_root, dataset, split))
    if not index.is_file():
        return
    for sample in tar_samples({"url": url} for url in shard_urls(index)):
        yield sample["__key__"], sample.get("jpg", b"")


def shard_leaks(shards_root: str | Path, dataset: str, rule: LeakRule, critic: Any = None) -> LeakReport:
    """find_leaks over the dataset's written shards: what the training run would actually read."""
    return find_leaks({split: shard_items(shards_root, dataset, split) for split in SPLITS}, rule, critic)


def shards_rule(dataset: str, pinned: str | None, connect: Callable[[], Any], home: str | Path) -> LeakRule:
    """The rule a shards run uses: Kuler's palettes; for photos the dHash alone, or with `pinned` (a model version,
    or an alias resolved now) the dHash plus that model's features, pinned by version and checkpoint sha256. Never
    whatever model is promoted: a promotion must not change the shards or what blocks them (module docstring)."""
    if dataset == "kuler" or not pinned:
        return rule_for(dataset, False)
    from warehouse.models_lookup import resolve_model

    with connect() as conn:
        model = resolve_model(conn, home, pinned)
    return replace(rule_for(dataset, True), model=model.version, model_sha256=model.sha256)


def load_critic(rule: LeakRule, connect: Callable[[], Any], home: str | Path) -> Any:
    """The model the rule pins (None when it pins none), its checkpoint verified against the rule's sha256:
    raises ModelNotFound or CheckpointMismatch rather than compare with another model."""
    if rule.signal != "features":
        return None
    from critic.models import load_critic as load_model

    return load_model(connect, home, rule.model, expected_sha256=rule.model_sha256)[0]


def rule_and_model(dataset: str, pinned: str | None, connect: Callable[[], Any],
                   home: str | Path) -> tuple[LeakRule, Any]:
    """shards_rule and the critic it needs."""
    rule = shards_rule(dataset, pinned, connect, home)
    return rule, load_critic(rule, connect, home)


def record_rule(dataset_dir: str | Path, rule: LeakRule) -> Path:
    """Write the rule next to the dataset's shards (RULE_FILE, whole or not at all), for the check to use."""
    from common.atomic import write_atomic

    path = Path(dataset_dir) / RULE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(rule.as_dict(), sort_keys=True, indent=1) + "\n").encode())
    return path


def recorded_rule(dataset_dir: str | Path) -> LeakRule | None:
    """The rule recorded with the dataset's shards; None when none was (shards written before rules were
    recorded); ValueError naming the file when it cannot be read as one."""
    path = Path(dataset_dir) / RULE_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable leak rule: {exc}") from exc
    try:
        return LeakRule.from_dict(doc)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a leak rule: {exc}") from exc
