"""Cross-split near-duplicates: the sample data's planted copies through real crops, real shards, a real DuckDB
file and real Dagster runs (the shards assets, their blocking checks and the training asset behind them)."""

from __future__ import annotations

import io
from itertools import combinations
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from assets.ava import ava_images
from assets.chain import build_chain
from assets.checks import (
    ava_shards_no_cross_split_duplicates,
    kuler_shards_no_cross_split_duplicates,
    sac_shards_no_cross_split_duplicates,
)
from assets.kuler import kuler_images
from assets.sac import sac_images
from assets.shards import ava_shards, kuler_shards, sac_shards
from critic.leakage import (
    LeakRule,
    find_leaks,
    lift,
    palette_similarity_bound,
    rule_and_model,
    rule_for,
    shard_leaks,
)
from ingest.sample_data import SampleReport, write_sample_data
from ingest.shard_writer import sample_key
from pipelines.resources import build_resources
from tests.helpers.critic_models import register_model
from warehouse.db import connect

IMAGES = {"ava": ava_images, "sac": sac_images, "kuler": kuler_images}
SHARDS = {"ava": ava_shards, "sac": sac_shards, "kuler": kuler_shards}
nima_ava = build_chain()["nima_ava"]
CHECKS = {"ava": ava_shards_no_cross_split_duplicates, "sac": sac_shards_no_cross_split_duplicates,
          "kuler": kuler_shards_no_cross_split_duplicates}


def _planted(report: SampleReport, dataset: str) -> set[tuple[str, str, str]]:
    """(held-out key, its split, train key) of the copies the sample data planted in a dataset."""
    return {(sample_key(dataset, d.original_id), d.original_split, sample_key(dataset, d.copy_id))
            for d in report.duplicates if d.dataset == dataset}


def _run(home: Path, raw: Path, assets: list, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, resources=build_resources(home=home, raw=raw), run_config=run_config,
                          instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def _check(result: dg.ExecuteInProcessResult, dataset: str):
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.asset_key.path == [f"{dataset}_shards"]]
    return evaluation


def _pairs(evaluation) -> set[tuple[str, str, str]]:
    return {(x["held_out_key"], x["held_out_split"], x["train_key"]) for x in evaluation.metadata["leaks"].value}


def _rows(home: Path, sql: str, params: list | None = None) -> list[tuple]:
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()


def test_sample_data_plants_resized_reencoded_copies_of_val_and_test_items_over_train_items(sample_raw):
    from ingest.ava import split_for
    from ingest.kuler import SPLIT_SALT
    from ingest.splits import three_way_split

    assert {d.dataset for d in sample_raw.duplicates} == {"ava", "sac", "kuler"}
    assert {d.original_split for d in sample_raw.duplicates} == {"val", "test"}
    assert sorted(sample_raw.faults["cross_split_duplicate"]) == sorted(d.copy_id for d in sample_raw.duplicates)
    test_ids = set((sample_raw.out / "ava/aesthetics_image_lists/generic_test.jpgl").read_text().split())
    for d in sample_raw.duplicates:
        if d.dataset == "ava":
            assert split_for(d.copy_id, test_ids, None) == "train"
            assert split_for(d.original_id, test_ids, None) == d.original_split
            copy, orig = (sample_raw.out / "ava/images" / f"{i}.jpg" for i in (d.copy_id, d.original_id))
            with Image.open(copy) as a, Image.open(orig) as b:
                assert a.width < b.width and copy.read_bytes() != orig.read_bytes()
        if d.dataset == "kuler":
            assert three_way_split(d.copy_id, SPLIT_SALT) == "train"
            assert three_way_split(d.original_id, SPLIT_SALT) == d.original_split


