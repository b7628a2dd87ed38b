"""Asset checks, plain functions returning dg.AssetCheckResult, one per gate."""


import math

import dagster as dg
import duckdb

from assets.evaluation import PROMOTED_EVAL
from assets.resources import WarehouseResource
from assets.versions import latest_data_version
from warehouse.models import eval_report
from warehouse.models_lookup import PRODUCTION, promoted_version


class PromotionConfig(dg.Config):
    margin: float = 0.02  # how much lower SRCC (of the mean score) than production still gets promoted


def compare_with_production(conn: duckdb.DuckDBPyConnection, version: str | None, dataset: str, split: str,
                            margin: float) -> dg.AssetCheckResult:
    """Pass when model `version` (the one just evaluated) scores within `margin` SRCC of the production model
    on the same split."""
    if version is None:
        return dg.AssetCheckResult(passed=False, description="no evaluated model version to check")
    new = eval_report(conn, version, dataset, split)
    if new is None:
        return dg.AssetCheckResult(passed=False, description=f"{version} has no {dataset}/{split} report")
    production = promoted_version(conn, PRODUCTION)
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
    passed = candidate_srcc >= production_srcc - margin
    verdict = "within the margin of" if passed else "worse by more than the margin than"
    return dg.AssetCheckResult(passed=passed, metadata=meta, description=f"candidate {verdict} production")


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _number(value: float | None) -> float:
    return float("nan") if value is None else float(value)


@dg.asset_check(asset=PROMOTED_EVAL, blocking=True,
                description="the new nima_color is not worse than the production model on kuler/test")
def nima_color_not_worse_than_production(context: dg.AssetCheckExecutionContext, config: PromotionConfig,
                                         warehouse: WarehouseResource) -> dg.AssetCheckResult:
    # The version eval_nima_color evaluated (its data version), not whatever nima_color was recorded last.
    version = latest_data_version(context.instance, PROMOTED_EVAL)
    with warehouse.connect() as conn:
        return compare_with_production(conn, version, "kuler", "test", config.margin)
