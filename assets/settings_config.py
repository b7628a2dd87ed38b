"""A stage's Dagster config, generated from the stage's settings dataclass: one config field per settings field,
with the same name, type, default, range (common/bounds.py) and description (the field's `help`), so a setting is
declared once, where the stage reads it, and a field added to the settings appears in the config without an edit
here or in the asset.

    class KulerConfig(settings_config(KulerSettings, "kuler")):  # "kuler": what a Failure line starts with
        ...

An asset subclasses the generated class to add what is not the stage's (which model, which shards) and names the
settings fields the step supplies itself (`exclude`: SAC's snapshots are the run's partitions). `settings()`
builds the dataclass, whose __post_init__ is the one place a value is checked; a ValueError there ends the step
as one line in a `dagster.Failure`. assets/train_config.py builds the training config with the same fields.
"""
# No `from __future__ import annotations`: Dagster resolves config annotations at runtime.

import dataclasses
import typing
from collections.abc import Iterable
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field, create_model

from common.bounds import HELP, RANGE, ranged_field


class SettingsConfig(dg.Config):
    """A config generated from a settings dataclass (settings_config)."""

    settings_class: ClassVar[type] = object
    failure_prefix: ClassVar[str] = ""

    def settings(self, **supplied: Any) -> Any:
        """The stage's settings from this config's fields and what the step supplies (fields it excluded)."""
        return self.settings_of(self.settings_class, **supplied)

    def settings_of(self, settings: type, **supplied: Any) -> Any:
        """Settings of class `settings` (the stage's, or one given to settings_config's `also`) from the fields of
        this config that it has."""
        names = [f.name for f in dataclasses.fields(settings) if f.name in type(self).model_fields]
        try:
            return settings(**{n: getattr(self, n) for n in names}, **supplied)
        except ValueError as exc:  # a bad choice or template: one line, not a traceback
            raise dg.Failure(description=f"{self.failure_prefix}: {' '.join(str(exc).split())}") from None


def config_field(field: dataclasses.Field, default: Any = dataclasses.MISSING) -> Any:
    """The pydantic field for a settings field: its default (or the one given), range and description."""
    if default is dataclasses.MISSING:
        default = field.default
    if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    default = ... if default is dataclasses.MISSING else default
    text = field.metadata.get(HELP, "")
    if RANGE in field.metadata:
        return ranged_field(default, field.metadata[RANGE], text)
    return Field(default, description=text or None)


def config_fields(settings: type, names: Iterable[str], **defaults: Any) -> dict[str, tuple[Any, Any]]:
    """create_model's (type, field) for each named settings field, its default from defaults when given there."""
    found = {f.name: f for f in dataclasses.fields(settings)}
    unknown = set(defaults) - set(names)
    if unknown:
        raise KeyError(f"not config fields of {settings.__name__}: {', '.join(sorted(unknown))}")
    types = typing.get_type_hints(settings)
    return {n: (types[n], config_field(found[n], defaults.get(n, dataclasses.MISSING))) for n in names}


def settings_config(settings: type, prefix: str, exclude: Iterable[str] = (), also: Iterable[type] = (),
                    **defaults: Any) -> type[SettingsConfig]:
    """The config class with every field of the settings dataclass but those excluded (the step supplies them),
    and every field of each class in `also` (settings of a part the stage uses, e.g. the scoring backend; built by
    settings_of). defaults changes a default for this config only. prefix starts the Failure line of a bad value."""
    names = [f.name for f in dataclasses.fields(settings) if f.name not in set(exclude)]
    fields = config_fields(settings, names, **defaults)
    for part in also:
        fields.update(config_fields(part, [f.name for f in dataclasses.fields(part)]))
    cls = create_model(f"{settings.__name__}Config", __base__=SettingsConfig, __module__=settings.__module__,
                       **fields)
    cls.settings_class, cls.failure_prefix = settings, prefix
    return cls