def test_with_dropping_on_the_planted_copies_leave_the_train_shards_as_rejects_and_the_checks_pass(sample_raw, home):
    """The default: every dataset's copies are rejects (stage shards, reason naming the held-out key), the train
    shards hold everything else, and each dataset's check finds no pair left."""
    assets = [*IMAGES.values(), *SHARDS.values(), *CHECKS.values()]
    result = _run(home, sample_raw.out, assets)
    assert result.success
    for dataset in SHARDS:
        planted = _planted(sample_raw, dataset)
        assert planted, f"the sample data plants copies in {dataset}"
        rejects = dict(_rows(home, "SELECT item_id, reason FROM rejects WHERE dataset = ? AND stage = 'shards'"
                                   " AND reason LIKE 'cross-split duplicate:%'", [dataset]))
        copies = {train_key.split("_", 1)[1]: (held, split) for held, split, train_key in planted}
        assert set(rejects) == set(copies)
        for item, (held, split) in copies.items():
            assert rejects[item].startswith(f"cross-split duplicate: of {split} sample {held} (")
        (meta,) = [m.metadata for m in result.asset_materializations_for_node(f"{dataset}_shards")]
        assert meta["cross_split_duplicates_dropped"].value == len(planted)
        assert meta["rejected_by_reason"].value["cross-split duplicate"] == len(planted)
        in_train = {r[0] for r in _rows(home, "SELECT key FROM read_parquet(?)",
                                        [str(home / "shards" / dataset / "train" / "*.parquet")])}
        assert not in_train & {k for _, _, k in planted}
        # read = accepted + rejected still holds at the shards stage
        shard_samples = _rows(home, "SELECT sum(n_samples) FROM shards WHERE dataset = ?", [dataset])[0][0]
        shard_rejects = _rows(home, "SELECT count(*) FROM rejects WHERE dataset = ? AND stage = 'shards'",
                              [dataset])[0][0]
        assert shard_samples + shard_rejects == _rows(home, "SELECT count(*) FROM images WHERE dataset = ?",
                                                      [dataset])[0][0]
        check = _check(result, dataset)
        assert check.passed and check.metadata["pairs"].value == 0 and check.metadata["model"].value == "none"


def test_with_dropping_off_a_planted_copy_fails_the_blocking_check_and_training_does_not_run(sample_raw, home):
    result = _run(home, sample_raw.out, [ava_images, ava_shards, ava_shards_no_cross_split_duplicates, nima_ava],
                  {"ops": {"ava_shards": {"config": {"drop_cross_split_duplicates": False}}}})
    assert not result.success
    check = _check(result, "ava")
    assert not check.passed
    assert _pairs(check) == _planted(sample_raw, "ava")
    assert check.metadata["pairs"].value == 2 and check.metadata["max_pairs"].value == 0
    assert check.metadata["rule"].value == "dHash within 6 bits"
    trained = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("nima_ava")]
    assert trained == [] and "nima_ava" not in {e.step_key for e in result.get_step_success_events()}
    assert _rows(home, "SELECT count(*) FROM models")[0][0] == 0
    assert _rows(home, "SELECT count(*) FROM rejects WHERE reason LIKE 'cross-split%'")[0][0] == 0


def test_the_number_of_pairs_tolerated_is_the_checks_config(sample_raw, home):
    assets = [ava_images, ava_shards, ava_shards_no_cross_split_duplicates]
    keep = {"ava_shards": {"config": {"drop_cross_split_duplicates": False}}}
    op = "ava_shards_no_cross_split_duplicates"
    tolerant = _run(home, sample_raw.out, assets, {"ops": {**keep, op: {"config": {"max_pairs": 2}}}})
    assert tolerant.success and _check(tolerant, "ava").passed
    strict = _run(home, sample_raw.out, assets, {"ops": {**keep, op: {"config": {"max_pairs": 1}}}})
    check = _check(strict, "ava")
    assert not check.passed and check.metadata["pairs"].value == 2
    assert "more than the 1 tolerated" in check.description


