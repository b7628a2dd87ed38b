"""The critic exported to ONNX and scored by ONNX Runtime (issue 33): real exports, real ONNX Runtime sessions, a
real warehouse. The shared export is the torch.export-based exporter's; the backbone tests and the asset use the
default, TorchScript-based one (5-8x faster to export)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import onnx
import pytest
import torch
import webdataset as wds

from cli.main import main
from common.imaging import sha256_file
from critic.backends import BackendUnavailable
from critic.curate import CurateSettings, curate
from critic.exports import export_version
from critic.models import load_critic
from critic.onnx_export import ExportRefused, export_onnx
from critic.scoring import Critic
from critic.settings import default_threads
from nima_train.checkpoint import save_checkpoint
from nima_train.model import NIMA, recalibrate_batchnorm
from pipelines.resources import build_resources
from tests.helpers.critic_models import picture, png_bytes, register_model, stretching_calibration
from warehouse.db import connect
from warehouse.exports import ExportRow, find_export, record_export
from warehouse.models_lookup import ResolvedModel

SIDE, RESIZE = 64, 72  # small inputs: every backbone still ends in a spatial map of 2 x 2
HEAD_GAIN = 10.0  # the untrained head's logits are tiny; scaled, its histograms differ from flat and between images


def _connect(home: Path):
    return lambda read_only=False: connect(home / "warehouse.duckdb", read_only=read_only)


def _critic(home: Path, backend: str, reports: list[str] | None = None, **kw) -> Critic:
    sink = reports.append if reports is not None else print
    return load_critic(_connect(home), home, None, backend=backend, report=sink, **kw)[0]


def _scores(critic: Critic, n: int = 4) -> np.ndarray:
    """(n, 12): mean, calibrated mean and the 10 bins of n pictures."""
    batch = critic.score_images([picture(40 + i, 96) for i in range(n)])
    return torch.cat([batch.mean[:, None], batch.calibrated[:, None], batch.probs], 1).double().numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A promoted, calibrated mobilenet_v2 exported through `aesthetic export` into home/exports/ by the
    torch.export-based exporter (the backbone tests and the asset use the default, TorchScript-based one)."""
    home = tmp_path_factory.mktemp("onnx") / "home"
    home.mkdir()
    version = register_model(home, crop=SIDE, resize=RESIZE, calibration=stretching_calibration())
    out = home / "exports" / "critic.onnx"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AESTHETIC_HOME", str(home))
        assert main(["export", version, "--format", "onnx", "--out", str(out), "--exporter", "dynamo"]) == 0
    return {"home": home, "version": version, "out": out}


