"""Schedules point at jobs."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import dagster as dg

from assets.versions import input_data_versions, latest_data_version
from nima_train.chain import CHAIN, ChainModel

NIGHTLY_JOB = "nightly_retrain"


def retrain_keys(chain: Sequence[ChainModel], stale: Sequence[str]) -> list[str]:
    """What retraining the `stale` models rebuilds, read from the chain table: their training, evaluation and
    promotion assets, and those of every row that starts from one of them (nima_sac starts from nima_ava), in
    chain order. No group names: in the training location's Definitions the shards are stubs without a group."""
    affected = set(stale)
    for model in chain:  # parents come first (check_chain), so one pass reaches every descendant
        if model.parent in affected:
            affected.add(model.name)
    return [key for model in chain if model.name in affected
            for key in (model.name, model.eval_asset, model.promotion_asset) if key]


def model_inputs(chain: Sequence[ChainModel] = CHAIN) -> dict[str, str]:
    """Each training asset and the shards asset it trains on, read from the chain table."""
    return dict(sorted((model.name, model.shards) for model in chain))


def stale_models(instance: dg.DagsterInstance, inputs: dict[str, str]) -> list[str]:
    """Models whose shards have a data version other than the one they were trained on (or were never trained)."""
    stale = []
    for model, shards in inputs.items():
        current = latest_data_version(instance, shards)
        if current is None:
            continue  # no shards yet: nothing to train on
        if input_data_versions(instance, model).get(shards) != current:
            stale.append(model)
    return stale


def retrain_schedule(chain: Sequence[ChainModel] = CHAIN) -> dg.ScheduleDefinition:
    """nightly_retrain over the models of `chain` (the same object for the same rows)."""
    return _retrain_schedule(tuple(chain))


@cache
def _retrain_schedule(chain: tuple[ChainModel, ...]) -> dg.ScheduleDefinition:
    inputs = model_inputs(chain)
    job = dg.define_asset_job(
        NIGHTLY_JOB, selection=dg.AssetSelection.assets(*retrain_keys(chain, [m.name for m in chain])),
        description="retrain and evaluate the NIMA chain (the 02:00 UTC schedule runs it when shards changed)")

    @dg.schedule(name="nightly_retrain", job=job, cron_schedule="0 2 * * *", execution_timezone="UTC")
    def nightly_retrain(context: dg.ScheduleEvaluationContext):
        """02:00 UTC: retrain (and re-evaluate) only when some model's shards changed since it was trained."""
        stale = stale_models(context.instance, inputs)
        if not stale:
            return dg.SkipReason("no shards changed since the last models were trained")
        # A retrained model makes everything downstream of it stale too (nima_sac starts from nima_ava).
        keys = [dg.AssetKey(k) for k in sorted(retrain_keys(chain, stale))]
        versions = ",".join(f"{m}:{latest_data_version(context.instance, inputs[m])}" for m in stale)
        return dg.RunRequest(run_key=f"retrain:{versions}", asset_selection=keys,
                             tags={"stale_models": ",".join(stale)})

    return nightly_retrain


nightly_retrain = retrain_schedule()


def all_schedules(chain: Sequence[ChainModel] = CHAIN) -> list:
    return [retrain_schedule(chain)]
