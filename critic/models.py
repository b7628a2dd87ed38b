"""A model reference to a verified critic: the one way the CLI, the critic and curation assets and the leakage
check load a model from the warehouse.

The reference is an alias or a version (None: the 'production' alias), resolved in the warehouse
(warehouse/models_lookup.py); the checkpoint is then loaded only if its SHA-256 is the one expected, the
warehouse's record unless the caller pins another (a leakage rule pins the model it was made with). The backend
that scores (critic/backends.py) is chosen here too: `onnxruntime` opens the version's recorded ONNX export only
once its file, sidecar and checkpoint identity verify (critic/onnx_export.py), so no caller knows which runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from warehouse.models_lookup import ResolvedModel, resolve_model


def _stderr(line: str) -> None:
    print(f"aesthetic: {line}", file=sys.stderr, flush=True)


def load_critic(connect: Callable[[], AbstractContextManager[Any]], home: str | Path, ref: str | None,
                expected_sha256: str | None = None, backend: str = "torch", threads: int | None = None,
                report: Callable[[str], None] = _stderr, **kwargs: Any) -> tuple[Any, ResolvedModel]:
    """(the Critic, the model it is) for ref; kwargs go to Critic.from_checkpoint (image_size, batch_size, ...).
    backend is auto, torch or onnxruntime (critic/backends.py); threads, the forward's (None: the library's
    default); report gets auto's one line when it falls back to torch.
    Raises ModelNotFound, FileNotFoundError, CheckpointMismatch (a RuntimeError) or BackendUnavailable (a
    RuntimeError) rather than load another model."""
    from critic.backends import choose
    from critic.scoring import Critic  # torch: only when a critic is loaded

    with connect() as conn:
        model = resolve_model(conn, home, ref)
        export = _export_of(conn, model.version) if backend != "torch" else None
    expected = expected_sha256 or model.sha256
    reason, critic = None, None
    if backend != "torch":
        reason, critic = _open_export(export, model.version, home, expected, threads, kwargs)
    if choose(backend, kwargs.get("device", "cpu"), reason, report) == "onnxruntime":
        return critic, model
    critic = Critic.from_checkpoint(model.checkpoint, expected_sha256=expected, version=model.version,
                                    threads=threads, **kwargs)
    return critic, model


def _export_of(conn: Any, version: str) -> Any:
    from warehouse.exports import find_export

    return find_export(conn, version, "onnx")


def _open_export(export: Any, version: str, home: str | Path, checkpoint_sha256: str, threads: int | None,
                 kwargs: dict[str, Any]) -> tuple[str | None, Any]:
    """(why the export cannot be scored or None, its critic or None)."""
    from critic.backends import NO_EXPORT
    from critic.onnx_export import ExportInvalid, open_export

    if export is None:
        return (f"{NO_EXPORT} of model {version}: run `aesthetic export {version} --format onnx --out FILE`"), None
    if export.refused:
        return f"model {export.model_version} cannot be exported to ONNX ({export.refused})", None
    try:
        critic = open_export(export.file(home), export.sha256, checkpoint_sha256, threads,
                             kwargs.get("batch_size", 32), kwargs.get("image_size"), kwargs.get("resize"))
    except ExportInvalid as exc:
        return f"the ONNX export of model {export.model_version} is unusable: {exc}", None
    return None, critic
