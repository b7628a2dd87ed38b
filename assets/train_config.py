"""The training assets' config, generated from the spec of a training run (nima_train/settings.TrainSettings): one
config field per spec field, with its type, default, range and description, plus what the launcher decides
(`nproc`, `device`, `allow_pipe`, `launch`). A field added to the spec appears here, on the command line and in the
run key at once; none is declared twice.

Each model of the chain (nima_train/chain.py) gets its own class from `train_config_class` with only its row's
defaults changed (assets/training.py's config_for).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import dagster as dg
from pydantic import Field, create_model

from assets.launch import NPROC, LaunchConfig
from common.bounds import RANGE, config_field, ranged_field
from nima_train.runs import hyperparameters
from nima_train.settings import TrainSettings, field_help, field_types

# The fields that are not the spec's: how many processes share the batch, where the run goes, and whether `pipe:`
# shard URLs may run (they run shell commands: only when the operator says so; where bytes come from, not what the
# run computes).
_LAUNCHER_FIELDS: dict[str, tuple[Any, Any]] = {
    "nproc": (int, ranged_field(1, NPROC, ">1: torchrun --nproc-per-node; changes the effective batch "
                                          "(batch_size x nproc)")),
    "device": (str, Field("", description="empty: cuda when available; where the run goes, not its identity")),
    "allow_pipe": (bool, Field(False, description="let `pipe:` shard URLs run (they run shell commands)")),
    "launch": (LaunchConfig, Field(LaunchConfig(), description="where the run starts: assets/launch.py")),
}


class _LaunchedTraining(dg.Config):
    """What every generated training config does with its fields."""

    def spec(self) -> TrainSettings:
        """The spec this config asks for (ValueError for a choice it does not offer)."""
        return TrainSettings.from_mapping(self.model_dump())

    def hyperparameters(self) -> dict[str, Any]:
        """Everything that changes what the run computes: the whole resolved spec and nproc; what its run key and
        model card record."""
        return hyperparameters(self.spec(), self.nproc)


def _config_field(field: dataclasses.Field, default: Any) -> Any:
    if RANGE in field.metadata:
        return config_field(TrainSettings, field.name, field_help(field.name), default)
    return Field(default, description=field_help(field.name))


def train_config_class(name: str, base: type[dg.Config] = _LaunchedTraining, **defaults: Any) -> type[dg.Config]:
    """A config class with every spec field (its default from the spec unless given in defaults)."""
    spec_fields = {f.name: f for f in dataclasses.fields(TrainSettings)}
    unknown = set(defaults) - set(spec_fields)
    if unknown:
        raise KeyError(f"not fields of the training spec: {', '.join(sorted(unknown))}")
    # On the base every field is new; a subclass of a generated class changes only the defaults it is given.
    changed = spec_fields if base is _LaunchedTraining else {k: spec_fields[k] for k in defaults}
    types = field_types()
    fields = {k: (types[k], _config_field(f, defaults.get(k, f.default))) for k, f in changed.items()}
    if base is _LaunchedTraining:
        fields.update(_LAUNCHER_FIELDS)
    cls = create_model(name, __base__=base, __module__=__name__, **fields)
    TrainSettings.from_mapping(cls().model_dump())  # a default outside its range or choices fails at import
    return cls


TrainConfig = train_config_class("TrainConfig")
