"""Training and evaluation assets through real Dagster, the promotion gate, the K8s pod spec, the nightly schedule."""

import json
import math

import dagster as dg
import pytest
import torch

from assets.chain import build_chain
from assets.checks import compare_with_production
from assets.launch import LaunchConfig, Toleration, k8s_pod_spec
from assets.training import TrainConfig, config_for
from nima_train.chain import CHAIN, ChainModel
from nima_train.checkpoint import save_checkpoint
from nima_train.model import NIMA
from pipelines.resources import build_resources
from tests.helpers.tiny_training import write_tiny_shards
from warehouse.db import connect
from warehouse.models import ModelRow, get_model, record_eval_report, record_model, set_alias
from warehouse.models_lookup import current_model, make_current, promoted_version

CHAIN_DEFS = build_chain()
nima_ava, eval_nima_ava, eval_nima_color, production_model = (
    CHAIN_DEFS[n] for n in ("nima_ava", "eval_nima_ava", "eval_nima_color", "production_model"))
nima_color_not_worse_than_production = CHAIN_DEFS["nima_color_not_worse_than_production"]
TINY = {"weights": "none", "epochs_head": 1, "epochs_full": 1, "batch_size": 8, "crop": 32, "resize": 36,
        "workers": 0, "device": "cpu"}


def test_nima_ava_trains_through_pipes_publishes_a_versioned_model_and_is_evaluated(tmp_path):
    home = tmp_path / "home"
    for split, n, seed in (("train", 16, 0), ("val", 24, 1), ("test", 12, 2)):
        write_tiny_shards(home / "shards" / "ava" / split, n, seed=seed, split=split)
    result = dg.materialize(
        [nima_ava, eval_nima_ava], resources=build_resources(home=home, raw=tmp_path / "raw"),
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"nima_ava": {"config": TINY}, "eval_nima_ava": {"config": {"batch_size": 8}}}},
    )
    assert result.success
    train_meta = result.asset_materializations_for_node("nima_ava")[0]
    version = train_meta.metadata["version"].value
    assert train_meta.tags["dagster/data_version"] == version and len(version) == 12
    model_dir = home / "models" / "nima_ava" / version
    card = json.loads((model_dir / "model_card.json").read_text())
    import hashlib

    assert hashlib.sha256((model_dir / "model.pt").read_bytes()).hexdigest()[:12] == version
    assert card["code_version"] == "nima-train-1" and card["parent_version"] is None
    assert card["hyperparameters"]["crop"] == 32 and len(card["history"]) == 2
    # Trained with a validation split: the checkpoint and the card carry its calibration, its method chosen by
    # cross-validation on 24 samples (too few for isotonic), with each candidate's error and the reason.
    stored = torch.load(model_dir / "model.pt", weights_only=True)["calibration"]
    assert card["calibration"]["map"] == stored
    fitted = card["calibration"]
    assert (fitted["split"], fitted["n"]) == ("val", 24) and fitted["method"] in ("none", "linear", "shift")
    assert set(fitted["cv_mae"]) == {"none", "linear"} and stored["selection"]["folds"] == 5
    assert train_meta.metadata["calibration"].value == (f"{fitted['method']}, chosen on 24 val samples "
                                                        f"({fitted['reason']})")
    assert train_meta.metadata["val_mae_mean_calibrated"].value == fitted["mae_mean_calibrated"]
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        row = conn.execute("SELECT name, checkpoint_path FROM models WHERE version = ?", [version]).fetchone()
        report = conn.execute("SELECT n, srcc_mean, mae_mean, mae_mean_calibrated, spread_ratio_calibrated"
                              " FROM eval_reports WHERE model_version = ? AND dataset = 'ava' AND split = 'test'",
                              [version]).fetchone()
    assert row == ("nima_ava", f"models/nima_ava/{version}/model.pt")
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        assert promoted_version(conn, "nima_ava") == version  # made current: the data version is read from here
    assert report[0] == 12 and all(v is not None for v in report[2:])
    assert (home / "reports" / version / "ava-test" / "reliability.png").exists()
    assert f"{fitted['method']} calibration fitted on 24 val samples (chosen by 5-fold cross-validation" in (
        home / "reports" / version / "ava-test" / "report.md").read_text()
    eval_meta = result.asset_materializations_for_node("eval_nima_ava")[0].metadata
    assert "data:image/png;base64," in eval_meta["report"].value


