"""The `critic` group's asset through real Dagster: a short evolution with the promoted model, or a clear failure."""

from __future__ import annotations

import gc
import json
import warnings
from pathlib import Path

import dagster as dg
from PIL import Image

from assets.critic import critic_evolution
from assets.metadata import markdown_image
from pipelines.resources import build_resources
from tests.helpers.critic_models import register_model
from warehouse.db import connect

RUN_CONFIG = {"ops": {"critic_evolution": {"config": {"rounds": 1, "batch": 2, "seed": 3, "shape": "star"}}}}


def test_evolution_with_the_promoted_model_shows_its_strip(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    version = register_model(home, crop=96, resize=108)  # what the CPU demo trains at
    result = dg.materialize([critic_evolution], resources=build_resources(home=home, raw=tmp_path / "raw"),
                            instance=dg.DagsterInstance.ephemeral(), run_config=RUN_CONFIG)
    assert result.success
    meta = result.asset_materializations_for_node("critic_evolution")[0].metadata
    assert meta["model"].value == f"nima_color {version} (production)"
    assert meta["input_size"].value == "96 px (resize 108)"  # the checkpoint's training crop, not 224
    assert meta["strip"].value.startswith("![strip.png](data:image/png;base64,")  # under 1024 px: as written
    out = home / "reports" / "critic" / version / "star-seed3"
    assert Path(meta["strip_path"].value) == out / "strip.png" and (out / "round_01.png").exists()
    log = json.loads((out / "log.json").read_text())
    assert log["model"] == version and meta["best_mean"].value == log["best_mean"]


def test_without_a_promoted_model_the_asset_fails_with_a_clear_message(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with connect(home / "warehouse.duckdb"):
        pass  # an empty, migrated warehouse: nothing trained or promoted
    result = dg.materialize([critic_evolution], resources=build_resources(home=home, raw=tmp_path / "raw"),
                            instance=dg.DagsterInstance.ephemeral(), run_config=RUN_CONFIG, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("critic_evolution")
    assert "no model is promoted yet" in str(failure.error)
    assert not (home / "reports").exists()


def test_inlining_an_image_closes_its_file(tmp_path: Path) -> None:
    # Pillow keeps a multi-frame file open after decoding; only closing the image releases it.
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (40, 30), colour) for colour in ("red", "blue")]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    gc.collect()  # leftovers of earlier tests must not be blamed on this one
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        markdown = markdown_image(path, path.name).value
        gc.collect()
    assert markdown.startswith("![anim.gif](data:image/jpeg;base64,")
    assert [str(w.message) for w in caught if str(path) in str(w.message)] == []
