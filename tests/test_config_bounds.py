"""Every numeric field of every config a step of the code location takes has a range (common/bounds.py): a
value below or above it is a config error before the step does any work, the command-line flag that sets the same
number refuses exactly the same values, and docs/contract.md lists every range with its reason.

The configs are read from the Definitions' jobs, so a numeric field added later without a range fails here.
"""

from __future__ import annotations

import argparse
import inspect
import math
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import annotated_types as at
import dagster as dg
import pytest
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from cli.main import VERBS
from common.arguments import Parser
from common.bounds import WHY, Range
from nima_train import train
from pipelines.definitions import defs
from pipelines.resources import build_resources

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- config-ranges:start -->", "<!-- config-ranges:end -->"


def config_classes() -> dict[str, type[dg.Config]]:
    """Every config class a step (asset or asset check) of the code location takes, and every resource class it
    binds, by class name."""
    found = {type(r).__name__: type(r) for r in defs.resources.values()}
    for job in defs.resolve_all_job_defs():
        for node in job.all_node_defs:
            fn = getattr(getattr(node, "compute_fn", None), "decorated_fn", None)
            param = inspect.signature(fn).parameters.get("config") if fn else None
            if param is not None:
                found[param.annotation.__name__] = param.annotation
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class NumericField:
    config: type[dg.Config]
    path: tuple[str, ...]  # ("launch", "k8s_gpus"); a list of configs adds "[]": ("files", "[]", "size")
    info: FieldInfo
    kind: type  # int or float

    @property
    def name(self) -> str:
        return ".".join(self.path).replace(".[]", "[]")

    def range(self) -> Range | None:
        """The field's range as pydantic holds it, or None when either end is missing."""
        lo = hi = None
        lo_open = hi_open = False
        for m in self.info.metadata:
            if isinstance(m, at.Ge | at.Gt):
                lo, lo_open = (m.ge, False) if isinstance(m, at.Ge) else (m.gt, True)
            if isinstance(m, at.Le | at.Lt):
                hi, hi_open = (m.le, False) if isinstance(m, at.Le) else (m.lt, True)
        why = (self.info.json_schema_extra or {}).get(WHY, "") if isinstance(self.info.json_schema_extra, dict) else ""
        return None if lo is None or hi is None else Range(lo, hi, why, lo_open, hi_open)

    def config_with(self, value: float) -> dict:
        """The run config of the class that sets this field to value (and each required text to 'x')."""
        inner: object = value
        models = self._models()
        for step in reversed(range(len(self.path))):
            name = self.path[step]
            if name == "[]":
                inner = [inner]
                continue
            inner = {**_required_texts(models[step]), name: inner}
        return inner  # type: ignore[return-value]

    def _models(self) -> list[type[BaseModel]]:
        models, model = [], self.config
        for name in self.path:
            models.append(model)
            if name != "[]":
                model = _model_of(model.model_fields[name].annotation) or model
        return models


def _required_texts(model: type[BaseModel]) -> dict[str, str]:
    return {n: "x" for n, f in model.model_fields.items() if f.is_required() and f.annotation is str}


def _model_of(annotation: object) -> type[BaseModel] | None:
    """The config class an annotation holds (itself, or the item of a list), else None."""
    args = typing.get_args(annotation) if typing.get_origin(annotation) is list else (annotation,)
    found = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    return found[0] if found else None


