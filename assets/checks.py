"""Asset checks, plain functions returning dg.AssetCheckResult, one per gate."""


import math
import time
from typing import TYPE_CHECKING

import dagster as dg

from assets.resources import StorageResource, WarehouseResource
from common.bounds import Range, ranged_field
from nima_train.chain import ChainModel
from warehouse.models import eval_report, get_model
from warehouse.models_lookup import PRODUCTION, current_model, promoted_version

if TYPE_CHECKING:
    import duckdb

# How much worse than production a candidate may be and still be promoted (PromotionConfig's defaults).
SRCC_MARGIN, MAE_MARGIN = 0.02, 0.05


class PromotionConfig(dg.Config):
    margin: float = ranged_field(SRCC_MARGIN, Range(0.0, 1.0, "SRCC is at most 1: a margin of 1 promotes any model"),
                                 "how much lower SRCC (of the mean score) than production still gets promoted")
    mae_margin: float = ranged_field(MAE_MARGIN, Range(0.0, 9.0, "scores lie within 1..10, so no MAE exceeds 9"),
                                     "how much higher calibrated MAE (score units) than production still gets "
                                     "promoted")


def compare_with_production(conn: "duckdb.DuckDBPyConnection", version: str | None, dataset: str, split: str,
                            margin: float, mae_margin: float = MAE_MARGIN,
                            alias: str = PRODUCTION) -> dg.AssetCheckResult:
    """Pass when model `version` (the one just evaluated) scores within `margin` SRCC of the model `alias` names
    on the same split, and its calibrated MAE is within `mae_margin` of production's (raw MAE against raw MAE
    when either has no calibrated one)."""
    if version is None:
        return dg.AssetCheckResult(passed=False, description="no evaluated model version to check")
    new = eval_report(conn, version, dataset, split)
    if new is None:
        return dg.AssetCheckResult(passed=False, description=f"{version} has no {dataset}/{split} report")
    production = promoted_version(conn, alias)
    base = eval_report(conn, production, dataset, split) if production else None
    candidate_srcc, production_srcc = new["srcc_mean"], base["srcc_mean"] if base else None
    meta = {"candidate": version, "candidate_srcc": _number(candidate_srcc), "margin": margin,
            "production": production or "", "production_srcc": _number(production_srcc)}
    if not _finite(candidate_srcc):
        return dg.AssetCheckResult(passed=False, metadata=meta, description=(
            f"candidate {version} SRCC on {dataset}/{split} is {candidate_srcc}, not a number: "
            "its predictions are constant or the split is too small; not promoted"))
    if production is None:
        return dg.AssetCheckResult(passed=True, metadata=meta, description="nothing promoted yet to compare with")
    if production == version:
        return dg.AssetCheckResult(passed=True, metadata=meta, description="candidate is the production model")
    if base is None:
        return dg.AssetCheckResult(passed=True, metadata=meta, description=(
            f"production {production} has no {dataset}/{split} report: nothing to compare with"))
    # A NaN production SRCC (e.g. constant predictions) would otherwise fail every comparison and block
    # promotion forever: there is nothing meaningful to be worse than.
    if not _finite(production_srcc):
        return dg.AssetCheckResult(passed=True, metadata=meta, description=(
            f"production {production} SRCC on {dataset}/{split} is {production_srcc}: nothing to compare with"))
    srcc_passed = candidate_srcc >= production_srcc - margin
    mae_key, candidate_mae, production_mae = mae_to_compare(
        new, base, both_cross_validated=calibration_cross_validated(conn, version)
        and calibration_cross_validated(conn, production))
    meta.update({"mae_compared": mae_key, "candidate_mae": _number(candidate_mae),
                 "production_mae": _number(production_mae), "mae_margin": mae_margin})
    mae_passed = not (_finite(candidate_mae) and _finite(production_mae)) or (
        candidate_mae <= production_mae + mae_margin)
    if srcc_passed and mae_passed:
        return dg.AssetCheckResult(passed=True, metadata=meta, description="candidate within the margins of production")
    reasons = []
    if not srcc_passed:
        reasons.append(f"SRCC {candidate_srcc:.4f} is below production's {production_srcc:.4f} by more than {margin}")
    if not mae_passed:
        reasons.append(f"{mae_key} {candidate_mae:.4f} is above production's {production_mae:.4f} by more than "
                       f"{mae_margin}")
    return dg.AssetCheckResult(passed=False, metadata=meta, description="candidate worse than production: "
                               + "; ".join(reasons))


def mae_to_compare(candidate: dict, production: dict,
                   both_cross_validated: bool) -> tuple[str, float | None, float | None]:
    """Calibrated MAE on both sides when both have a calibration chosen by cross-validation (one that cannot be
    worse than the raw mean by construction), else raw MAE on both: never calibrated against raw, which would
    credit the candidate with the calibration alone, nor a map that could widen the error."""
    key = "mae_mean_calibrated"
    if not both_cross_validated or candidate.get(key) is None or production.get(key) is None:
        key = "mae_mean"
    return key, candidate.get(key), production.get(key)


