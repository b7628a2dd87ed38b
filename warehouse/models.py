"""Model versions, evaluation reports and promotion aliases (tables models, eval_reports, model_aliases)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
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
class TrainedOn:
    """Where a model trained (migration 070): none of it is part of the run key, the checkpoint or the version.
    None: recorded before this was kept."""

    worker: str | None = None  # AESTHETIC_WORKER on the training host ("" when unset)
    host: str | None = None
    code_location: str | None = None  # the Dagster code location whose run trained it ("" outside one)
    device: str | None = None  # cuda:0 or cpu
    device_name: str | None = None
    torch_version: str | None = None
    cuda_version: str | None = None  # "" for a build without CUDA

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> TrainedOn:
        return cls(**{f.name: values.get(f.name) for f in fields(cls)})


TRAINED_ON_COLUMNS = tuple(f.name for f in fields(TrainedOn))
_MODEL_COLUMNS = ("version", "name", "parent_version", "checkpoint_path", "sha256", "config", *TRAINED_ON_COLUMNS)


@dataclass(frozen=True)
class ModelRow:
    version: str
    name: str
    parent_version: str | None
    checkpoint_path: str
    sha256: str
    config: dict[str, Any]
    trained_on: TrainedOn = field(default_factory=TrainedOn)


def record_model(conn: duckdb.DuckDBPyConnection, row: ModelRow) -> None:
    """Insert or refresh a model version (the same checkpoint bytes give the same version)."""
    conn.execute(
        f"INSERT OR REPLACE INTO models ({', '.join(_MODEL_COLUMNS)}) VALUES ({', '.join('?' * len(_MODEL_COLUMNS))})",
        [row.version, row.name, row.parent_version, row.checkpoint_path, row.sha256, json.dumps(row.config),
         *asdict(row.trained_on).values()],
    )


def get_model(conn: duckdb.DuckDBPyConnection, version: str) -> ModelRow | None:
    got = conn.execute(f"SELECT {', '.join(_MODEL_COLUMNS)} FROM models WHERE version = ?", [version]).fetchone()
    if got is None:
        return None
    trained_on = TrainedOn(*got[6:])
    return ModelRow(*got[:5], config=json.loads(got[5]) if got[5] else {}, trained_on=trained_on)


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
