"""Asset checks, plain functions returning dg.AssetCheckResult, one per gate."""


import math

import dagster as dg

from assets.resources import WarehouseResource
from warehouse.models import alias_version, eval_report, latest_model


class PromotionConfig(dg.Config):
    margin: float = 0.02  # how much lower SRCC (of the mean score) than production still gets promoted


def compare_with_production(conn, name: str, dataset: str, split: str, margin: float) -> dg.AssetCheckResult:
    """Pass when the newest `name` scores within `margin` SRCC of the production model on the same split."""
    model = latest_model(conn, name)
    if model is None:
        return dg.AssetCheckResult(passed=False, metadata={"reason": f"no {name} model recorded"})
    new = eval_report(conn, model.version, dataset, split)
    if new is None:
        reason = f"{model.version} has no {dataset}/{split} report"
        return dg.AssetCheckResult(passed=False, metadata={"reason": reason})
    production = alias_version(conn, "production")
    base = eval_report(conn, production, dataset, split) if production else None
    meta = {"candidate": model.version, "candidate_srcc": new["srcc_mean"], "margin": margin,
            "production": production or "", "production_srcc": base["srcc_mean"] if base else float("nan")}
    if not math.isfinite(new["srcc_mean"]):
        return dg.AssetCheckResult(passed=False, metadata={**meta, "reason": "candidate SRCC is not a number"})
    if base is None or production == model.version:
        return dg.AssetCheckResult(passed=True, metadata={**meta, "reason": "nothing promoted to compare with"})
    passed = new["srcc_mean"] >= base["srcc_mean"] - margin
    verdict = "within the margin of" if passed else "worse by more than the margin than"
    return dg.AssetCheckResult(passed=passed, metadata=meta, description=f"candidate {verdict} production")


@dg.asset_check(asset="eval_nima_color", blocking=True,
                description="the new nima_color is not worse than the production model on kuler/test")
def nima_color_not_worse_than_production(config: PromotionConfig,
                                         warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        return compare_with_production(conn, "nima_color", "kuler", "test", config.margin)