def test_with_a_pinned_model_the_check_names_it_and_still_finds_every_planted_pair(sample_raw, home):
    """The other path: with a model version pinned in the shards config, photos are compared by dHash and by its
    pooled features; the model can add pairs, never remove the hash's (this untrained test model puts the copies
    at cosine 0.8-0.9). Kuler stays on its palettes."""
    version = register_model(home, crop=96, resize=108)
    assets = [ava_images, sac_images, ava_shards, sac_shards, ava_shards_no_cross_split_duplicates,
              sac_shards_no_cross_split_duplicates]
    pinned = {"ops": {f"{d}_shards": {"config": {"leak_model": version}} for d in ("ava", "sac")}}
    result = _run(home, sample_raw.out, assets, {"ops": {f"{d}_shards": {"config": {
        "drop_cross_split_duplicates": False, "leak_model": version}} for d in ("ava", "sac")}})
    for dataset in ("ava", "sac"):
        check = _check(result, dataset)
        assert not check.passed and check.metadata["model"].value == version
        assert "or model features cosine >= 0.95 with dHash within 10 bits" in check.metadata["rule"].value
        assert _pairs(check) == _planted(sample_raw, dataset)
    dropped = _run(home, sample_raw.out, assets, pinned)
    assert dropped.success and all(_check(dropped, d).passed for d in ("ava", "sac"))
    (meta,) = [m.metadata for m in dropped.asset_materializations_for_node("ava_shards")]
    assert meta["cross_split_duplicates"].value.endswith(f"model {version}")
    rule, critic = rule_and_model("kuler", version, lambda: connect(home / "warehouse.duckdb"), home)
    assert rule.signal == "palette" and critic is None


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_the_models_features_add_a_pair_whose_dhash_is_past_the_hash_only_limit(tmp_path):
    """A test picture and a train copy with a brightened band: 10 dHash bits apart (past 6), cosine 0.96 for the
    model; an unrelated picture is as close in cosine but 36 bits away, so the hash still has to agree."""
    from critic.scoring import Critic
    from tests.helpers.critic_models import picture, save_test_checkpoint

    critic = Critic.from_checkpoint(save_test_checkpoint(tmp_path / "model.pt"))
    original = picture(3, 256)
    pixels = np.asarray(original).astype(int)
    pixels[:, 256 * 4 // 9 : 256 * 5 // 9] += 40
    banded = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    items = {"test": [("test_x", _png(original))], "val": [],
             "train": [("train_band", _png(banded)), ("train_other", _png(picture(53, 256)))]}
    assert find_leaks(items, rule_for("ava", with_model=False)).leaks == []
    (leak,) = find_leaks(items, rule_for("ava", with_model=True), critic).leaks
    assert (leak.held_out_key, leak.train_key) == ("test_x", "train_band")
    assert 6 < leak.distance <= 10 and leak.cosine >= 0.95
    assert leak.reason().startswith("cross-split duplicate: of test sample test_x (dHash bits 10, cosine 0.9")


def _kuler_home(sample_raw: SampleReport, home: Path) -> dict[str, list[tuple[str, bytes]]]:
    result = _run(home, sample_raw.out, [kuler_images, kuler_shards],
                  {"ops": {"kuler_shards": {"config": {"drop_cross_split_duplicates": False}}}})
    assert result.success
    from critic.leakage import shard_items

    return {split: list(shard_items(home / "shards", "kuler", split)) for split in ("train", "val", "test")}


def test_kuler_swatches_are_told_apart_by_palette_where_the_dhash_flags_many_unrelated_themes(tmp_path, home):
    """The false-positive figures of docs/kuler.md: 300 sample themes, the planted copies only."""
    report = write_sample_data(tmp_path / "raw", ava=0, sac=0, kuler=300, seed=0, faults=True)
    items = _kuler_home(report, home)
    planted = _planted(report, "kuler")
    by_palette = find_leaks(items, LeakRule("palette", max_levels=4.0))
    assert {(x.held_out_key, x.held_out_split, x.train_key) for x in by_palette.leaks} == planted
    assert all(x.distance <= 2.0 for x in by_palette.leaks)  # copies moved by at most 2 levels per channel
    by_dhash = find_leaks(items, LeakRule("dhash", 6))
    false = {(x.held_out_key, x.held_out_split, x.train_key) for x in by_dhash.leaks} - planted
    held_out = by_dhash.counts["val"] + by_dhash.counts["test"]
    assert len(false) > 0.03 * held_out * by_dhash.counts["train"]  # several percent of all cross pairs


def test_kuler_threshold_is_its_own_and_the_index_bound_keeps_every_pair_within_it():
    rng = np.random.default_rng(0)
    base = rng.random((200, 15))
    near = np.clip(base + rng.uniform(-4, 4, base.shape) / 255, 0, 1)  # up to 4 levels off: RMS <= 4
    both = np.vstack([base, near])
    cos = lift(both) @ lift(both).T / 16.0
    rms = np.sqrt((((both[:, None] - both[None]) * 255) ** 2).mean(-1))
    within = rms <= 4.0
    assert within.sum() > len(both)  # the near copies are within the limit of their originals
    assert (cos[within] >= palette_similarity_bound(4.0) - 1e-6).all()
    assert palette_similarity_bound(4.0) > 0.99  # far stricter than the photos' 0.95
    for a, b in combinations(range(3), 2):
        assert rms[a, b] > 4.0 and cos[a, b] < palette_similarity_bound(4.0)


def test_the_check_reads_the_shards_as_written(sample_raw, home):
    """shard_leaks reads the tars, so a copy that is in the train shards is found whatever the warehouse says."""
    result = _run(home, sample_raw.out, [sac_images, sac_shards],
                  {"ops": {"sac_shards": {"config": {"drop_cross_split_duplicates": False}}}})
    assert result.success
    report = shard_leaks(home / "shards", "sac", LeakRule("dhash", 6))
    assert {(x.held_out_key, x.held_out_split, x.train_key) for x in report.leaks} == _planted(sample_raw, "sac")
    n = _rows(home, "SELECT split, sum(n_samples) FROM shards WHERE dataset = 'sac' GROUP BY split")
    assert report.counts == {split: int(count) for split, count in n}


@pytest.mark.parametrize("dataset", ["ava", "kuler"])
def test_a_run_without_the_option_then_with_it_replaces_the_leak_by_a_reject(sample_raw, home, dataset):
    off = _run(home, sample_raw.out, [IMAGES[dataset], SHARDS[dataset], CHECKS[dataset]],
               {"ops": {f"{dataset}_shards": {"config": {"drop_cross_split_duplicates": False}}}})
    assert not _check(off, dataset).passed
    on = _run(home, sample_raw.out, [SHARDS[dataset], CHECKS[dataset]])
    assert on.success and _check(on, dataset).passed
    n = _rows(home, "SELECT count(*) FROM rejects WHERE dataset = ? AND reason LIKE 'cross-split%'", [dataset])
    assert n[0][0] == len(_planted(sample_raw, dataset))


def _write_sac_generations_of_one_picture(out: Path, generations: int = 60, per_generation: int = 2,
                                          unrelated: int = 20, seed: int = 1) -> dict[str, int]:
    """A SAC drop where many generations share near-identical pictures: two base pictures, each image one of
    them plus its own pixel noise (+-1 level, so different PNG bytes), alternating by generation; then
    `unrelated` one-image generations of their own pictures. image id -> cluster (0, 1; -1 for unrelated)."""
    from ingest.sample_data import SAC_DB_NAME, render_photo, write_sac_db

    rng, votes = np.random.default_rng(seed), np.random.default_rng([seed, 1])  # pictures, ratings
    bases = [np.asarray(render_photo(rng, q, 320, 288)).astype(int) for q in (0.3, 0.8)]
    img_dir = out / "sac" / "images"
    img_dir.mkdir(parents=True)
    gens, images, paths, ratings, cluster = [], [], [], [], {}
    for gid in range(1, generations + unrelated + 1):
        gens.append((gid, 1, "CLIP+CC12M", f"prompt {gid}", 1))
        for idx in range(per_generation if gid <= generations else 1):
            iid = len(images) + 1
            if gid <= generations:
                base = bases[gid % 2]
                pixels = np.clip(base + rng.integers(-1, 2, base.shape), 0, 255).astype(np.uint8)
                picture, cluster[str(iid)] = Image.fromarray(pixels), gid % 2
            else:
                picture, cluster[str(iid)] = render_photo(rng, float(rng.random()), 320, 288), -1
            picture.save(img_dir / f"{gid}_{idx}.png")
            images.append((iid, gid, idx))
            paths.append((iid, f"{gid}_{idx}.png"))
            ratings += [(sid, iid, int(votes.integers(1, 11)), 1) for sid in range(1, 6)]
    write_sac_db(out / "sac" / SAC_DB_NAME, gens, images, paths, ratings)
    return cluster


def test_a_drop_of_generations_sharing_near_identical_pictures_materialises_the_shards_group_green(tmp_path, home):
    """Every train crop within the rule of any val or test crop is left out (all matches, not the nearest k),
    so the blocking check run on the shards right after the drop finds no pair, and the drop counts them."""
    from critic.neardup import perceptual_hash

    cluster = _write_sac_generations_of_one_picture(tmp_path / "raw")
    result = _run(home, tmp_path / "raw", [sac_images, sac_shards, sac_shards_no_cross_split_duplicates])
    check = _check(result, "sac")
    assert check.passed and check.metadata["pairs"].value == 0, check.description
    assert result.success
    images = _rows(home, "SELECT image_id, split, path FROM images WHERE dataset = 'sac'")
    assert len(images) == len(cluster)
    hashes, split_of = {}, {}
    for image_id, split, path in images:
        with Image.open(home / path) as img:
            hashes[image_id], split_of[image_id] = perceptual_hash(img), split
    by_cluster = {c: [i for i in hashes if cluster[i] == c] for c in (0, 1)}
    for members in by_cluster.values():  # near-identical: 0 to 6 dHash bits apart, and different bytes
        bits = [(hashes[a] ^ hashes[b]).bit_count() for a, b in combinations(members, 2)]
        assert min(bits) == 0 and max(bits) <= 6
        assert "train" in {split_of[i] for i in members} and len({split_of[i] for i in members}) > 1
    assert {split_of[i] for members in by_cluster.values() for i in members} == {"train", "val", "test"}
    expected = {i for members in by_cluster.values() for i in members if split_of[i] == "train"}
    assert len(expected) > 2 * 16  # more train copies per held-out crop than the nearest-16 search listed
    (meta,) = [m.metadata for m in result.asset_materializations_for_node("sac_shards")]
    assert set(meta["dropped_train_samples"].value) == expected
    assert meta["cross_split_duplicates_dropped"].value == len(expected)
    assert meta["rejected_by_reason"].value["cross-split duplicate"] == len(expected)
    rejects = _rows(home, "SELECT item_id FROM rejects WHERE dataset = 'sac' AND stage = 'shards'"
                          " AND reason LIKE 'cross-split duplicate:%'")
    assert {r[0] for r in rejects} == expected
    in_train = {r[0] for r in _rows(home, "SELECT image_id FROM read_parquet(?)",
                                    [str(home / "shards" / "sac" / "train" / "*.parquet")])}
    assert in_train == {i for i, s in split_of.items() if s == "train"} - expected
    assert check.metadata["samples_per_split"].value["train"] == len(in_train)


def _check_alone(home: Path, raw: Path, dataset: str) -> dg.AssetCheckEvaluation:
    """The shards asset's blocking check run on its own (the shards as the last shards run left them)."""
    result = dg.materialize([SHARDS[dataset], CHECKS[dataset]], selection=dg.AssetSelection.checks(CHECKS[dataset]),
                            resources=build_resources(home=home, raw=raw), instance=dg.DagsterInstance.ephemeral(),
                            raise_on_error=False)
    assert not result.asset_materializations_for_node(f"{dataset}_shards")  # the shards were not rewritten
    return _check(result, dataset)


def test_a_promotion_changes_neither_the_shards_nor_their_rule_and_a_pinned_model_is_recorded_and_checked(
        sample_raw, home):
    from critic.leakage import RULE_FILE, recorded_rule

    first = _run(home, sample_raw.out, [sac_images, sac_shards])
    assert first.success
    rule_file = home / "shards" / "sac" / RULE_FILE
    assert recorded_rule(rule_file.parent) == LeakRule("dhash", 6)
    version = register_model(home, crop=96, resize=108)  # promoted after the shards were written
    check = _check_alone(home, sample_raw.out, "sac")
    assert check.passed and check.metadata["pairs"].value == 0
    assert check.metadata["rule"].value == "dHash within 6 bits" and check.metadata["model"].value == "none"
    assert check.metadata["rule_source"].value == "recorded with the shards"

    # Re-materialised with the defaults: still the hash alone, and the same shards (nothing rewritten).
    def files() -> dict:
        return {p: p.read_bytes() for p in sorted((home / "shards" / "sac").rglob("*")) if p.is_file()}

    before = files()
    rerun = _run(home, sample_raw.out, [sac_shards, sac_shards_no_cross_split_duplicates])
    assert rerun.success and _check(rerun, "sac").metadata["model"].value == "none"
    (meta,) = [m.metadata for m in rerun.asset_materializations_for_node("sac_shards")]
    assert meta["shards_written"].value == 0 and meta["leak_rule"].value == {"signal": "dhash", "max_hamming": 6}
    assert files() == before and recorded_rule(rule_file.parent) == LeakRule("dhash", 6)
    assert len({m.tags["dagster/data_version"] for r in (first, rerun)
                for m in r.asset_materializations_for_node("sac_shards")}) == 1

    # Pinned in the config: recorded with the shards (by version and sha256), and the check uses it.
    pinned = _run(home, sample_raw.out, [sac_shards, sac_shards_no_cross_split_duplicates],
                  {"ops": {"sac_shards": {"config": {"leak_model": version}}}})
    assert pinned.success
    (meta,) = [m.metadata for m in pinned.asset_materializations_for_node("sac_shards")]
    rule = recorded_rule(rule_file.parent)
    assert rule.model == version and meta["leak_rule"].value == rule.as_dict()
    assert _check(pinned, "sac").metadata["model"].value == version
    assert _check_alone(home, sample_raw.out, "sac").metadata["model"].value == version

    # A pinned model whose checkpoint changed since is not swapped for another: the check fails and says why.
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        (checkpoint,) = conn.execute("SELECT checkpoint_path FROM models WHERE version = ?", [version]).fetchone()
    with open(home / checkpoint, "ab") as fh:
        fh.write(b"\0")
    changed = _check_alone(home, sample_raw.out, "sac")
    assert not changed.passed and "cannot apply the leak rule of the sac shards" in changed.description
    assert "the file changed since it was registered" in changed.description
    rule_file.write_text("{not json")
    broken = _check_alone(home, sample_raw.out, "sac")
    assert not broken.passed and f"{rule_file}: unreadable leak rule" in broken.description
