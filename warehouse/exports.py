"""Exports of model versions to other formats (table `exports`, migration 060): where the file is, its sha256
and opset, or why the exporter refused the model. Written by `aesthetic export` and the `critic_onnx` asset;
read when a scoring verb picks its backend (critic/backends.py)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb


@dataclass(frozen=True)
class ExportRow:
    model_version: str
    format: str
    path: str | None  # relative to $AESTHETIC_HOME unless absolute; None when refused
    sha256: str | None
    opset: int
    exporter: str
    refused: str | None  # the exporter's one line when it could not export the model

    def file(self, home: str | Path) -> Path | None:
        if self.path is None:
            return None
        path = Path(self.path)
        return path if path.is_absolute() else Path(home).resolve() / path


def record_export(conn: duckdb.DuckDBPyConnection, row: ExportRow) -> None:
    """Insert or replace the export of (model version, format)."""
    sql = (resources.files("warehouse") / "exports.sql").read_text()
    conn.execute(sql, [row.model_version, row.format, row.path, row.sha256, row.opset, row.exporter, row.refused])


def find_export(conn: duckdb.DuckDBPyConnection, version: str, fmt: str = "onnx") -> ExportRow | None:
    got = conn.execute(
        "SELECT model_version, format, path, sha256, opset, exporter, refused FROM exports"
        " WHERE model_version = ? AND format = ?", [version, fmt]).fetchone()
    return ExportRow(*got) if got else None
