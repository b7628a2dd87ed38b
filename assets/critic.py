"""Asset group `critic` (docs/critic.md): the promoted model judging a short design evolution."""

# No `from __future__ import annotations`: Dagster must see the real config class, not a string.
from pathlib import Path

import dagster as dg

from assets.metadata import markdown_image
from assets.resources import StorageResource, WarehouseResource
from common.bounds import config_field
from critic.settings import EXPORTERS, BackendSettings, EvolveSettings, ExportSettings
from warehouse.models_lookup import PRODUCTION


class CriticEvolutionConfig(dg.Config):
    model: str = PRODUCTION  # an alias or a version from the `models` table
    shape: str = "heart"  # heart, star, kite (trapezoid) or landscape
    rounds: int = config_field(EvolveSettings, "rounds", "rounds of mutation and scoring", 4)
    batch: int = config_field(EvolveSettings, "batch", "variants mutated from the parent each round", 8)
    seed: int = config_field(EvolveSettings, "seed", "seeds the first design and every mutation")
    backend: str = "auto"  # auto, torch or onnxruntime (critic/backends.py)
    threads: int | None = config_field(BackendSettings, "threads", "threads of the model's forward; unset: the "
                                                                   "cores this process may use")


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
    try:
        chosen = BackendSettings(config.backend, config.threads)
    except ValueError as exc:
        raise dg.Failure(description=f"bad critic config: {exc}") from exc
    critic, found = warehouse.critic_for(storage.home_path, config.model, "the critic", backend=chosen.backend,
                                         threads=chosen.resolved_threads(), report=context.log.warning)
    # torch is imported here, in the step, never when the code location loads.
    from critic.evolve import evolve

    out = storage.reports_dir() / "critic" / found.version / f"{config.shape}-seed{config.seed}"
    result = evolve(critic, config.shape, config.rounds, config.batch, config.seed, out,
                    on_round=lambda r: context.log.info(r.message))
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


class CriticOnnxConfig(dg.Config):
    model: str = PRODUCTION  # an alias or a version from the `models` table
    opset: int = config_field(ExportSettings, "opset", "ONNX opset of the export")
    exporter: str = "torchscript"  # torchscript (5-8x faster to export, the same graph outputs) or dynamo


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
    if config.exporter not in EXPORTERS:
        raise dg.Failure(description=f"exporter must be one of {', '.join(EXPORTERS)}, got {config.exporter!r}")
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
        done = export_version(warehouse.connect, storage.home_path, found.version, out, config.opset,
                              config.exporter)
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
