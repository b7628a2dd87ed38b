"""Cross-split leakage: train items that are near-duplicates of val or test items (issue 19, point 5).

One search, used twice on the same data: by the shards stage, as its leak finder (the train samples it names are
left out of the train shards), and by the blocking asset checks on the shards assets, over the shards as written
(what training will read). Both call `find_leaks` with the same rule: the shards asset records the rule it used
next to the shards (`record_rule`, shards/<dataset>/leak_rule.json) and the check reads it (`recorded_rule`).
Every match is listed (not each held-out item's nearest k) and a pair's verdict depends on its two items alone,
so the check over the train items a drop left finds no pair. Both share a cache under $AESTHETIC_HOME
(critic/leak_cache.py): signatures by the crop's content hash, and the last search's pairs, so a pass compares
only the pairs it has not compared before (new held-out items against all train, the others against new train).

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from critic.leak_cache import PairState, SignatureCache, as_shas, content_sha, load_pairs, positions, save_pairs
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


def compute_signatures(datas: Sequence[bytes | None], want_hash: np.ndarray, want_vector: np.ndarray,
                       signal: str, critic: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(ok, hashes, vectors) aligned with datas: ok where the bytes decode (None: not read, not ok); a row's dHash
    is computed where want_hash, its palette ('palette') or model features ('features') where want_vector;
    rows not computed are zeros. Each image is decoded once, whatever is asked of it."""
    n = len(datas)
    ok, hashes, vectors = np.zeros(n, bool), np.zeros(n, np.uint64), None
    pending: list[tuple[int, Image.Image]] = []

    def put(rows: list[int], values: np.ndarray) -> None:
        nonlocal vectors
        if vectors is None:
            vectors = np.zeros((n, values.shape[1]), np.float32)
        vectors[rows] = values

    def flush() -> None:
        if pending:
            put([i for i, _ in pending],
                critic.score_images([im for _, im in pending]).features.numpy().astype(np.float32))
            pending.clear()

    for i, data in enumerate(datas):
        try:
            img = _decode(data) if data is not None else None
        except (OSError, UnidentifiedImageError, ValueError):
            img = None
        if img is None:
            continue
        ok[i] = True
        if want_hash[i]:
            hashes[i] = perceptual_hash(img)
        if want_vector[i] and signal == "palette":
            put([i], palette(img)[None])
        elif want_vector[i] and signal == "features":
            pending.append((i, img.convert("RGB")))
            if len(pending) >= BATCH:
                flush()
    flush()
    if vectors is None and signal in ("palette", "features") and want_vector.any():
        vectors = np.zeros((n, 3 * KULER_STRIPES), np.float32)  # nothing decoded: the width is never read
    return ok, hashes, vectors


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
    # what this pass cost: signatures computed and read from the cache, and pairs compared (the rest of the
    # pairs the last search of the same dataset and rule had compared already)
    work: dict[str, int] = field(default_factory=dict)

    def closest_per_train(self) -> dict[str, Leak]:
        """Each leaking train key's closest held-out match (test before val, then key, on ties)."""
        best: dict[str, Leak] = {}
        for leak in sorted(self.leaks, key=lambda x: (x.distance, x.held_out_split != "test", x.held_out_key)):
            best.setdefault(leak.train_key, leak)
        return dict(sorted(best.items()))


class CropFile(NamedTuple):
    """A crop known by the sha256 its bytes had when recorded (the warehouse's): read only when the cache does
    not hold its signature. If the bytes read do not match, the signature is used but not cached under it."""

    path: str
    sha256: str


@dataclass
class _Crops:
    """The items of every split by content hash: `shas` sorted and unique, `source` each one's bytes or file;
    per split the items' keys and their rows in shas (arrays: a corpus has hundreds of thousands)."""

    shas: np.ndarray
    source: list[bytes | CropFile]
    keys: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]


