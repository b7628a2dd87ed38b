"""Schedules point at jobs."""

from __future__ import annotations

import dagster as dg

from assets.versions import input_data_versions, latest_data_version

nightly_retrain_job = dg.define_asset_job(
    "nightly_retrain", selection=dg.AssetSelection.groups("training", "evaluation"),
    description="retrain and evaluate the NIMA chain (the 02:00 UTC schedule runs it when shards changed)",
)


def model_inputs(asset_graph) -> dict[str, str]:
    """Each training asset and the shards asset it trains on, read from the assets' own deps."""
    inputs = {}
    for key in dg.AssetSelection.groups("training").resolve(asset_graph):
        shards = [p for p in asset_graph.get(key).parent_keys if asset_graph.get(p).group_name == "shards"]
        if len(shards) != 1:
            raise ValueError(f"training asset {key.to_user_string()} must depend on one shards asset, has {shards}")
        inputs[key.to_user_string()] = shards[0].to_user_string()
    return dict(sorted(inputs.items()))


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


@dg.schedule(job=nightly_retrain_job, cron_schedule="0 2 * * *", execution_timezone="UTC")
def nightly_retrain(context: dg.ScheduleEvaluationContext):
    """02:00 UTC: retrain (and re-evaluate) only when some model's shards changed since it was trained."""
    graph = context.repository_def.asset_graph
    inputs = model_inputs(graph)
    stale = stale_models(context.instance, inputs)
    if not stale:
        return dg.SkipReason("no shards changed since the last models were trained")
    # A retrained model makes everything downstream of it stale too (nima_sac starts from nima_ava).
    selection = dg.AssetSelection.assets(*stale).downstream() & dg.AssetSelection.groups("training", "evaluation")
    keys = sorted(selection.resolve(graph), key=lambda k: k.to_user_string())
    versions = ",".join(f"{m}:{latest_data_version(context.instance, inputs[m])}" for m in stale)
    return dg.RunRequest(run_key=f"retrain:{versions}", asset_selection=keys, tags={"stale_models": ",".join(stale)})


def all_schedules() -> list:
    return [nightly_retrain]
