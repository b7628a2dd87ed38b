"""The training assets' config, generated from the spec of a training run (nima_train/settings.TrainSettings) by the
generator every stage's config uses (assets/settings_config.py): one config field per spec field, with its type,
default, range and description, plus what the launcher decides (`nproc`, `device`, `allow_pipe`, `launch`). A
field added to the spec appears here, on the command line and in the run key at once; none is declared twice.

Each model of the chain (nima_train/chain.py) gets its own class from `train_config_class` with only its row's
defaults changed (assets/training.py's config_for).
"""

from __future__ import annotations

from typing import Any, ClassVar

import dagster as dg
from pydantic import Field, create_model

from assets.launch import NPROC, LaunchConfig
from assets.settings_config import SettingsConfig, config_fields
from common.bounds import ranged_field
from nima_train.runs import hyperparameters
from nima_train.settings import TrainSettings, field_names

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


class _LaunchedTraining(SettingsConfig):
    """What every generated training config does with its fields."""

    settings_class: ClassVar[type] = TrainSettings
    failure_prefix: ClassVar[str] = "training"

    def spec(self) -> TrainSettings:
        """The spec this config asks for (a dagster.Failure, one line, for a choice it does not offer)."""
        return self.settings()

    def hyperparameters(self) -> dict[str, Any]:
        """Everything that changes what the run computes: the whole resolved spec and nproc; what its run key and
        model card record."""
        return hyperparameters(self.spec(), self.nproc)


def train_config_class(name: str, base: type[dg.Config] = _LaunchedTraining, **defaults: Any) -> type[dg.Config]:
    """A config class with every spec field (its default from the spec unless given in defaults)."""
    unknown = set(defaults) - set(field_names())
    if unknown:
        raise KeyError(f"not fields of the training spec: {', '.join(sorted(unknown))}")
    # On the base every field is new; a subclass of a generated class changes only the defaults it is given.
    fields = config_fields(TrainSettings, field_names() if base is _LaunchedTraining else list(defaults), **defaults)
    if base is _LaunchedTraining:
        fields.update(_LAUNCHER_FIELDS)
    cls = create_model(name, __base__=base, __module__=__name__, **fields)
    cls().spec()  # a default outside its range or choices fails at import
    return cls


TrainConfig = train_config_class("TrainConfig")
