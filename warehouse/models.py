"""Model versions, evaluation reports and promotion aliases (tables models, eval_reports, model_aliases)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from warehouse.db import transaction

if TYPE_CHECKING:
    import duckdb

METRIC_COLUMNS = ("n", "binary_accuracy", "exact_accuracy", "lcc_mean", "srcc_mean", "lcc_std", "srcc_std",
                  "emd_r1", "emd_r2", "mae_mean", "rmse_mean", "spread_ratio")
# NULL for a model without a calibration (migration 040).
CALIBRATED_COLUMNS = ("mae_mean_calibrated", "rmse_mean_calibrated", "spread_ratio_calibrated",
                      "srcc_mean_calibrated")
REPORT_COLUMNS = METRIC_COLUMNS + CALIBRATED_COLUMNS


@dataclass(frozen=True)
class ModelRow:
    version: str
    name: str
    parent_version: str | None
    checkpoint_path: str
    sha256: str
    config: dict[str, Any]


def record_model(conn: duckdb.DuckDBPyConnection, row: ModelRow) -> None:
    """Insert or refresh a model version (the same checkpoint bytes give the same version)."""
    conn.execute(
        "INSERT OR REPLACE INTO models (version, name, parent_version, checkpoint_path, sha256, config)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [row.version, row.name, row.parent_version, row.checkpoint_path, row.sha256, json.dumps(row.config)],
    )


def get_model(conn: duckdb.DuckDBPyConnection, version: str) -> ModelRow | None:
    got = conn.execute(
        "SELECT version, name, parent_version, checkpoint_path, sha256, config FROM models WHERE version = ?",
        [version],
    ).fetchone()
    if got is None:
        return None
    return ModelRow(*got[:5], config=json.loads(got[5]) if got[5] else {})


def latest_model(conn: duckdb.DuckDBPyConnection, name: str) -> ModelRow | None:
    """The newest version recorded under a model name."""
    got = conn.execute(
        "SELECT version FROM models WHERE name = ? ORDER BY created_at DESC, version LIMIT 1", [name]
    ).fetchone()
    return get_model(conn, got[0]) if got else None


def record_eval_report(conn: duckdb.DuckDBPyConnection, version: str, dataset: str, split: str,
                       metrics: dict[str, Any]) -> None:
    """Replace the report of (model version, dataset, split) in one transaction (idempotent)."""
    missing = [c for c in METRIC_COLUMNS if c not in metrics]
    if missing:
        raise ValueError(f"metrics lack {', '.join(missing)}")
    values = [metrics.get(c) for c in REPORT_COLUMNS]
    with transaction(conn):
        conn.execute("DELETE FROM eval_reports WHERE model_version = ? AND dataset = ? AND split = ?",
                     [version, dataset, split])
        conn.execute(
            f"INSERT INTO eval_reports (model_version, dataset, split, {', '.join(REPORT_COLUMNS)})"
            f" VALUES (?, ?, ?, {', '.join('?' for _ in REPORT_COLUMNS)})",
            [version, dataset, split, *values],
        )


def eval_report(conn: duckdb.DuckDBPyConnection, version: str, dataset: str, split: str) -> dict[str, Any] | None:
    got = conn.execute(
        f"SELECT {', '.join(REPORT_COLUMNS)} FROM eval_reports WHERE model_version = ? AND dataset = ? AND split = ?",
        [version, dataset, split],
    ).fetchone()
    return dict(zip(REPORT_COLUMNS, got, strict=True)) if got else None


def set_alias(conn: duckdb.DuckDBPyConnection, version: str, alias: str = "production") -> None:
    """Point an alias at a recorded model version."""
    if get_model(conn, version) is None:
        raise ValueError(f"cannot promote {version}: no such model version in the warehouse")
    conn.execute(
        "INSERT OR REPLACE INTO model_aliases (alias, version, promoted_at) VALUES (?, ?, current_timestamp)",
        [alias, version],
    )