def _crops(items: Items) -> _Crops:
    keys: dict[str, list[str]] = {}
    shas: list[str] = []
    sources: list[bytes | CropFile] = []
    for split in SPLITS:
        keys[split] = []
        for key, data in items.get(split, ()):
            keys[split].append(key)
            sources.append(data)
            shas.append(data.sha256 if isinstance(data, CropFile) else content_sha(data))
    unique, first, inverse = np.unique(as_shas(shas), return_index=True, return_inverse=True)
    bounds = np.cumsum([0] + [len(keys[split]) for split in SPLITS])
    return _Crops(unique, [sources[i] for i in first.tolist()],
                  {split: np.array(keys[split], dtype=object) for split in SPLITS},
                  {split: inverse.reshape(-1)[bounds[i] : bounds[i + 1]].astype(np.int64)
                   for i, split in enumerate(SPLITS)})


def _read_source(src: bytes | CropFile) -> tuple[bytes | None, bool]:
    """(bytes, whether they are what the content hash names): a file is read; None when it cannot be."""
    if not isinstance(src, CropFile):
        return src, True
    try:
        data = Path(src.path).read_bytes()
    except OSError:
        return None, False
    return data, content_sha(data) == src.sha256


def _cache_kinds(rule: LeakRule) -> tuple[str | None, str | None]:
    """The cache tables of the rule's hash and vector (None where the rule has none, or a model pinned by no
    version, whose features have nothing to be keyed by)."""
    if rule.signal == "palette":
        return None, "palette"
    if rule.signal == "features":
        return "dhash", f"features-{rule.model}-{(rule.model_sha256 or '')[:16]}" if rule.model else None
    return "dhash", None


