"""Schedules point at jobs."""

from __future__ import annotations

import dagster as dg

# Which shards each model trains on: the nightly run retrains a model only when these changed since it was built.
MODEL_INPUTS = {"nima_ava": "ava_shards", "nima_sac": "sac_shards", "nima_color": "kuler_shards"}

nightly_retrain_job = dg.define_asset_job(
    "nightly_retrain", selection=dg.AssetSelection.groups("training", "evaluation"),
    description="retrain and evaluate the NIMA chain (the 02:00 UTC schedule runs it when shards changed)",
)


def _data_version(instance: dg.DagsterInstance, key: str) -> str | None:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    if event is None or event.asset_materialization is None:
        return None
    return event.asset_materialization.tags.get("dagster/data_version")


def _input_versions(instance: dg.DagsterInstance, model: str) -> dict[str, str]:
    """The input data versions the latest materialisation of `model` was built from (Dagster records them)."""
    event = instance.get_latest_materialization_event(dg.AssetKey(model))
    if event is None or event.asset_materialization is None:
        return {}
    prefix = "dagster/input_data_version/"
    return {k[len(prefix):]: v for k, v in event.asset_materialization.tags.items() if k.startswith(prefix)}


def stale_models(instance: dg.DagsterInstance) -> list[str]:
    """Models whose shards have a data version other than the one they were trained on (or were never trained)."""
    stale = []
    for model, shards in MODEL_INPUTS.items():
        current = _data_version(instance, shards)
        if current is None:
            continue  # no shards yet: nothing to train on
        if _input_versions(instance, model).get(shards) != current:
            stale.append(model)
    return stale


@dg.schedule(job=nightly_retrain_job, cron_schedule="0 2 * * *", execution_timezone="UTC")
def nightly_retrain(context: dg.ScheduleEvaluationContext):
    """02:00 UTC: retrain (and re-evaluate) only when some model's shards changed since it was trained."""
    stale = stale_models(context.instance)
    if not stale:
        return dg.SkipReason("no shards changed since the last models were trained")
    # A retrained model makes everything downstream of it stale too (nima_sac starts from nima_ava).
    selection = dg.AssetSelection.assets(*stale).downstream() & dg.AssetSelection.groups("training", "evaluation")
    keys = sorted(selection.resolve(context.repository_def.asset_graph), key=lambda k: k.to_user_string())
    versions = ",".join(f"{m}:{_data_version(context.instance, MODEL_INPUTS[m])}" for m in stale)
    return dg.RunRequest(run_key=f"retrain:{versions}", asset_selection=keys, tags={"stale_models": ",".join(stale)})


def all_schedules() -> list:
    return [nightly_retrain]
