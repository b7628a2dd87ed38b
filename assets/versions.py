"""What Dagster recorded about an asset's latest materialisation: its data version and its inputs' versions."""

from __future__ import annotations

import dagster as dg

INPUT_VERSION_TAG = "dagster/input_data_version/"


def _latest(instance: dg.DagsterInstance, asset: str) -> dg.AssetMaterialization | None:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return event.asset_materialization if event else None


def latest_data_version(instance: dg.DagsterInstance, asset: str) -> str | None:
    """The data version the latest materialisation of `asset` reported, if any.

    The shards' is a hash of their indexes (what the nightly schedule compares). Training and evaluation assets
    report the model version, read back from the warehouse, which is where "the current model" is read from
    (warehouse/models_lookup.py), never from here.
    """
    materialization = _latest(instance, asset)
    if materialization is None:
        return None
    version = (materialization.tags or {}).get("dagster/data_version")
    return str(version) if version else None


def input_data_versions(instance: dg.DagsterInstance, asset: str) -> dict[str, str]:
    """The data versions of the inputs the latest materialisation of `asset` was built from."""
    materialization = _latest(instance, asset)
    tags = (materialization.tags or {}) if materialization else {}
    return {k[len(INPUT_VERSION_TAG):]: v for k, v in tags.items() if k.startswith(INPUT_VERSION_TAG)}