def _lookup(cache: SignatureCache | None, kind: str | None, shas: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(found, ok, value) of each sha in the kind's cache table; nothing found without a cache or a kind."""
    if cache is None or kind is None:
        return np.zeros(len(shas), bool), np.zeros(len(shas), bool), None
    found, ok, value = cache.lookup(kind, shas)
    return found, (ok if ok is not None else found) & found, value


def _column(cached: tuple[np.ndarray, np.ndarray, np.ndarray | None], rows: np.ndarray, ok_new: np.ndarray,
            new: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The cached (ok, value) column with the computed rows put in."""
    _, ok, value = cached
    ok = ok.copy()
    ok[rows] = ok_new
    if value is None:
        shape = (len(ok), *(new.shape[1:] if new is not None else ()))
        value = np.zeros(shape, new.dtype if new is not None else np.uint64)
    if len(rows):
        value[rows] = new
    return ok, value


def _signature_table(crops: _Crops, rule: LeakRule, critic: Any, cache: SignatureCache | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Signatures, dict[str, int]]:
    """(ok, gone, untrusted, signatures, work) for every row of crops.shas: read from the cache where it has
    them, else computed (each missing crop decoded once, whatever the rule compares) and added to it. gone: files
    not readable; untrusted: files whose bytes are not those of the recorded sha (computed, never cached)."""
    n, kinds = len(crops.shas), _cache_kinds(rule)
    wants = (rule.signal != "palette", rule.signal != "dhash")
    cached = [_lookup(cache, kind, crops.shas) for kind in kinds]
    need = [np.full(n, want) & ~c[0] for want, c in zip(wants, cached, strict=True)]
    if rule.signal == "features" and critic is None and need[1].any():
        raise ValueError("the 'features' rule needs a model (critic) for features not in the cache")
    todo = np.flatnonzero(need[0] | need[1])
    read = [_read_source(crops.source[i]) for i in todo]
    ok_new, hashes_new, vectors_new = compute_signatures([d for d, _ in read], need[0][todo], need[1][todo],
                                                         rule.signal, critic)
    trusted = np.array([t for _, t in read], bool)
    gone, untrusted = np.zeros(n, bool), np.zeros(n, bool)
    gone[todo] = [d is None for d, _ in read]
    untrusted[todo] = ~trusted
    ok, values = ~gone, []
    for w, new in enumerate((hashes_new, vectors_new)):
        if not wants[w]:
            values.append(None)
            continue
        sel = need[w][todo]
        ok_w, value = _column(cached[w], todo[sel], ok_new[sel], new[sel] if new is not None else None)
        ok &= ok_w
        values.append(value)
        fresh = todo[sel & trusted]
        if cache is not None and kinds[w] is not None:
            cache.store(kinds[w], crops.shas[fresh], ok_w[fresh], value[fresh])
    work = {"signatures_computed": int(len(todo) - gone.sum()), "signatures_cached": int(n - len(todo))}
    return ok, gone, untrusted, Signatures([], values[0], values[1], []), work


def _subset(sigs: Signatures, rows: np.ndarray) -> Signatures:
    return Signatures([str(r) for r in rows], None if sigs.hashes is None else sigs.hashes[rows],
                      None if sigs.vectors is None else sigs.vectors[rows], [])


def _search(sigs: Signatures, query: np.ndarray, train: np.ndarray, shas: np.ndarray, rule: LeakRule,
            last: PairState | None) -> tuple[PairState, int]:
    """Every (query row, train row) match, as a PairState over their shas, and the number of pairs compared.

    The train rows are searched once for all held-out rows. What `last` compared is not compared again: its
    pairs among rows still here are kept, the new query rows are searched against every train row, and the query
    rows it had against the new train rows only. Since a pair's verdict depends on its two items alone, the
    result is what one search of every pair gives."""
    text = json.dumps(rule.as_dict(), sort_keys=True)
    last = last if last is not None and last.rule == text else PairState.empty(text)
    q_shas, t_shas = shas[query], shas[train]
    q_old, t_old = positions(last.query, q_shas)[0], positions(last.train, t_shas)[0]
    in_q, q_row = positions(q_shas, last.query[last.qi])
    in_t, t_row = positions(t_shas, last.train[last.tj])
    keep = in_q & in_t
    qi, tj, dist, cos = [q_row[keep]], [t_row[keep]], [last.distance[keep]], [last.cosine[keep]]
    compared = 0
    for q_sel, t_sel in ((np.flatnonzero(~q_old), np.arange(len(train))),
                         (np.flatnonzero(q_old), np.flatnonzero(~t_old))):
        if len(q_sel) == 0 or len(t_sel) == 0:
            continue
        compared += len(q_sel) * len(t_sel)
        found = _pairs(_subset(sigs, query[q_sel]), _subset(sigs, train[t_sel]), rule)
        qi.append(q_sel[[i for i, _, _, _ in found]].astype(np.int64))
        tj.append(t_sel[[j for _, j, _, _ in found]].astype(np.int64))
        dist.append(np.array([d for _, _, d, _ in found], float))
        cos.append(np.array([np.nan if c is None else c for _, _, _, c in found], float))
    return PairState(text, q_shas, t_shas, *(np.concatenate(x) for x in (qi, tj, dist, cos))), compared


def _forget(state: PairState, shas: np.ndarray) -> PairState:
    """The state without these (sorted) shas and their pairs: the next search takes them as new."""
    if len(shas) == 0:
        return state
    keep_q, keep_t = ~positions(shas, state.query)[0], ~positions(shas, state.train)[0]
    pair = keep_q[state.qi] & keep_t[state.tj]
    return PairState(state.rule, state.query[keep_q], state.train[keep_t], (np.cumsum(keep_q) - 1)[state.qi[pair]],
                     (np.cumsum(keep_t) - 1)[state.tj[pair]], state.distance[pair], state.cosine[pair])


def find_leaks(items: Items, rule: LeakRule, critic: Any = None, cache: str | Path | None = None,
               dataset: str | None = None, log: Callable[[str], None] | None = None) -> LeakReport:
    """Every (val or test item, train item) pair that the rule calls near-duplicates, sorted.

    Items are (key, bytes) or (key, CropFile). With `cache` (a folder: leak_cache.cache_dir(home)) signatures
    are kept there by content hash, and with `dataset` as well the search resumes from the last one of that
    dataset under this rule, comparing only the pairs it had not."""
    store = None if cache is None else SignatureCache(cache, log) if log else SignatureCache(cache)
    crops = _crops(items)
    ok, gone, untrusted, sigs, work = _signature_table(crops, rule, critic, store)
    rows = {split: np.unique(crops.rows[split]) for split in SPLITS}
    query = np.union1d(rows["val"], rows["test"]).astype(np.int64)
    query, train = query[ok[query]], rows["train"][ok[rows["train"]]]
    last = load_pairs(cache, dataset, rule.as_dict(), store.log) if store and dataset else None
    state, work["pairs_compared"] = _search(sigs, query, train, crops.shas, rule, last)
    if store and dataset:
        save_pairs(cache, dataset, _forget(state, crops.shas[untrusted]))
    return _report(crops, ok, gone, state, rule, work)


def _keys_of(crops: _Crops, split: str, rows: np.ndarray) -> dict[int, list[str]]:
    """The split's keys whose crop is one of these rows, by row."""
    mine = np.isin(crops.rows[split], rows)
    out: dict[int, list[str]] = {}
    for key, row in zip(crops.keys[split][mine].tolist(), crops.rows[split][mine].tolist(), strict=True):
        out.setdefault(row, []).append(key)
    return out


def _report(crops: _Crops, ok: np.ndarray, gone: np.ndarray, state: PairState, rule: LeakRule,
            work: dict[str, int]) -> LeakReport:
    """The sha pairs as pairs of keys: every held-out key with the query sha against every train key."""
    unit = "levels RMS" if rule.signal == "palette" else "dHash bits"
    q_rows = positions(crops.shas, state.query)[1][state.qi]
    t_rows = positions(crops.shas, state.train)[1][state.tj]
    held = {split: _keys_of(crops, split, q_rows) for split in HELD_OUT}
    train = _keys_of(crops, "train", t_rows)
    leaks = []
    for q, t, d, c in zip(q_rows.tolist(), t_rows.tolist(), state.distance.tolist(), state.cosine.tolist(),
                          strict=True):
        cosine = None if np.isnan(c) else float(c)
        for split in HELD_OUT:
            leaks += [Leak(h, split, k, float(d), unit, cosine) for h in held[split].get(q, ()) for k in train[t]]
    leaks.sort(key=lambda x: (x.held_out_split, x.held_out_key, x.train_key))
    counts = {s: int((~gone[crops.rows[s]]).sum()) for s in SPLITS}
    bad = ~ok & ~gone
    unreadable = sorted(k for s in SPLITS for k in crops.keys[s][bad[crops.rows[s]]].tolist())
    return LeakReport(rule, leaks, counts, unreadable, work)


def leak_finder(rule: LeakRule, critic: Any = None,
                on_report: Callable[[LeakReport], None] | None = None, cache: str | Path | None = None,
                dataset: str | None = None) -> Callable[[Mapping[str, Sequence[Any]]], dict[str, str]]:
    """ingest.shards.LeakFinder: given each split's ShardSamples, train image_id -> reject reason. A crop is
    read only when the cache lacks the signature of the sha256 the warehouse recorded for it."""

    def find(samples: Mapping[str, Sequence[Any]]) -> dict[str, str]:
        items = {split: [(s.key, CropFile(s.path, s.sha256)) for s in samples.get(split, ())] for split in SPLITS}
        report = find_leaks(items, rule, critic, cache, dataset)
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


def shard_leaks(shards_root: str | Path, dataset: str, rule: LeakRule, critic: Any = None,
                cache: str | Path | None = None) -> LeakReport:
    """find_leaks over the dataset's written shards: what the training run would actually read (each crop's
    bytes hashed to find its cached signature; decoded only when there is none)."""
    return find_leaks({split: shard_items(shards_root, dataset, split) for split in SPLITS}, rule, critic, cache,
                      dataset)


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