EXTRA = ChainModel("nima_extra", "extra", "extra_shards", "nima_ava", None, lr_scale=0.5, epochs=1, negatives=0.0,
                   about="fine-tuned on an extra dataset")


def test_a_fourth_row_in_the_chain_table_is_trained_from_the_current_parent_evaluated_and_scheduled(tmp_path):
    """One row plus its sample data: the Definitions built with it have its training and evaluation assets
    (deps, group, pool), the schedule reads its shards, and it trains from the current nima_ava in the warehouse
    (not the newest row), is recorded, made current and evaluated."""
    from pipelines.definitions import build_definitions
    from pipelines.schedules import model_inputs

    home, chain = tmp_path / "home", (*CHAIN, EXTRA)
    for dataset in ("ava", "extra"):
        for split, n, seed in (("train", 16, 0), ("val", 8, 1), ("test", 8, 2)):
            write_tiny_shards(home / "shards" / dataset / split, n, seed=seed, dataset=dataset, split=split)
    defs = build_definitions(chain, home=home, raw=tmp_path / "raw")
    graph = defs.resolve_asset_graph()
    trained = graph.get(dg.AssetKey("nima_extra"))
    assert trained.group_name == "training" and trained.pools == {"gpu"}
    assert set(trained.parent_keys) == {dg.AssetKey("extra_shards"), dg.AssetKey("nima_ava")}
    assert set(graph.get(dg.AssetKey("eval_nima_extra")).parent_keys) == {dg.AssetKey("nima_extra"),
                                                                           dg.AssetKey("extra_shards")}
    assert model_inputs(chain)["nima_extra"] == "extra_shards"
    assert dg.AssetKey("nima_extra") in defs.resolve_job_def("training_job").asset_layer.executable_asset_keys

    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("full_pipeline")
    ava = job.execute_in_process(run_config={"ops": {"nima_ava": {"config": TINY}}}, instance=instance,
                                 asset_selection=[dg.AssetKey("nima_ava")])
    assert ava.success
    parent = ava.asset_materializations_for_node("nima_ava")[0].metadata["version"].value
    with connect(home / "warehouse.duckdb") as conn:  # newer than the current nima_ava, never made current
        record_model(conn, ModelRow("cccccccccccc", "nima_ava", None, "models/none.pt", "c" * 64, {}))
        conn.execute("UPDATE models SET created_at = created_at + INTERVAL 1 HOUR WHERE version = 'cccccccccccc'")
    extra_config = {"nima_extra": {"config": TINY}, "eval_nima_extra": {"config": {"batch_size": 8}}}
    extra = job.execute_in_process(run_config={"ops": extra_config}, instance=instance,
                                   asset_selection=[dg.AssetKey("nima_extra"), dg.AssetKey("eval_nima_extra")])
    assert extra.success
    version = extra.asset_materializations_for_node("nima_extra")[0].tags["dagster/data_version"]
    card = json.loads((home / "models" / "nima_extra" / version / "model_card.json").read_text())
    assert card["parent_version"] == parent and card["hyperparameters"]["lr_scale"] == 0.5
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        assert current_model(conn, "nima_extra").parent_version == parent
        assert conn.execute("SELECT model_version, n FROM eval_reports WHERE dataset = 'extra'").fetchall() == [
            (version, 8)]


