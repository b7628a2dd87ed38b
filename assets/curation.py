"""Asset group `curation`: the promoted critic curates a corpus of WebDataset shards (default: our own shards/).

The work is critic/curate.py (the same as `aesthetic curate`); the report is critic/curation_report.py.
"""

# No `from __future__ import annotations`: Dagster must see the real config class, not a string.
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.metadata import markdown_image
from assets.resources import StorageResource, WarehouseResource
from assets.settings_config import settings_config
from common.shard_format import INDEX_NAME
from critic.settings import BackendSettings, CurateSettings
from warehouse.models_lookup import PRODUCTION


class CurationConfig(settings_config(CurateSettings, "curation", also=(BackendSettings,), workers=2)):
    """CurateSettings' fields (critic/settings.py; two loader workers beside the run's other steps, where the
    command line takes four), BackendSettings' backend and threads (unset: the cores this process may use minus
    `workers`), and what is not the curation's: which shards, which model."""

    shards: list[str] = Field([], description="shard URLs, split folders or index.json files (local or http); "
                                              "empty: every split under shards/")
    model: str = Field(PRODUCTION, description="an alias or a version from the `models` table")


def default_shards(shards_root: Path) -> list[str]:
    """Every split folder of our own shards (shards/<dataset>/<split>/ with an index)."""
    return [str(p.parent) for p in sorted(shards_root.glob(f"*/*/{INDEX_NAME}"))]


@dg.asset(group_name="curation", deps=["production_model", "ava_shards", "sac_shards", "kuler_shards"],
          code_version="1")
def curated_corpus(
    context: dg.AssetExecutionContext,
    config: CurationConfig,
    storage: StorageResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Scores, near-duplicate clusters, a manifest and the kept samples' shards under curation/; a report."""
    refs = config.shards or default_shards(storage.shards_dir())
    if not refs:
        raise dg.Failure(description=f"no shards to curate: none under {storage.shards_dir()} and none configured")
    # torch is imported here, in the step, never when the code location loads.
    from critic.curate import curate, describe_failures
    from critic.curation_report import write_report
    from nima_train.data import ShardURLRefused

    settings, chosen = config.settings(), config.settings_of(BackendSettings)
    critic, found = warehouse.critic_for(storage.home_path, config.model, "curation", batch_size=config.batch_size,
                                         backend=chosen.backend, threads=chosen.resolved_threads(config.workers),
                                         report=context.log.warning)
    out = storage.home_path / "curation"
    started = time.monotonic()
    try:
        result = curate(critic, refs, out, settings)
    except ShardURLRefused as exc:
        raise dg.Failure(description=str(exc)) from exc
    if result.failed:
        raise dg.Failure(description=f"{len(result.failed)} of {len(result.shards)} shards failed: "
                                     f"{describe_failures(result.failed)}; re-materialise to retry them",
                         metadata={"failed": dg.MetadataValue.json(result.failed)})
    seconds = time.monotonic() - started
    outcome = result.outcome
    report = write_report(out, result.shards, outcome, storage.reports_dir() / "curation" / found.version,
                          critic.calibration is not None, config.min_score)
    n = sum(outcome.counts.values())
    context.log.info(f"curated {n} samples of {len(result.shards)} shards: {outcome.counts}")
    return dg.MaterializeResult(metadata={
        "model": f"{found.name} {found.version}" + (f" ({found.alias})" if found.alias else ""),
        "samples": n,
        **{d: c for d, c in outcome.counts.items()},
        "duplicate_clusters": len(outcome.clusters),
        "shards": len(result.shards),
        "shards_scored": len(result.scored),
        "shards_skipped": len(result.skipped),
        "samples_per_s": round(n / max(seconds, 1e-9), 1),
        "backend": f"{critic.backend.name}, {critic.backend.threads} threads",
        "score_histogram": dg.MetadataValue.json({"counts": report.score_histogram[0],
                                                  "edges": report.score_histogram[1]}),
        "histogram": markdown_image(report.histogram, "score histogram"),
        "top": markdown_image(report.top, "top samples"),
        "bottom": markdown_image(report.bottom, "bottom samples"),
        "duplicates": markdown_image(report.duplicates, "duplicate clusters", empty="no duplicate clusters"),
        "detected": dg.MetadataValue.json(report.detected),
        **{f"detector_{d}": markdown_image(path, f"{d} samples") for d, path in report.detectors.items()},
        "manifest": dg.MetadataValue.path(str(outcome.manifest)),
        "kept_shards": dg.MetadataValue.path(str(outcome.shards_dir)),
        "report": dg.MetadataValue.path(str(report.folder)),
    })
