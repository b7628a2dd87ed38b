"""Training and evaluation assets through real Dagster, the promotion gate, the K8s pod spec, the nightly schedule."""

import json
import math

import dagster as dg
import pytest
import torch

from assets.checks import compare_with_production, nima_color_not_worse_than_production
from assets.evaluation import eval_nima_ava, eval_nima_color, production_model
from assets.launch import LaunchConfig, Toleration, k8s_pod_spec
from assets.training import ColorTrainConfig, SacTrainConfig, TrainConfig, nima_ava
from nima_train.checkpoint import save_checkpoint
from nima_train.model import NIMA
from pipelines.resources import build_resources
from tests.helpers.tiny_training import write_tiny_shards
from warehouse.db import connect
from warehouse.models import ModelRow, record_eval_report, record_model, set_alias
from warehouse.models_lookup import promoted_version

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
    assert report[0] == 12 and all(v is not None for v in report[2:])
    assert (home / "reports" / version / "ava-test" / "reliability.png").exists()
    assert f"{fitted['method']} calibration fitted on 24 val samples (chosen by 5-fold cross-validation" in (
        home / "reports" / version / "ava-test" / "report.md").read_text()
    eval_meta = result.asset_materializations_for_node("eval_nima_ava")[0].metadata
    assert "data:image/png;base64," in eval_meta["report"].value


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


def test_promotion_gate_compares_raw_mae_when_production_has_no_calibration(tmp_path):
    with connect(tmp_path / "w.duckdb") as conn:
        _model(conn, "aaaaaaaaaaaa", 0.60, mae_mean=0.70)  # promoted before calibrations existed
        set_alias(conn, "aaaaaaaaaaaa")
        # Its calibrated MAE (0.3) would pass against production's raw 0.7; its own raw MAE does not.
        _model(conn, "bbbbbbbbbbbb", 0.60, mae_mean=0.90, mae_mean_calibrated=0.30)
        check = compare_with_production(conn, "bbbbbbbbbbbb", "kuler", "test", 0.02, mae_margin=0.05)
        assert not check.passed and check.metadata["mae_compared"].value == "mae_mean"


def test_promotion_gate_compares_raw_mae_when_a_calibration_was_not_chosen_by_cross_validation(tmp_path):
    with connect(tmp_path / "w.duckdb") as conn:
        # Production's calibration predates cross-validation: its calibrated MAE may be worse than its raw one.
        _model(conn, "aaaaaaaaaaaa", 0.60, cross_validated=False, mae_mean=0.70, mae_mean_calibrated=0.90)
        set_alias(conn, "aaaaaaaaaaaa")
        _model(conn, "bbbbbbbbbbbb", 0.60, mae_mean=0.80, mae_mean_calibrated=0.72)
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


def test_production_promotes_the_version_eval_nima_color_evaluated_not_a_newer_unevaluated_one(tmp_path):
    home = tmp_path / "home"
    write_tiny_shards(home / "shards" / "kuler" / "test", 8, seed=3, dataset="kuler", split="test")
    checkpoint = home / "models" / "nima_color" / "model.pt"
    checkpoint.parent.mkdir(parents=True)
    # An untrained NIMA predicts one score for every image (SRCC NaN, which the gate rejects): give it
    # BatchNorm statistics from one batch and a random head, so its scores differ between images.
    torch.manual_seed(0)
    model = NIMA("mobilenet_v2", weights="none")
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(16, 3, 32, 32))
    for p in model.head.parameters():
        torch.nn.init.normal_(p, std=0.5)
    save_checkpoint(checkpoint, {"model": model.state_dict(),
                                 "args": {"backbone": "mobilenet_v2", "dropout": 0.75, "crop": 32, "resize": 36}})
    with connect(home / "warehouse.duckdb") as conn:
        _model(conn, "aaaaaaaaaaaa", None, "models/nima_color/model.pt")  # what nima_color published
        _model(conn, "bbbbbbbbbbbb", None, "models/nima_color/model.pt")  # recorded later by someone else
        conn.execute("UPDATE models SET created_at = created_at + INTERVAL 1 HOUR WHERE version = 'bbbbbbbbbbbb'")
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "nima_color", tags={"dagster/data_version": "aaaaaaaaaaaa"}, metadata={"version": "aaaaaaaaaaaa"}))
    result = dg.materialize(
        [eval_nima_color, nima_color_not_worse_than_production, production_model],
        resources=build_resources(home=home, raw=tmp_path / "raw"), instance=instance,
        run_config={"ops": {"eval_nima_color": {"config": {"batch_size": 8}}}},
    )
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["candidate"].value == "aaaaaaaaaaaa"
    assert result.asset_materializations_for_node("production_model")[0].metadata["version"].value == "aaaaaaaaaaaa"
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        assert promoted_version(conn) == "aaaaaaaaaaaa"
        evaluated = conn.execute("SELECT model_version FROM eval_reports").fetchall()
    assert evaluated == [("aaaaaaaaaaaa",)]


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


def test_which_shards_each_model_trains_on_comes_from_the_asset_deps():
    from pipelines.definitions import defs
    from pipelines.schedules import model_inputs

    graph = defs.resolve_asset_graph()
    assert model_inputs(graph) == {"nima_ava": "ava_shards", "nima_color": "kuler_shards", "nima_sac": "sac_shards"}


def test_launch_settings_are_not_part_of_a_runs_identity_but_the_process_count_is():
    local = TrainConfig()
    on_k8s = TrainConfig(launch=LaunchConfig(launcher="k8s", k8s_image="reg/aesthetic:1", k8s_pvc_claim="home"))
    assert on_k8s.hyperparameters() == local.hyperparameters()  # a run relaunched elsewhere resumes
    assert "launch" not in local.hyperparameters() and "launcher" not in local.hyperparameters()
    assert TrainConfig(nproc=2).hyperparameters() != local.hyperparameters()  # the effective batch doubles
    assert (TrainConfig().negatives, SacTrainConfig().negatives, ColorTrainConfig().negatives) == (0.0, 0.0, 0.1)