def _number_kind(annotation: object) -> type | None:
    """int or float for int, float and their optional forms (bool is not a number here), else None."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kinds = [a for a in (typing.get_args(annotation) if union else (annotation,)) if a is not type(None)]
    return kinds[0] if kinds in ([int], [float]) else None


def numeric_fields(config: type[dg.Config], model: type[BaseModel] | None = None,
                   prefix: tuple[str, ...] = ()) -> Iterator[NumericField]:
    for name, info in (model or config).model_fields.items():
        inner = _model_of(info.annotation)
        if inner is not None:
            listed = typing.get_origin(info.annotation) is list
            yield from numeric_fields(config, inner, (*prefix, name, *(["[]"] if listed else [])))
        elif (kind := _number_kind(info.annotation)) is not None:
            yield NumericField(config, (*prefix, name), info, kind)


ALL_FIELDS = [f for cls in config_classes().values() for f in numeric_fields(cls)]


def probes(rng: Range) -> tuple[list[float], list[float]]:
    """(values inside the range, values outside it): its ends, and just past each end."""
    step = 1 if rng.whole else max(abs(rng.hi - rng.lo) * 1e-3, 1e-9)
    inside = [v for v, is_open in ((rng.lo, rng.lo_open), (rng.hi, rng.hi_open)) if not is_open]
    outside = [rng.lo - step, rng.hi + step] + [v for v, is_open in ((rng.lo, rng.lo_open), (rng.hi, rng.hi_open))
                                               if is_open]
    if not rng.whole:
        outside += [math.nan, math.inf]
    return inside, outside


def test_the_code_location_has_configs_with_numbers_to_check():
    names = {f"{f.config.__name__}.{f.name}" for f in ALL_FIELDS}
    assert {"AvaConfig.crop_size", "CriticEvolutionConfig.batch", "AvaTrainConfig.launch.k8s_gpus",
            "DownloadConfig.files[].size", "CurationConfig.min_score"} <= names
    assert {"AvaConfig", "SacConfig", "KulerConfig", "ShardsConfig", "AvaTrainConfig", "SacTrainConfig",
            "ColorTrainConfig", "EvalConfig", "CriticEvolutionConfig", "CurationConfig", "PromotionConfig",
            "LeakageConfig", "DownloadConfig", "WarehouseResource"} <= set(config_classes())


@pytest.mark.parametrize("field", ALL_FIELDS, ids=[f"{f.config.__name__}.{f.name}" for f in ALL_FIELDS])
def test_every_numeric_config_field_refuses_values_outside_its_range(field: NumericField):
    rng = field.range()
    assert rng is not None, f"{field.config.__name__}.{field.name} has no range: declare one (common/bounds.py)"
    assert rng.why, f"{field.config.__name__}.{field.name}: its range gives no reason"
    inside, outside = probes(rng)
    for value in inside:
        field.config(**field.config_with(field.kind(value)))
    for value in outside:
        with pytest.raises(ValidationError, match=re.escape(field.path[-1])):
            field.config(**field.config_with(value))


# The cases the tester ran: each is refused when the step starts, before it reads or writes anything.
RUNS = [
    ("critic_evolution", "batch", 10**9),
    ("ava_images", "crop_size", 10**9),
    ("ava_images", "workers", -3),
    ("ava_images", "min_side", 10**9),
    ("nima_ava", "epochs_full", 10**9),
    ("curated_corpus", "batch_size", 0),
    ("curated_corpus", "min_score", -3.0),
]


@pytest.mark.parametrize(("asset", "name", "value"), RUNS, ids=[f"{a}.{n}={v}" for a, n, v in RUNS])
def test_an_out_of_range_run_config_fails_before_the_step_does_any_work(asset, name, value, tmp_path):
    home, raw = tmp_path / "home", tmp_path / "raw"
    home.mkdir()
    (target,) = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.node_def.name == asset]
    with pytest.raises(ValidationError, match=name):
        dg.materialize([target], resources=build_resources(home=home, raw=raw), selection=[asset],
                       instance=dg.DagsterInstance.ephemeral(),
                       run_config={"ops": {asset: {"config": {name: value}}}})
    assert list(home.iterdir()) == []  # no warehouse, crop, report or run folder


# Config classes whose numbers the command line also sets: the verb (or parser) and the flags it shares.
def _verb_parser(name: str) -> argparse.ArgumentParser:
    parser = Parser(prog=f"aesthetic {name}")
    VERBS[name][1](parser)
    return parser


TWINS = [
    ("AvaTrainConfig", train.get_args_parser),  # every chain row's config is TrainConfig with other defaults
    ("CriticEvolutionConfig", lambda: _verb_parser("evolve")),
    ("CurationConfig", lambda: _verb_parser("curate")),
    ("DownloadConfig", lambda: _verb_parser("download")),
]


@pytest.mark.parametrize(("config", "parser"), TWINS, ids=[t[0] for t in TWINS])
def test_the_command_line_flag_refuses_exactly_what_the_config_field_refuses(config, parser):
    flags = {a.dest: a for a in parser()._actions if a.option_strings}
    shared = [f for f in ALL_FIELDS if f.config.__name__ == config and len(f.path) == 1 and f.path[0] in flags]
    assert len(shared) >= 3
    for field in shared:
        parse = flags[field.path[0]].type
        for value in sum(probes(field.range()), []):
            takes = _config_takes(field, value), _flag_takes(parse, field, value)
            assert takes[0] == takes[1], f"{config}.{field.name} = {value}: config, flag take it: {takes}"


def _config_takes(field: NumericField, value: float) -> bool:
    try:
        field.config(**field.config_with(value))
    except ValidationError:
        return False
    return True


def _flag_takes(parse, field: NumericField, value: float) -> bool:
    try:
        parse(str(field.kind(value)) if math.isfinite(value) else str(value))
    except argparse.ArgumentTypeError:
        return False
    return True


def ranges_table() -> str:
    """The table docs/contract.md holds: one row per numeric field, classes with the same rows on one line."""
    rows_of: dict[tuple, list[str]] = {}
    for name, cls in config_classes().items():
        rows = tuple((f.name, str(f.range()), f.range().why) for f in numeric_fields(cls) if f.range())
        rows_of.setdefault(rows, []).append(name)
    lines = ["| config | field | range | reason |", "|---|---|---|---|"]
    for rows, names in rows_of.items():
        lines += [f"| {', '.join(f'`{n}`' for n in names)} | `{field}` | {rng} | {why} |" for field, rng, why in rows]
    return "\n".join(lines)


def test_the_contract_lists_every_range_with_its_reason():
    text = (ROOT / "docs" / "contract.md").read_text()
    assert START in text and END in text, f"docs/contract.md lacks the {START} ... {END} section"
    listed = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert listed == ranges_table(), "docs/contract.md's ranges differ from the code; the table now:\n" + ranges_table()
