"""The two-host shape's code locations (issue 29, point 1): the same assets as the one-machine Definitions, split
between `data` and `training` with no key in both, the shards as stubs in the training location, whose schedule
reads the chain table; absolute homes only."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from nima_train.chain import CHAIN, ChainModel
from pipelines.definitions import defs as one_machine

ROOT = Path(__file__).resolve().parents[1]
EXTRA = ChainModel("nima_extra", "extra", "extra_shards", None, None, lr_scale=1.0, epochs=1, negatives=0.0)


@pytest.fixture
def split_env(tmp_path, monkeypatch):
    monkeypatch.setenv("AESTHETIC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AESTHETIC_RAW", raising=False)
    return tmp_path / "home"


def _keys(defs: dg.Definitions) -> tuple[set[str], set[str], set]:
    """(materialisable asset keys, stub keys, check keys) of a Definitions."""
    graph = defs.resolve_asset_graph()
    assets = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).is_executable}
    stubs = {k.to_user_string() for k in graph.get_all_asset_keys() if not graph.get(k).is_executable}
    return assets, stubs, set(graph.asset_check_keys)


def test_no_asset_key_is_defined_in_both_locations_and_together_they_are_the_one_machine_graph(split_env):
    from pipelines.data_location import build_data_definitions
    from pipelines.training_location import build_training_definitions

    data, training = build_data_definitions(), build_training_definitions()
    for defs in (data, training):
        dg.Definitions.validate_loadable(defs)
    (data_assets, data_stubs, data_checks), (train_assets, train_stubs, train_checks) = _keys(data), _keys(training)
    whole, _, whole_checks = _keys(one_machine)
    assert not data_assets & train_assets
    assert data_assets | train_assets == whole and data_checks | train_checks == whole_checks
    assert data_stubs == {"production_model"} and train_stubs == {"ava_shards", "sac_shards", "kuler_shards"}
    assert [s.name for s in training.schedules] == ["nightly_retrain"]
    assert {s.name for s in data.sensors} == {"sac_inbox_sensor", "model_ledger_sensor"}
    assert training.resolve_job_def("nightly_retrain") and data.resolve_job_def("record_models")


def test_the_training_locations_shards_are_stubs_without_a_group(split_env):
    from pipelines.training_location import build_training_definitions

    graph = build_training_definitions().resolve_asset_graph()
    for shards in ("ava_shards", "sac_shards", "kuler_shards"):
        node = graph.get(dg.AssetKey(shards))
        assert not node.is_executable and node.group_name == "default"


@pytest.mark.parametrize("variable", ["AESTHETIC_HOME", "AESTHETIC_RAW"])
def test_the_split_shape_refuses_a_relative_home_or_raw_folder(split_env, monkeypatch, variable):
    from pipelines.data_location import build_data_definitions
    from pipelines.training_location import build_training_definitions

    monkeypatch.setenv(variable, "relative/folder")
    for build in (build_data_definitions, build_training_definitions):
        with pytest.raises(ValueError, match=f"needs {variable} as an absolute path on the shared volume"):
            build()


def test_the_training_locations_schedule_finds_each_models_shards_through_the_chain_table(split_env):
    """In the training location the shards are groupless stubs: the schedule reads which shards each row trains
    on, and which rows descend from a stale one, from the chain table."""
    from pipelines.training_location import build_training_definitions

    chain = (*CHAIN, EXTRA)
    defs = build_training_definitions(chain)
    schedule = next(iter(defs.schedules))
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def())
        assert isinstance(schedule(context), dg.SkipReason)
        instance.report_runless_asset_event(dg.AssetMaterialization("extra_shards",
                                                                    tags={"dagster/data_version": "x1"}))
        only_extra = schedule(context)
        assert {k.to_user_string() for k in only_extra.asset_selection} == {"nima_extra", "eval_nima_extra"}
        instance.report_runless_asset_event(dg.AssetMaterialization("sac_shards", tags={"dagster/data_version": "s1"}))
        sac = schedule(context)
    assert {k.to_user_string() for k in sac.asset_selection} == {
        "nima_extra", "eval_nima_extra", "nima_sac", "eval_nima_sac", "nima_color", "eval_nima_color",
        "production_model"}


def test_workspace_split_yaml_names_both_code_servers_from_the_environment():
    spec = yaml.safe_load((ROOT / "workspace.split.yaml").read_text())
    servers = [entry["grpc_server"] for entry in spec["load_from"]]
    assert [s["location_name"] for s in servers] == ["data", "training"]
    assert [(s["host"], s["port"]) for s in servers] == [
        ({"env": "AESTHETIC_DATA_HOST"}, {"env": "AESTHETIC_DATA_PORT"}),
        ({"env": "AESTHETIC_TRAINING_HOST"}, {"env": "AESTHETIC_TRAINING_PORT"})]
