"""The leak search at scale (issue 30 point 6): signatures cached by content hash under AESTHETIC_HOME, shared by
the shards drop and the blocking check; the search resumed from the last one, with the same pairs as a fresh
exact scan (critic.neardup.cross_pairs, k=None)."""

from __future__ import annotations

import io

import dagster as dg
import numpy as np
import pytest

import critic.leakage as leakage
from assets.checks import sac_shards_no_cross_split_duplicates
from assets.sac import sac_images
from assets.shards import sac_shards
from critic.leak_cache import SignatureCache, as_shas, cache_dir, content_sha
from critic.leakage import CropFile, LeakRule, find_leaks
from critic.neardup import cross_pairs
from pipelines.resources import build_resources
from tests.helpers.critic_models import picture

DHASH = LeakRule("dhash", 6)


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the dHash computations of the leak search (the real function still does the work)."""
    calls: list[int] = []
    real = leakage.perceptual_hash

    def counted(img):
        calls.append(1)
        return real(img)

    monkeypatch.setattr(leakage, "perceptual_hash", counted)
    return calls


def _png(seed: int, side: int = 48) -> bytes:
    buf = io.BytesIO()
    picture(seed, side).save(buf, "PNG")
    return buf.getvalue()


def _items(seeds: dict[str, list[int]]) -> dict[str, list[tuple[str, bytes]]]:
    return {split: [(f"{split}_{s}", _png(s)) for s in ss] for split, ss in seeds.items()}


SEEDS = {"train": [1, 2, 3, 4, 5, 6], "val": [7, 1], "test": [8, 3]}  # 1 and 3: byte copies across splits


def _triples(report) -> set[tuple[str, str, str, float]]:
    return {(x.held_out_key, x.held_out_split, x.train_key, x.distance) for x in report.leaks}


def test_an_unchanged_crop_is_not_hashed_again_and_its_pairs_not_compared_again(tmp_path, hash_calls):
    items, cache = _items(SEEDS), tmp_path / "cache"
    first = find_leaks(items, DHASH, cache=cache, dataset="ava")
    assert len(hash_calls) == 8 and first.work["signatures_computed"] == 8  # 10 items, 8 distinct contents
    assert first.work["pairs_compared"] == 4 * 6
    second = find_leaks(items, DHASH, cache=cache, dataset="ava")
    assert len(hash_calls) == 8, "an unchanged crop was hashed again"
    assert second.work == {"signatures_computed": 0, "signatures_cached": 8, "pairs_compared": 0}
    assert _triples(second) == _triples(first) == _triples(find_leaks(items, DHASH))
    assert {(h, t) for h, _, t, _ in _triples(first)} == {("val_1", "train_1"), ("test_3", "train_3")}


def test_a_changed_crop_is_hashed_again_and_searched_against_the_unchanged_train_index(tmp_path, hash_calls):
    items, cache = _items(SEEDS), tmp_path / "cache"
    find_leaks(items, DHASH, cache=cache, dataset="ava")
    items["val"][0] = ("val_7", _png(2))  # same key, new content: now a copy of train_2
    hash_calls.clear()
    report = find_leaks(items, DHASH, cache=cache, dataset="ava")
    assert len(hash_calls) == 0  # train_2 has those very bytes: the cache already knows them
    assert report.work["pairs_compared"] == 6  # the one new query content against the 6 train contents
    assert ("val_7", "val", "train_2", 0.0) in _triples(report)
    items["train"].append(("train_9", _png(9)))
    report = find_leaks(items, DHASH, cache=cache, dataset="ava")
    assert len(hash_calls) == 1 and report.work["pairs_compared"] == 4  # 4 query contents x the new train item


def test_a_crop_file_whose_bytes_are_not_its_recorded_sha_is_searched_but_never_cached(tmp_path, hash_calls):
    crop = tmp_path / "train.png"
    crop.write_bytes(_png(1))
    items = {"train": [("train_1", CropFile(str(crop), content_sha(b"what the warehouse recorded")))],
             "val": [("val_1", _png(1))], "test": []}
    first = find_leaks(items, DHASH, cache=tmp_path / "cache", dataset="ava")
    assert [(x.held_out_key, x.train_key) for x in first.leaks] == [("val_1", "train_1")] and len(hash_calls) == 2
    again = find_leaks(items, DHASH, cache=tmp_path / "cache", dataset="ava")
    assert len(hash_calls) == 3 and again.work["pairs_compared"] == 1  # read, hashed and searched again
    assert [x.as_dict() for x in again.leaks] == [x.as_dict() for x in first.leaks]


def test_features_are_cached_per_model_version_and_the_hash_is_not_recomputed(tmp_path, hash_calls):
    from critic.scoring import Critic
    from tests.helpers.critic_models import save_test_checkpoint

    critic = Critic.from_checkpoint(save_test_checkpoint(tmp_path / "model.pt"))
    rows: list[int] = []
    score = critic.score_images
    critic.score_images = lambda images: (rows.append(len(images)), score(images))[1]
    items, cache = _items(SEEDS), tmp_path / "cache"
    v1 = LeakRule("features", 6, 0.95, 10, model="v1", model_sha256="a" * 64)
    first = find_leaks(items, v1, critic, cache=cache, dataset="ava")
    assert sum(rows) == 8 and len(hash_calls) == 8
    again = find_leaks(items, v1, critic, cache=cache, dataset="ava")
    assert sum(rows) == 8 and len(hash_calls) == 8 and again.work["signatures_computed"] == 0
    assert [x.as_dict() for x in again.leaks] == [x.as_dict() for x in first.leaks]
    v2 = LeakRule("features", 6, 0.95, 10, model="v2", model_sha256="b" * 64)
    find_leaks(items, v2, critic, cache=cache, dataset="ava")
    assert sum(rows) == 16 and len(hash_calls) == 8  # new model: features again, the dHash from the cache
    assert {p.name for p in cache.glob("features-*.npz")} == {f"features-v1-{'a' * 16}.npz",
                                                               f"features-v2-{'b' * 16}.npz"}


@pytest.mark.parametrize("table", ["dhash.npz", "pairs"])
@pytest.mark.parametrize("damage", [b"not a zip file", "unsorted"])
def test_a_corrupt_cache_file_is_rebuilt_with_one_log_line_and_never_trusted(tmp_path, hash_calls, table, damage):
    items, cache, lines = _items(SEEDS), tmp_path / "cache", []
    expected = _triples(find_leaks(items, DHASH, cache=cache, dataset="ava"))
    path = cache / table if table.endswith(".npz") else next((cache / "pairs").glob("*.npz"))
    if damage == "unsorted":  # a whole file whose rows are not what the cache writes
        with np.load(path) as z:
            cols = {k: z[k] for k in z.files}
        name = "sha" if "sha" in cols else "train"
        cols[name] = cols[name][::-1].copy()
        with open(path, "wb") as fh:
            np.savez(fh, **cols)
    else:
        path.write_bytes(damage)
    hash_calls.clear()
    report = find_leaks(items, DHASH, cache=cache, dataset="ava", log=lines.append)
    assert len(lines) == 1 and str(path) in lines[0] and "rebuilt" in lines[0]
    assert _triples(report) == expected
    assert len(hash_calls) == (8 if table == "dhash.npz" else 0)
    assert report.work["pairs_compared"] == (0 if table == "dhash.npz" else 4 * 6)
    lines.clear()
    assert find_leaks(items, DHASH, cache=cache, dataset="ava", log=lines.append).work["pairs_compared"] == 0
    assert lines == []  # the file written in its place is read without complaint


def test_two_writers_that_read_the_same_table_both_keep_their_rows(tmp_path):
    a, b = SignatureCache(tmp_path), SignatureCache(tmp_path)
    x, y = as_shas([content_sha(b"x")]), as_shas([content_sha(b"y")])
    assert not a.lookup("dhash", x)[0].any() and not b.lookup("dhash", y)[0].any()
    a.store("dhash", x, np.array([True]), np.array([1], np.uint64))
    b.store("dhash", y, np.array([True]), np.array([2], np.uint64))  # merged with a's file, not written over it
    found, ok, value = SignatureCache(tmp_path).lookup("dhash", np.concatenate([x, y]))
    assert found.all() and ok.all() and value.tolist() == [1, 2]


def _flip(h: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    out = h.copy()
    for i in range(len(out)):
        for b in rng.choice(64, bits, replace=False):
            out[i] ^= np.uint64(1) << np.uint64(b)
    return out


def _synthetic(rng: np.random.Generator, n_train: int, n_held: int, tag: str):
    """Hashes and features drawn directly, with held-out items planted at 5, 6 (the limit: a tie) and 7 bits
    from train items, and features near the 0.95 cosine limit on either side."""
    train_h = rng.integers(0, 2**63, n_train, dtype=np.int64).astype(np.uint64)
    held_h = rng.integers(0, 2**63, n_held, dtype=np.int64).astype(np.uint64)
    src = rng.choice(n_train, 3 * (n_held // 6), replace=False)
    for k, bits in enumerate((5, 6, 7)):
        part = src[k * (n_held // 6) : (k + 1) * (n_held // 6)]
        held_h[k * (n_held // 6) : (k + 1) * (n_held // 6)] = _flip(train_h[part], bits, rng)
    train_f = rng.standard_normal((n_train, 8)).astype(np.float32)
    held_f = rng.standard_normal((n_held, 8)).astype(np.float32)
    for i, j in enumerate(src[: n_held // 2]):  # same picture by features: cosine 0.95 +- 1e-6
        e = rng.standard_normal(8)
        u = train_f[j] / np.linalg.norm(train_f[j])
        e -= (e @ u) * u
        c = 0.95 + rng.uniform(-1e-6, 1e-6)
        held_f[i] = (c * u + np.sqrt(1 - c * c) * e / np.linalg.norm(e)).astype(np.float32)
    shas = [content_sha(f"{tag}{i}".encode()) for i in range(n_train + n_held)]
    return shas, np.concatenate([train_h, held_h]), np.concatenate([train_f, held_f])


def _expected(rule: LeakRule, held: list[int], train: list[int], hashes, feats) -> set:
    """The pairs of one fresh exact scan, straight from cross_pairs."""
    found = {(held[i], train[j]) for i, j in cross_pairs(None, hashes[held], None, hashes[train],
                                                         max_hamming=rule.max_hamming, k=None)}
    if rule.signal == "features":
        found |= {(held[i], train[j]) for i, j in cross_pairs(
            feats[held], hashes[held], feats[train], hashes[train], min_similarity=rule.min_similarity,
            max_hamming=rule.model_max_hamming, k=None)}
    return found


@pytest.mark.parametrize("rule", [DHASH, LeakRule("features", 6, 0.95, 10, model="m", model_sha256="c" * 64)],
                         ids=["dhash", "features"])
def test_the_resumed_search_finds_exactly_the_pairs_of_a_fresh_exact_scan(tmp_path, rule):
    rng = np.random.default_rng(0)
    shas, hashes, feats = _synthetic(rng, 3000, 300, "a")
    more, more_h, more_f = _synthetic(rng, 60, 12, "b")  # the next drop: new items on both sides
    shas, hashes, feats = shas + more, np.concatenate([hashes, more_h]), np.concatenate([feats, more_f])
    cache = SignatureCache(tmp_path)
    cache.store("dhash", as_shas(shas), np.ones(len(shas), bool), hashes)
    cache.store(f"features-m-{'c' * 16}", as_shas(shas), np.ones(len(shas), bool), feats)
    first_train, first_held = list(range(3000)), list(range(3000, 3300))
    passes = [(first_train, first_held),
              (first_train, first_held),  # nothing changed
              (first_train[60:] + list(range(3300, 3360)), first_held + list(range(3360, 3372))),  # new and gone
              (first_train[60:] + list(range(3300, 3360)), first_held[::2])]  # held-out items gone only
    for number, (train, held) in enumerate(passes):
        val, test = held[: len(held) // 2], held[len(held) // 2 :]
        items = {"train": [(f"t{i}", CropFile("/nonexistent", shas[i])) for i in train],
                 "val": [(f"h{i}", CropFile("/nonexistent", shas[i])) for i in val],
                 "test": [(f"h{i}", CropFile("/nonexistent", shas[i])) for i in test]}
        report = find_leaks(items, rule, cache=tmp_path, dataset="ava")
        got = {(int(x.held_out_key[1:]), int(x.train_key[1:])) for x in report.leaks}
        expected = _expected(rule, held, train, hashes, feats)
        assert got == expected, f"pass {number}"
        assert report.work["signatures_computed"] == 0
        bits = {int(x.distance) for x in report.leaks}
        assert {5, 6} <= bits and 7 not in bits or rule.signal == "features"
        if rule.signal == "features":
            assert any(x.cosine is not None and x.distance > 6 for x in report.leaks)  # pairs found by features
    assert report.work["pairs_compared"] == 0  # the last pass removed items only


def test_the_shards_drop_and_its_blocking_check_share_the_cache_and_stay_green(sample_raw, home, hash_calls):
    """Real runs: the drop hashes each distinct crop once, the check right after it hashes none and compares no
    pair (the train items the drop left out only remove pairs), and a second run hashes nothing at all."""
    assets = [sac_images, sac_shards, sac_shards_no_cross_split_duplicates]

    def run() -> tuple[dict, dict, dg.AssetCheckEvaluation]:
        result = dg.materialize(assets, resources=build_resources(home=home, raw=sample_raw.out),
                                instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
        assert result.success
        (meta,) = [m.metadata for m in result.asset_materializations_for_node("sac_shards")]
        (check,) = result.get_asset_check_evaluations()
        return meta["leak_search"].value, check.metadata["leak_search"].value, check

    drop, checked, check = run()
    assert check.passed and check.metadata["pairs"].value == 0
    assert drop["signatures_computed"] == len(hash_calls) > 0 and drop["signatures_cached"] == 0
    assert checked == {"signatures_computed": 0, "signatures_cached": checked["signatures_cached"],
                       "pairs_compared": 0}
    assert checked["signatures_cached"] > 0
    assert (cache_dir(home) / "dhash.npz").is_file()
    hashed = len(hash_calls)
    drop, checked, check = run()
    assert len(hash_calls) == hashed and drop["signatures_computed"] == 0 and check.passed
    assert drop["pairs_compared"] > 0  # the train items the check no longer had, against the held-out ones
    assert checked["pairs_compared"] == 0