def _model(conn, version: str, srcc: float | None, checkpoint: str | None = None, cross_validated: bool = True,
           **metrics: float) -> None:
    """A recorded nima_color version, with a kuler/test report unless srcc is None; its card records a
    calibration chosen by cross-validation unless told otherwise."""
    card = {"calibration": {"map": {"selection": {"folds": 5, "chosen": "linear"}}}} if cross_validated else {}
    record_model(conn, ModelRow(version, "nima_color", None, checkpoint or f"models/nima_color/{version}/model.pt",
                                version * 2, card))
    if srcc is not None:
        record_eval_report(conn, version, "kuler", "test", {
            "n": 10, "binary_accuracy": 0.8, "exact_accuracy": 0.5, "lcc_mean": srcc, "srcc_mean": srcc,
            "lcc_std": 0.1, "srcc_std": 0.1, "emd_r1": 0.1, "emd_r2": 0.2, "mae_mean": 0.8, "rmse_mean": 1.0,
            "spread_ratio": 0.4, **metrics})


def test_promotion_gate_blocks_a_model_worse_than_production_by_more_than_the_margin(tmp_path):
    with connect(tmp_path / "w.duckdb") as conn:
        _model(conn, "aaaaaaaaaaaa", 0.60)
        assert compare_with_production(conn, "aaaaaaaaaaaa", "kuler", "test", 0.02).passed  # nothing promoted yet
        set_alias(conn, "aaaaaaaaaaaa")
        _model(conn, "bbbbbbbbbbbb", 0.55)
        worse = compare_with_production(conn, "bbbbbbbbbbbb", "kuler", "test", 0.02)
        assert not worse.passed and worse.metadata["production"].value == "aaaaaaaaaaaa"
        assert compare_with_production(conn, "bbbbbbbbbbbb", "kuler", "test", 0.1).passed
        assert promoted_version(conn) == "aaaaaaaaaaaa"


def test_promotion_gate_blocks_a_model_whose_calibrated_mae_is_worse_by_more_than_the_margin(tmp_path):
    with connect(tmp_path / "w.duckdb") as conn:
        _model(conn, "aaaaaaaaaaaa", 0.60, mae_mean_calibrated=0.50)
        set_alias(conn, "aaaaaaaaaaaa")
        _model(conn, "bbbbbbbbbbbb", 0.65, mae_mean_calibrated=0.60)  # ranks better, but further off the scale
        worse = compare_with_production(conn, "bbbbbbbbbbbb", "kuler", "test", 0.02, mae_margin=0.05)
        assert not worse.passed and "mae_mean_calibrated 0.6000" in worse.description
        assert worse.metadata["mae_compared"].value == "mae_mean_calibrated"
        assert compare_with_production(conn, "bbbbbbbbbbbb", "kuler", "test", 0.02, mae_margin=0.2).passed
        _model(conn, "cccccccccccc", 0.65, mae_mean_calibrated=0.54)
        assert compare_with_production(conn, "cccccccccccc", "kuler", "test", 0.02, mae_margin=0.05).passed


@pytest.mark.parametrize("production, candidate", [
    # Promoted before calibrations existed: the candidate's calibrated 0.3 would pass against production's raw 0.7.
    ({"mae_mean": 0.70}, {"mae_mean": 0.90, "mae_mean_calibrated": 0.30}),
    # Production's calibration predates cross-validation: its calibrated MAE may be worse than its raw one.
    ({"cross_validated": False, "mae_mean": 0.70, "mae_mean_calibrated": 0.90},
     {"mae_mean": 0.80, "mae_mean_calibrated": 0.72}),
], ids=["no calibration", "not cross-validated"])
def test_promotion_gate_compares_raw_mae_unless_both_calibrations_were_cross_validated(tmp_path, production,
                                                                                      candidate):
    with connect(tmp_path / "w.duckdb") as conn:
        _model(conn, "aaaaaaaaaaaa", 0.60, **production)
        set_alias(conn, "aaaaaaaaaaaa")
        _model(conn, "bbbbbbbbbbbb", 0.60, **candidate)
        check = compare_with_production(conn, "bbbbbbbbbbbb", "kuler", "test", 0.02, mae_margin=0.05)
        assert not check.passed and check.metadata["mae_compared"].value == "mae_mean"


