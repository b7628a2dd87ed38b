"""A model version exported and recorded: what `aesthetic export` and the `critic_onnx` asset run. The model is
loaded verified (critic/models.py), exported (critic/onnx_export.py), and the export, or the exporter's refusal,
recorded in the warehouse's `exports` (warehouse/exports.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from critic.models import load_critic
from critic.onnx_export import Exported, ExportRefused, export_onnx
from warehouse.exports import ExportRow, record_export


def export_version(connect: Callable[..., AbstractContextManager[Any]], home: str | Path, ref: str | None,
                   out: str | Path, opset: int, exporter: str) -> Exported:
    """Export the model ref names (verified checkpoint) to out and record it in `exports`; a refusal is recorded
    too (so that `--backend auto` can say why it runs torch) and raised. connect(read_only=...) is the
    warehouse's. ModelNotFound, CheckpointMismatch, ExportRefused: one line each."""
    critic, model = load_critic(lambda: connect(read_only=True), home, ref, backend="torch")
    try:
        done = export_onnx(critic, model, out, opset, exporter)
    except ExportRefused as exc:
        with connect() as conn:
            record_export(conn, ExportRow(model.version, "onnx", None, None, opset, exporter, str(exc)))
        raise
    with connect() as conn:
        record_export(conn, ExportRow(model.version, "onnx", _stored(done.path, home), done.sha256, opset, exporter,
                                      None))
    return done


def _stored(path: Path, home: str | Path) -> str:
    """Relative to $AESTHETIC_HOME when inside it (as `models` keeps checkpoints), else absolute."""
    path, home = path.resolve(), Path(home).resolve()
    return str(path.relative_to(home)) if path.is_relative_to(home) else str(path)
