"""Asset group `critic` (docs/critic.md): the promoted model judging a short design evolution."""

# No `from __future__ import annotations`: Dagster must see the real config class, not a string.
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.metadata import markdown_image
from assets.resources import StorageResource, WarehouseResource
from assets.settings_config import settings_config
from critic.settings import BackendSettings, EvolveSettings, ExportSettings
from warehouse.models_lookup import PRODUCTION


class CriticEvolutionConfig(settings_config(EvolveSettings, "critic", exclude=("size", "rate", "strength"),
                                            also=(BackendSettings,), rounds=4, batch=8)):
    """EvolveSettings' rounds, batch and seed (critic/settings.py; a short run: 4 rounds of 8), BackendSettings'
    backend and threads, and what is not the loop's numbers: which model judges, which shape. The render size and
    mutation rates keep their defaults."""

    model: str = Field(PRODUCTION, description="an alias or a version from the `models` table")
    shape: str = Field("heart", description="heart, star, kite (trapezoid) or landscape")


# production_model (group evaluation) sets the 'production' alias after the blocking accuracy check passed:
# the critic runs on what it promoted, never on a model that failed evaluation.
@dg.asset(group_name="critic", deps=["production_model"], code_version="2")
def critic_evolution(
    context: dg.AssetExecutionContext,
    config: CriticEvolutionConfig,
    storage: StorageResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """A short genetic design run judged by the promoted model: strip of the best design per round."""
    # Input size from the checkpoint's training args, like `aesthetic score|evolve|serve` without --image-size.
    numbers, chosen = config.settings(), config.settings_of(BackendSettings)
    critic, found = warehouse.critic_for(storage.home_path, config.model, "the critic", backend=chosen.backend,
                                         threads=chosen.resolved_threads(), report=context.log.warning)
    # torch is imported here, in the step, never when the code location loads.
    from critic.evolve import evolve

    out = storage.reports_dir() / "critic" / found.version / f"{config.shape}-seed{config.seed}"
    result = evolve(critic, config.shape, numbers.rounds, numbers.batch, numbers.seed, out, numbers.size,
                    numbers.rate, numbers.strength, on_round=lambda r: context.log.info(r.message))
    return dg.MaterializeResult(metadata={
        "model": f"{found.name} {found.version}" + (f" ({found.alias})" if found.alias else ""),
        "initial_mean": result.initial_mean,
        "best_mean": result.best_mean,
        "improvement": result.best_mean - result.initial_mean,
        "initial_calibrated_mean": result.initial_calibrated_mean,
        "best_calibrated_mean": result.best_calibrated_mean,
        "calibration": critic.calibration.describe() if critic.calibration else "none",
        "stuck_rounds": result.stuck_rounds,
        "rounds": config.rounds,
        "input_size": f"{critic.image_size} px (resize {critic.resize})",
        "backend": critic.backend.name,
        "strip": markdown_image(Path(result.strip), Path(result.strip).name),
        "strip_path": dg.MetadataValue.path(result.strip),
        "log_path": dg.MetadataValue.path(result.log),
    })


class CriticOnnxConfig(settings_config(ExportSettings, "critic_onnx")):
    """ExportSettings' opset and exporter (critic/settings.py), and which model to export."""

    model: str = Field(PRODUCTION, description="an alias or a version from the `models` table")


@dg.asset(group_name="critic", deps=["production_model"], code_version="1")
def critic_onnx(
    context: dg.AssetExecutionContext,
    config: CriticOnnxConfig,
    storage: StorageResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """The promoted model exported to ONNX beside its checkpoint (model.onnx + model.onnx.json), recorded in
    `exports`: what `--backend auto` then scores with ONNX Runtime on the CPU. A model the exporter refuses is
    recorded as refused (scoring stays on torch, saying why) and the asset reports it without failing."""
    export = config.settings()
    # torch and onnx are imported here, in the step, never when the code location loads.
    from critic.exports import export_version
    from critic.onnx_export import ExportRefused
    from warehouse.models_lookup import ModelNotFound, resolve_model

    with warehouse.connect(read_only=True) as conn:
        try:
            found = resolve_model(conn, storage.home_path, config.model)
        except ModelNotFound as exc:
            raise dg.Failure(description=f"critic_onnx has no model to export: {exc}") from exc
    out = found.checkpoint.with_suffix(".onnx")
    try:
        done = export_version(warehouse.connect, storage.home_path, found.version, out, export.opset,
                              export.exporter)
    except ExportRefused as exc:
        context.log.warning(f"model {found.version} not exported: {exc}; scoring stays on torch")
        return dg.MaterializeResult(metadata={"model": found.version, "exported": False, "refused": str(exc)})
    return dg.MaterializeResult(metadata={
        "model": f"{found.name} {found.version}" + (f" ({found.alias})" if found.alias else ""),
        "exported": True,
        "path": dg.MetadataValue.path(str(done.path)),
        "sha256": done.sha256,
        "opset": done.opset,
        "exporter": done.exporter,
        "bytes": done.sidecar["onnx"]["bytes"],
        "input_size": f"{done.sidecar['model']['image_size']} px (resize {done.sidecar['model']['resize']})",
    })