def test_promotion_gate_ignores_a_nan_production_srcc_but_fails_a_nan_candidate(tmp_path):
    with connect(tmp_path / "w.duckdb") as conn:
        _model(conn, "aaaaaaaaaaaa", float("nan"))  # e.g. a production model that predicted one constant score
        set_alias(conn, "aaaaaaaaaaaa")
        _model(conn, "bbbbbbbbbbbb", 0.40)
        fine = compare_with_production(conn, "bbbbbbbbbbbb", "kuler", "test", 0.02)
        assert fine.passed and "nothing to compare with" in fine.description
        assert math.isnan(fine.metadata["production_srcc"].value)
        _model(conn, "cccccccccccc", float("nan"))
        broken = compare_with_production(conn, "cccccccccccc", "kuler", "test", 0.02)
        assert not broken.passed and "not a number" in broken.description


def _scoring_checkpoint(path) -> None:
    """An untrained NIMA predicts one score for every image (SRCC NaN, which the gate rejects): give it BatchNorm
    statistics from one batch and a random head, so its scores differ between images."""
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    model = NIMA("mobilenet_v2", weights="none")
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(16, 3, 32, 32))
    for p in model.head.parameters():
        torch.nn.init.normal_(p, std=0.5)
    save_checkpoint(path, {"model": model.state_dict(),
                           "args": {"backbone": "mobilenet_v2", "dropout": 0.75, "crop": 32, "resize": 36}})


def _make_current(home, version: str) -> None:
    with connect(home / "warehouse.duckdb") as conn:
        make_current(conn, get_model(conn, version))


def test_evaluation_and_promotion_take_the_current_version_from_the_warehouse_not_the_newest_row(tmp_path):
    """The current nima_color is the warehouse's alias of the name, whatever Dagster recorded: a row recorded later
    by someone else is neither evaluated nor promoted, and a version made current but never evaluated is refused by
    the blocking check and by the promotion."""
    home = tmp_path / "home"
    write_tiny_shards(home / "shards" / "kuler" / "test", 8, seed=3, dataset="kuler", split="test")
    _scoring_checkpoint(home / "models" / "nima_color" / "model.pt")
    with connect(home / "warehouse.duckdb") as conn:
        _model(conn, "aaaaaaaaaaaa", None, "models/nima_color/model.pt")  # what nima_color published
        _model(conn, "bbbbbbbbbbbb", None, "models/nima_color/model.pt")  # recorded later by someone else
        conn.execute("UPDATE models SET created_at = created_at + INTERVAL 1 HOUR WHERE version = 'bbbbbbbbbbbb'")
    _make_current(home, "aaaaaaaaaaaa")
    instance = dg.DagsterInstance.ephemeral()  # knows nothing of nima_color: the warehouse alone names it
    gated = [eval_nima_color, nima_color_not_worse_than_production, production_model]
    run_config = {"ops": {"eval_nima_color": {"config": {"batch_size": 8}}}}
    result = dg.materialize(gated, resources=build_resources(home=home, raw=tmp_path / "raw"), instance=instance,
                            run_config=run_config)
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["candidate"].value == "aaaaaaaaaaaa"
    (evaluated,) = result.asset_materializations_for_node("eval_nima_color")
    assert evaluated.tags["dagster/data_version"] == "aaaaaaaaaaaa"
    promoted = result.asset_materializations_for_node("production_model")[0]
    assert promoted.metadata["version"].value == promoted.tags["dagster/data_version"] == "aaaaaaaaaaaa"
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        assert promoted_version(conn) == "aaaaaaaaaaaa"
        evaluated = conn.execute("SELECT model_version FROM eval_reports").fetchall()
    assert evaluated == [("aaaaaaaaaaaa",)]

    _make_current(home, "bbbbbbbbbbbb")  # made current since, never evaluated
    resources = build_resources(home=home, raw=tmp_path / "raw")
    check_only = dg.materialize(gated, selection=dg.AssetSelection.checks(nima_color_not_worse_than_production),
                                resources=resources, instance=instance, raise_on_error=False)
    (check,) = check_only.get_asset_check_evaluations()
    assert not check.passed and check.description == "bbbbbbbbbbbb has no kuler/test report"
    promote = dg.materialize(gated, selection=["production_model"], resources=resources, instance=instance,
                             raise_on_error=False)
    assert not promote.success
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        assert promoted_version(conn) == "aaaaaaaaaaaa"


