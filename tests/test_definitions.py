"""The code location loads, validates, and offers every group, job and verb of the contract."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.assets_index import GROUPS, PARTITIONED_GROUPS
from pipelines.definitions import defs

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_validate_as_a_loadable_code_location():
    dg.Definitions.validate_loadable(defs)


def test_every_design_group_has_assets():
    graph = defs.resolve_asset_graph()
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert set(GROUPS) <= groups, f"missing groups: {set(GROUPS) - groups}"


def test_a_job_per_group_and_the_full_pipeline_job_resolve():
    for name in ["full_pipeline", *(f"{g}_job" for g in GROUPS)]:
        job = defs.resolve_job_def(name)
        assert job.graph.node_defs, name


def test_workspace_yaml_points_at_the_aesthetics_location():
    spec = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    target = spec["load_from"][0]["python_module"]
    assert target == {"module_name": "pipelines.definitions", "location_name": "aesthetics"}


def test_dagster_cli_lists_the_assets_of_the_module():
    out = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "list", "-m", "pipelines.definitions"],
        capture_output=True, text=True, cwd=ROOT, timeout=180, check=True,
    ).stdout
    assert "ava_images" in out and "kuler_images" in out


def test_cli_offers_every_contract_verb():
    from cli.main import VERBS, build_parser

    assert {"sample-data", "score", "evolve", "serve", "filter", "curate"} <= set(VERBS)
    parser = build_parser()
    for verb in VERBS:
        assert parser.parse_args(_minimal_args(verb)).verb == verb


def _minimal_args(verb: str) -> list[str]:
    """The least a user types for each verb (the parser must accept it)."""
    return {
        "sample-data": [verb, "--out", "x"],
        "download": [verb, "ava"],
        "score": [verb, "a.jpg"],
        "filter": [verb, "a.jpg", "--min-score", "5"],
        "evolve": [verb, "--out", "runs"],
        "serve": [verb],
        "curate": [verb, "shards/", "--out", "curated"],
        "export": [verb, "production", "--format", "onnx", "--out", "critic.onnx"],
    }.get(verb, [verb])


def test_no_contract_group_holds_a_partitioned_asset():
    """`--select group:<g>` and the UI's "Materialize all" on a group only prompt for a partition when the
    group holds a partitioned asset; those live in PARTITIONED_GROUPS."""
    graph = defs.resolve_asset_graph()
    partitioned = {key.to_user_string(): graph.get(key).group_name
                   for key in graph.get_all_asset_keys() if graph.get(key).partitions_def is not None}
    assert partitioned == {"sac_snapshots": "sac_inbox"}
    assert set(partitioned.values()) <= set(PARTITIONED_GROUPS)
    assert not set(PARTITIONED_GROUPS) & set(GROUPS)


def test_loading_the_code_location_imports_no_heavy_library():
    """Every step process and sensor tick imports the code location: torch, torchvision, scipy, DuckDB, pyarrow,
    Pillow and numpy are imported inside the steps that use them, never by `import pipelines.definitions`."""
    heavy = ("torch", "torchvision", "scipy", "matplotlib", "pandas", "webdataset", "duckdb", "pyarrow", "PIL", "numpy")
    probe = (
        "import sys, pipelines.definitions; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(heavy)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         check=True).stdout
    assert out.strip() == "[]", f"imported by the code location: {out.strip()}"


def test_the_chain_table_gives_exactly_the_contracts_training_evaluation_and_check_names():
    graph = defs.resolve_asset_graph()
    by_group = {}
    for key in graph.get_all_asset_keys():
        by_group.setdefault(graph.get(key).group_name, set()).add(key.to_user_string())
    assert by_group["training"] == {"nima_ava", "nima_sac", "nima_color"}
    assert by_group["evaluation"] == {"eval_nima_ava", "eval_nima_sac", "eval_nima_color", "production_model"}
    promotion = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys
                 if k.asset_key.to_user_string().startswith("eval_")}
    assert promotion == {("eval_nima_color", "nima_color_not_worse_than_production")}
    assert [s.name for s in defs.schedules] == ["nightly_retrain"]


@pytest.mark.parametrize(("rows", "message"), [
    (lambda c: (*c, c[0]), "model 'nima_ava' appears twice"),
    (lambda c: (c[1], c[0], c[2]), "nima_sac starts from 'nima_ava', which is not an earlier row"),
    (lambda c: (*c, replace(c[0], name="nima_more", promoted="production")), "two models are promoted"),
    (lambda c: (replace(c[0], promoted="nima_sac"), *c[1:]), "alias 'nima_sac' is also a model name"),
])
def test_a_chain_that_cannot_be_built_is_refused_naming_the_row(rows, message):
    from nima_train.chain import CHAIN
    from pipelines.definitions import build_definitions

    with pytest.raises(ValueError, match=message):
        build_definitions(rows(CHAIN))