def calibration_cross_validated(conn: "duckdb.DuckDBPyConnection", version: str) -> bool:
    """Whether the model card of `version` records a calibration whose method cross-validation chose."""
    row = get_model(conn, version)
    fitted = (row.config.get("calibration") or {}) if row else {}
    return bool((fitted.get("map") or {}).get("selection"))


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _number(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def promotion_check(model: ChainModel) -> dg.AssetChecksDefinition:
    """`<name>_not_worse_than_<alias>` on the row's evaluation, blocking: what the promotion asset waits for."""

    @dg.asset_check(asset=model.eval_asset, name=f"{model.name}_not_worse_than_{model.promoted}", blocking=True,
                    description=f"the new {model.name} is not worse than the {model.promoted} model on "
                                f"{model.dataset}/test")
    def check(config: PromotionConfig, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        # The current version (the one the evaluation just evaluated), as the warehouse names it.
        with warehouse.connect() as conn:
            current = current_model(conn, model.name)
            return compare_with_production(conn, current.version if current else None, model.dataset, "test",
                                           config.margin, config.mae_margin, alias=model.promoted)

    return check


class LeakageConfig(dg.Config):
    max_pairs: int = ranged_field(0, Range(0, 1_000_000, "the check's metadata lists every pair it tolerates"),
                                  "(val or test, train) near-duplicate pairs tolerated before training is blocked")


def leakage_result(report, max_pairs: int, model_version: str | None = None,
                   seconds: float | None = None, rule_source: str | None = None) -> dg.AssetCheckResult:
    """Pass while the shards hold at most max_pairs (val/test item, train item) near-duplicate pairs; the
    pairs themselves go into the metadata. `report` is a critic.leakage.LeakReport."""
    leaks = report.leaks
    meta = {
        "pairs": len(leaks),
        "max_pairs": max_pairs,
        "rule": report.rule.describe(),
        "model": model_version or "none",
        **({"rule_source": rule_source} if rule_source else {}),
        "samples_per_split": dg.MetadataValue.json(report.counts),
        "leaks": dg.MetadataValue.json([leak.as_dict() for leak in leaks]),
        "unreadable": dg.MetadataValue.json(report.unreadable),
        **({"seconds": round(seconds, 2)} if seconds is not None else {}),
        "leak_search": dg.MetadataValue.json(report.work),
    }
    by_split = {split: sum(leak.held_out_split == split for leak in leaks) for split in ("val", "test")}
    summary = f"{len(leaks)} near-duplicate pairs across splits (val: {by_split['val']}, test: {by_split['test']})"
    if len(leaks) <= max_pairs:
        return dg.AssetCheckResult(passed=True, metadata=meta, description=f"{summary}, {max_pairs} tolerated")
    first = ", ".join(f"{x.held_out_key} ~ {x.train_key}" for x in leaks[:3])
    return dg.AssetCheckResult(passed=False, metadata=meta, description=(
        f"{summary}, more than the {max_pairs} tolerated: {first}{', ...' if len(leaks) > 3 else ''}; "
        "training is blocked (drop_cross_split_duplicates on the shards asset leaves them out)"))


def _shards_rule(dataset: str, storage: StorageResource, warehouse: WarehouseResource):
    """The rule the shards were written under (recorded by the shards asset) and the model it pins, if any, so a
    model promoted since changes nothing here; shards from before rules were recorded get the default rule (the
    perceptual hash alone; Kuler's palettes), never the promoted model."""
    from critic.leakage import load_critic, recorded_rule, rule_for

    rule, source = recorded_rule(storage.shards_dir(dataset)), "recorded with the shards"
    if rule is None:
        rule, source = rule_for(dataset, with_model=False), "default (none recorded)"
    return rule, load_critic(rule, warehouse.connect, storage.home_path), source


def _no_cross_split_duplicates(dataset: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=f"{dataset}_shards", name="no_cross_split_duplicates", blocking=True,
                    description=f"no {dataset} val or test sample has a near-duplicate in the train shards")
    def check(config: LeakageConfig, storage: StorageResource, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        from critic.leak_cache import cache_dir
        from critic.leakage import shard_leaks  # the model's torch stays out of the code location

        started = time.monotonic()
        try:
            rule, critic, source = _shards_rule(dataset, storage, warehouse)
        except (ValueError, LookupError, RuntimeError, OSError) as exc:  # RuntimeError: CheckpointMismatch
            return dg.AssetCheckResult(passed=False, description=(
                f"cannot apply the leak rule of the {dataset} shards: {exc}; materialise {dataset}_shards again"))
        report = shard_leaks(storage.shards_dir(), dataset, rule, critic, cache_dir(storage.home_path))
        return leakage_result(report, config.max_pairs, rule.model, time.monotonic() - started, source)

    return check


ava_shards_no_cross_split_duplicates = _no_cross_split_duplicates("ava")
sac_shards_no_cross_split_duplicates = _no_cross_split_duplicates("sac")
kuler_shards_no_cross_split_duplicates = _no_cross_split_duplicates("kuler")
