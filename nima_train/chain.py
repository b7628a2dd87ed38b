"""The model chain, one row per model: what it trains on, what it starts from, its own defaults, where it goes.

The training, evaluation and check assets are built from these rows by one factory (assets/chain.py), and the
nightly schedule reads them (pipelines/schedules.py), so a model is added by adding a row (docs/training.md, "Add
a model to the chain"). Plain data, no Dagster and no torch: a training-only code location can read it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ChainModel:
    """One model of the chain. `name` is its training asset, its `models` name and the warehouse alias of its
    current version; `eval_<name>` evaluates that version on `dataset`'s test split."""

    name: str
    dataset: str  # shards/<dataset>/{train,val,test}
    shards: str  # the shards asset that writes them
    parent: str | None  # the model whose current version it fine-tunes; None: trains from `weights`
    promoted: str | None  # the alias its evaluated version is promoted to (asset `<promoted>_model`), if any
    lr_scale: float  # multiplies every learning rate (fine-tuning halves them)
    epochs: int  # epochs of the whole network (`epochs_full`)
    negatives: float  # blank and broken renders labelled score 1, as a fraction of the training set
    about: str = ""  # one line for the asset's description

    @property
    def eval_asset(self) -> str:
        return f"eval_{self.name}"

    @property
    def promotion_asset(self) -> str | None:
        """`<alias>_model`, which points the alias at the evaluated version; None for a row not promoted."""
        return f"{self.promoted}_model" if self.promoted else None


CHAIN: tuple[ChainModel, ...] = (
    ChainModel("nima_ava", "ava", "ava_shards", None, None, lr_scale=1.0, epochs=12, negatives=0.0,
               about="NIMA trained on the AVA photos"),
    ChainModel("nima_sac", "sac", "sac_shards", "nima_ava", None, lr_scale=0.5, epochs=1, negatives=0.0,
               about="fine-tuned on SAC's generated images"),
    # The critic scores designs, so the end of the chain is what gets promoted.
    ChainModel("nima_color", "kuler", "kuler_shards", "nima_sac", "production", lr_scale=0.5, epochs=7,
               negatives=0.1, about="fine-tuned on Kuler colour themes plus blank and broken renders, as the "
                                    "notebook did"),
)


def check_chain(chain: Sequence[ChainModel]) -> tuple[ChainModel, ...]:
    """The rows as a tuple, or ValueError naming the first row that cannot be built: a repeated name or
    promotion alias, a parent that is not an earlier row (the chain is trained in order), or a promotion alias
    that is a model name."""
    seen: set[str] = set()
    aliases: set[str] = set()
    for model in chain:
        if model.name in seen:
            raise ValueError(f"chain: model {model.name!r} appears twice")
        if model.parent is not None and model.parent not in seen:
            raise ValueError(f"chain: {model.name} starts from {model.parent!r}, which is not an earlier row")
        if model.promoted is not None and model.promoted in aliases:
            raise ValueError(f"chain: two models are promoted to {model.promoted!r}")
        seen.add(model.name)
        aliases.update([model.promoted] if model.promoted else [])
    if aliases & seen:  # a model's own alias names its current version: a promotion would overwrite it
        raise ValueError(f"chain: promotion alias {sorted(aliases & seen)[0]!r} is also a model name")
    return tuple(chain)
