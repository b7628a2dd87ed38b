"""A model reference to a verified critic: the one way the CLI, the critic and curation assets and the leakage
check load a model from the warehouse.

The reference is an alias or a version (None: the 'production' alias), resolved in the warehouse
(warehouse/models_lookup.py); the checkpoint is then loaded only if its SHA-256 is the one expected, the
warehouse's record unless the caller pins another (a leakage rule pins the model it was made with).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from warehouse.models_lookup import ResolvedModel, resolve_model


def load_critic(connect: Callable[[], AbstractContextManager[Any]], home: str | Path, ref: str | None,
                expected_sha256: str | None = None, **kwargs: Any) -> tuple[Any, ResolvedModel]:
    """(the Critic, the model it is) for ref; kwargs go to Critic.from_checkpoint (image_size, batch_size, ...).
    Raises ModelNotFound, FileNotFoundError or CheckpointMismatch (a RuntimeError) rather than load another model."""
    from critic.scoring import Critic  # torch: only when a critic is loaded

    with connect() as conn:
        model = resolve_model(conn, home, ref)
    critic = Critic.from_checkpoint(model.checkpoint, expected_sha256=expected_sha256 or model.sha256,
                                    version=model.version, **kwargs)
    return critic, model