def _copy(exported: dict, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the exported home (paths in the warehouse are relative, so it works as it is)."""
    home = tmp_path / "home"
    shutil.copytree(exported["home"], home)
    return home, home / "exports" / "critic.onnx"


def test_export_writes_a_batch_dynamic_graph_with_two_outputs_its_sidecar_and_an_exports_row(exported) -> None:
    home, out, version = exported["home"], exported["out"], exported["version"]
    graph = onnx.load(str(out)).graph
    (image,) = graph.input
    assert image.name == "image" and image.type.tensor_type.shape.dim[0].dim_param  # symbolic: any batch
    assert [d.dim_value for d in image.type.tensor_type.shape.dim[1:]] == [3, SIDE, SIDE]
    assert [o.name for o in graph.output] == ["probs", "features"]
    card = json.loads(Path(f"{out}.json").read_text())
    model = card["model"]
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        row = find_export(conn, version)
        checkpoint_sha = conn.execute("SELECT sha256 FROM models WHERE version = ?", [version]).fetchone()[0]
    assert (model["version"], model["backbone"], model["image_size"], model["resize"]) == (
        version, "mobilenet_v2", SIDE, RESIZE)
    assert model["checkpoint_sha256"] == checkpoint_sha and model["normalization"]["std"] == [0.229, 0.224, 0.225]
    assert card["calibration"] == stretching_calibration().as_dict()
    assert card["onnx"]["sha256"] == sha256_file(out) == row.sha256
    assert (row.path, row.opset, row.exporter, row.refused) == ("exports/critic.onnx", 18, "dynamo", None)
    # One file (no external .data: the hash covers every weight), and no temporaries left.
    assert sorted(p.name for p in out.parent.iterdir()) == ["critic.onnx", "critic.onnx.json"]


def test_auto_scores_with_onnxruntime_on_the_cpu_when_an_export_exists_and_answers_like_torch(exported) -> None:
    home = exported["home"]
    reports: list[str] = []
    auto, torch_critic = _critic(home, "auto", reports, threads=1), _critic(home, "torch")
    assert (auto.backend.name, torch_critic.backend.name, reports) == ("onnxruntime", "torch", [])
    assert auto.backend.session.get_session_options().intra_op_num_threads == 1
    assert auto.calibration.as_dict() == torch_critic.calibration.as_dict()
    ours, theirs = _scores(auto, 5), _scores(torch_critic, 5)  # 5: not the batch the graph was exported with
    np.testing.assert_allclose(ours[:, :2], theirs[:, :2], atol=1e-3, rtol=0)
    np.testing.assert_allclose(ours[:, 2:], theirs[:, 2:], atol=1e-4, rtol=0)
    feats = [c.score_images([picture(7, 96)]).features for c in (auto, torch_critic)]
    torch.testing.assert_close(feats[0], feats[1], atol=1e-4, rtol=1e-3)


def test_the_score_verb_prints_the_same_results_on_either_backend(exported, monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("AESTHETIC_HOME", str(exported["home"]))
    for i in range(3):
        (tmp_path / f"p{i}.png").write_bytes(png_bytes(picture(60 + i, 120)))
    results = {}
    for backend in ("torch", "onnxruntime"):
        assert main(["score", str(tmp_path), "--json", "--backend", backend, "--threads", "1"]) == 0
        results[backend] = json.loads(capsys.readouterr().out)["results"]
    for a, b in zip(results["torch"], results["onnxruntime"], strict=True):
        assert a["path"] == b["path"] and abs(a["calibrated_mean"] - b["calibrated_mean"]) <= 1e-3
        assert max(abs(x - y) for x, y in zip(a["histogram"], b["histogram"], strict=True)) <= 1e-4
    with pytest.raises(SystemExit) as exc:
        main(["score", str(tmp_path), "--threads", "0"])
    assert exc.value.code == 2


def _backbone_home(root: Path, backbone: str) -> Path:
    """A promoted NIMA of `backbone` (weights none, seeded) whose BatchNorm statistics are measured on pictures
    and whose head is scaled so that scores spread: an untrained net gives every image the same flat histogram,
    against which a tolerance of 1e-3 would prove nothing."""
    torch.manual_seed(3)
    model = NIMA(backbone, weights="none")
    recalibrate_batchnorm(model, Critic(model, image_size=SIDE, resize=RESIZE).preprocess(
        [picture(1000 + i, 96) for i in range(8)]))
    with torch.no_grad():
        model.head[1].weight.mul_(HEAD_GAIN)
    home = root / backbone
    home.mkdir()
    path = home / "models" / backbone / "model.pt"
    path.parent.mkdir(parents=True)
    save_checkpoint(path, {"model": model.state_dict(), "args": {"backbone": backbone, "crop": SIDE,
                                                                 "resize": RESIZE}})
    with connect(home / "warehouse.duckdb") as conn:
        conn.execute("INSERT INTO models (version, name, checkpoint_path, sha256, config) VALUES (?, ?, ?, ?, '{}')",
                     [backbone, "nima_color", str(path.relative_to(home)), sha256_file(path)])
        conn.execute("INSERT INTO model_aliases (alias, version) VALUES ('production', ?)", [backbone])
    return home


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "resnet50"])
def test_every_trained_backbone_scores_the_same_on_onnxruntime_as_on_torch(backbone, tmp_path) -> None:
    home = _backbone_home(tmp_path, backbone)
    export_version(_connect(home), home, None, home / "model.onnx", 18, "torchscript")
    ours, theirs = _scores(_critic(home, "onnxruntime")), _scores(_critic(home, "torch"))
    assert theirs[:, 0].max() - theirs[:, 0].min() > 0.05  # scores that differ from image to image
    assert np.abs(theirs[:, 2:] - 0.1).max() > 0.02  # histograms far from flat
    np.testing.assert_allclose(ours[:, :2], theirs[:, :2], atol=1e-3, rtol=0)
    np.testing.assert_allclose(ours[:, 2:], theirs[:, 2:], atol=1e-4, rtol=0)


def _corpus(folder: Path) -> list[str]:
    folder.mkdir()
    refs = []
    for s in range(2):
        with wds.TarWriter(str(folder / f"s{s}.tar")) as sink:
            for i in range(8):
                sink.write({"__key__": f"k{s}_{i}", "png": png_bytes(picture(200 + 8 * s + i, 256))})
        refs.append(str(folder / f"s{s}.tar"))
    return refs


def test_curate_decides_the_same_on_either_backend_but_within_1e_3_of_the_threshold(exported, tmp_path) -> None:
    refs = _corpus(tmp_path / "in")
    critics = {b: _critic(exported["home"], b) for b in ("torch", "onnxruntime")}
    probe = curate(critics["torch"], refs, tmp_path / "probe", CurateSettings(workers=0, dedupe=False))
    assert probe.outcome is not None
    scores = duckdb.sql(f"SELECT calibrated_mean FROM '{tmp_path}/probe/scores/*.parquet'").fetchnumpy()
    threshold = float(np.median(scores["calibrated_mean"]))  # half the corpus on each side
    settings = CurateSettings(min_score=threshold, workers=0, dedupe=True, similarity=0.5)
    rows = {}
    for name, critic in critics.items():
        assert curate(critic, refs, tmp_path / name, settings).outcome is not None
        rows[name] = duckdb.sql(f"SELECT m.key, m.decision, s.calibrated_mean FROM '{tmp_path}/{name}/manifest.parquet'"
                                f" m JOIN '{tmp_path}/{name}/scores/*.parquet' s ON m.key = s.key "
                                "ORDER BY m.key").fetchall()
    near = [t for t in rows["torch"] if abs(t[2] - threshold) <= 1e-3]
    differing = [(t, o) for t, o in zip(rows["torch"], rows["onnxruntime"], strict=True) if t[1] != o[1]]
    assert len(rows["torch"]) == 16 and {d for _, d, _ in rows["torch"]} >= {"kept", "low_score"}
    assert all(abs(t[2] - threshold) <= 1e-3 for t, _ in differing), (differing, f"{len(near)} near the threshold")
    np.testing.assert_allclose([t[2] for t in rows["torch"]], [o[2] for o in rows["onnxruntime"]], atol=1e-3)


def test_a_truncated_export_is_refused_in_one_line_and_auto_scores_with_torch_saying_why(exported,
                                                                                          tmp_path) -> None:
    home, out = _copy(exported, tmp_path)
    out.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(BackendUnavailable) as exc:
        _critic(home, "onnxruntime")
    assert "truncated or replaced" in str(exc.value) and "\n" not in str(exc.value)
    reports: list[str] = []
    assert _critic(home, "auto", reports).backend.name == "torch"
    assert len(reports) == 1 and "truncated or replaced" in reports[0] and reports[0].endswith("scoring with torch")


def test_a_foreign_onnx_file_and_a_sidecar_of_another_model_are_refused_in_one_line(exported, tmp_path,
                                                                                     monkeypatch, capsys) -> None:
    home, out = _copy(exported, tmp_path)
    card = json.loads(Path(f"{out}.json").read_text())
    card["model"]["checkpoint_sha256"] = "0" * 64
    Path(f"{out}.json").write_text(json.dumps(card))
    with pytest.raises(BackendUnavailable, match=r"is of checkpoint 000000000000\.\.\., the model's is"):
        _critic(home, "onnxruntime")
    out.write_bytes(b"<html>not a graph</html>")  # a foreign file whose sidecar and row claim it
    card["onnx"]["sha256"] = sha256_file(out)
    Path(f"{out}.json").write_text(json.dumps(card))
    with connect(home / "warehouse.duckdb") as conn:
        conn.execute("UPDATE exports SET sha256 = ?", [card["onnx"]["sha256"]])
        version = conn.execute("SELECT sha256 FROM models").fetchone()[0]
    card["model"]["checkpoint_sha256"] = version
    Path(f"{out}.json").write_text(json.dumps(card))
    with pytest.raises(BackendUnavailable, match="ONNX Runtime cannot load") as exc:
        _critic(home, "onnxruntime")
    assert "\n" not in str(exc.value)
    (tmp_path / "p.png").write_bytes(png_bytes(picture(5, 96)))
    stray = tmp_path / "stray.onnx"
    shutil.copy(exported["out"], stray)  # a real graph without its sidecar
    with pytest.raises(SystemExit, match="has no sidecar stray.onnx.json"):
        main(["score", str(tmp_path), "--model", str(stray)])


def test_exporting_an_unknown_version_fails_in_one_line_and_writes_nothing(exported, tmp_path, monkeypatch) -> None:
    home, _ = _copy(exported, tmp_path)
    monkeypatch.setenv("AESTHETIC_HOME", str(home))
    with pytest.raises(SystemExit, match="aesthetic export: no model version or alias 'nope'") as exc:
        main(["export", "nope", "--format", "onnx", "--out", str(tmp_path / "x.onnx")])
    assert "\n" not in str(exc.value.code)
    assert not list(tmp_path.glob("*x.onnx*"))
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM exports").fetchone()[0] == 1


def test_a_backbone_the_exporter_refuses_runs_on_torch_under_auto_saying_why_and_fails_under_onnxruntime(
        exported, tmp_path) -> None:
    # VGG-16 pools to 7 x 7 whatever its input; at 64 px its 2 x 2 map is no multiple of 7, which the TorchScript
    # exporter refuses. Exported from memory: a VGG-16 checkpoint is half a gigabyte to write and hash.
    home, _ = _copy(exported, tmp_path)
    torch.manual_seed(0)
    vgg = Critic(NIMA("vgg16", weights="none"), image_size=SIDE, resize=RESIZE)
    target = tmp_path / "vgg.onnx"
    model = ResolvedModel(exported["version"], "nima_color", tmp_path / "model.pt", "0" * 64, None)
    with pytest.raises(ExportRefused, match="torchscript exporter refuses vgg16 at opset 18: .*adaptive_avg_pool2d"
                       ) as exc:
        export_onnx(vgg, model, target, 18, "torchscript")
    line = str(exc.value)
    assert "\n" not in line and sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # nothing written
    with connect(home / "warehouse.duckdb") as conn:  # what export_version records for a refusal
        record_export(conn, ExportRow(exported["version"], "onnx", None, None, 18, "torchscript", line))
    with pytest.raises(BackendUnavailable, match="cannot be exported to ONNX .*adaptive_avg_pool2d"):
        _critic(home, "onnxruntime")
    reports: list[str] = []
    assert _critic(home, "auto", reports).backend.name == "torch"
    assert len(reports) == 1 and line in reports[0] and reports[0].endswith("scoring with torch")


def test_the_forward_threads_default_to_the_cores_allowed_minus_the_decode_workers() -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    assert (default_threads(0), default_threads(1), default_threads(cores + 4)) == (cores, max(1, cores - 1), 1)


def test_the_critic_onnx_asset_exports_the_promoted_model_beside_its_checkpoint(tmp_path) -> None:
    from assets.critic import critic_onnx

    home = tmp_path / "home"
    home.mkdir()
    version = register_model(home, crop=SIDE, resize=RESIZE)
    result = dg.materialize([critic_onnx], resources=build_resources(home=home, raw=tmp_path / "raw"),
                            instance=dg.DagsterInstance.ephemeral())
    meta = result.asset_materializations_for_node("critic_onnx")[0].metadata
    onnx_file = home / "models" / "nima_color" / version / "model.onnx"
    assert meta["exported"].value is True and Path(meta["path"].value) == onnx_file
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        assert find_export(conn, version).sha256 == sha256_file(onnx_file) == meta["sha256"].value
    assert _critic(home, "auto").backend.name == "onnxruntime"