def test_k8s_pod_spec_asks_for_gpus_on_selected_tolerated_nodes_with_aesthetic_home_mounted():
    config = LaunchConfig(k8s_gpus=2, k8s_node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
                          k8s_tolerations=[Toleration(key="nvidia.com/gpu")], k8s_image="reg/aesthetic:1",
                          k8s_pvc_claim="aesthetic-home")
    spec = k8s_pod_spec(config, ["/venv/bin/python", "-m", "nima_train.train", "--data", "x"], "/data/aesthetic")
    (container,) = spec["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert container["command"] == ["python", "-m", "nima_train.train", "--data", "x"]
    assert container["image"] == "reg/aesthetic:1"
    assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    # The command's absolute paths under AESTHETIC_HOME exist in the pod: the claim is mounted at that same path.
    assert spec["volumes"] == [{"name": "aesthetic-home", "persistentVolumeClaim": {"claimName": "aesthetic-home"}}]
    assert container["volumeMounts"] == [{"name": "aesthetic-home", "mountPath": "/data/aesthetic"}]


def test_k8s_launcher_without_a_shared_volume_fails_before_launching_anything():
    with pytest.raises(ValueError, match="k8s_pvc_claim"):
        k8s_pod_spec(LaunchConfig(launcher="k8s"), ["python", "-m", "nima_train.train"], "/data/aesthetic")


def test_nightly_schedule_retrains_only_models_whose_shards_changed():
    from pipelines.definitions import defs
    from pipelines.schedules import nightly_retrain

    repo = defs.get_repository_def()
    with dg.instance_for_test() as instance:  # schedules need a persistent instance
        _check_ticks(instance, repo, nightly_retrain)


def _check_ticks(instance, repo, nightly_retrain):

    def tick():
        return nightly_retrain(dg.build_schedule_context(instance=instance, repository_def=repo))

    assert isinstance(tick(), dg.SkipReason)  # no shards at all
    instance.report_runless_asset_event(dg.AssetMaterialization("ava_shards", tags={"dagster/data_version": "v1"}))
    request = tick()
    assert isinstance(request, dg.RunRequest)
    keys = {k.to_user_string() for k in request.asset_selection}
    assert {"nima_ava", "nima_sac", "nima_color", "eval_nima_ava", "production_model"} <= keys
    # nima_ava trained on v1: nothing to do until the shards change again
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "nima_ava", tags={"dagster/data_version": "m1", "dagster/input_data_version/ava_shards": "v1"}))
    assert isinstance(tick(), dg.SkipReason)
    instance.report_runless_asset_event(dg.AssetMaterialization("ava_shards", tags={"dagster/data_version": "v2"}))
    assert isinstance(tick(), dg.RunRequest)


def test_which_shards_each_model_trains_on_comes_from_the_chain_table_and_the_assets_depend_on_them():
    from pipelines.definitions import defs
    from pipelines.schedules import model_inputs

    assert model_inputs() == {"nima_ava": "ava_shards", "nima_color": "kuler_shards", "nima_sac": "sac_shards"}
    graph = defs.resolve_asset_graph()
    for model, shards in model_inputs().items():
        assert dg.AssetKey(shards) in graph.get(dg.AssetKey(model)).parent_keys


def test_launch_settings_are_not_part_of_a_runs_identity_but_the_process_count_is():
    local = TrainConfig()
    on_k8s = TrainConfig(launch=LaunchConfig(launcher="k8s", k8s_image="reg/aesthetic:1", k8s_pvc_claim="home"))
    assert on_k8s.hyperparameters() == local.hyperparameters()  # a run relaunched elsewhere resumes
    assert "launch" not in local.hyperparameters() and "launcher" not in local.hyperparameters()
    assert TrainConfig(nproc=2).hyperparameters() != local.hyperparameters()  # the effective batch doubles
    defaults = [(c.epochs_full, c.lr_scale, c.negatives) for c in (config_for(m)() for m in CHAIN)]
    assert defaults == [(12, 1.0, 0.0), (1, 0.5, 0.0), (7, 0.5, 0.1)]  # the chain table's rows


