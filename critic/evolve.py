"""The genetic design loop judged by the critic, as in the original work.

Round 0 draws a random genome of the chosen shape. Each round mutates `batch`
variants of the current parent, the critic scores them, and the best becomes
the parent only if it beats the parent's mean score; otherwise the parent is
kept and the round is logged as stuck. Everything random comes from one
`random.Random(seed)`, so a seed (and model) fixes the whole sequence.

Writes into `out`: round_NN.png (contact sheet: every variant with its predicted
mean and std, the winner framed), strip.png (the best design after each round,
like the original figures) and log.json.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from common.atomic import atomic_path, write_atomic
from common.contact_sheet import Cell, contact_sheet
from critic.designs import Genome, canonical_shape, mutate, random_genome, render
from critic.scoring import Critic
from critic.settings import EvolveSettings

THUMB = 128


@dataclass
class RoundLog:
    round: int
    parent_mean: float
    best_mean: float
    best_std: float
    best_index: int
    improved: bool
    means: list[float]
    stds: list[float]
    parent: dict  # the genome after the round
    contact_sheet: str
    message: str
    # The same on the human scale (critic.scoring.Score); equal to the means for a model without calibration.
    parent_calibrated_mean: float = 0.0
    best_calibrated_mean: float = 0.0
    best_percentile: float | None = None


@dataclass
class EvolutionResult:
    shape: str
    seed: int
    initial_mean: float
    initial_std: float
    initial_calibrated_mean: float
    rounds: list[RoundLog] = field(default_factory=list)
    strip: str = ""
    log: str = ""

    @property
    def best_mean(self) -> float:
        return self.rounds[-1].parent_mean if self.rounds else self.initial_mean

    @property
    def best_calibrated_mean(self) -> float:
        return self.rounds[-1].parent_calibrated_mean if self.rounds else self.initial_calibrated_mean

    @property
    def stuck_rounds(self) -> int:
        return sum(not r.improved for r in self.rounds)


def _save_png(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def _grid(cells: list[Cell], cols: int) -> Image.Image:
    return contact_sheet(cells, cols, THUMB, gap=2)


def evolve(
    critic: Critic,
    shape: str,
    rounds: int,
    batch: int,
    seed: int,
    out: str | Path,
    size: int = 256,
    rate: float = 0.3,
    strength: float = 0.15,
    on_round: Callable[[RoundLog], None] | None = None,
) -> EvolutionResult:
    EvolveSettings(rounds, batch, seed, size, rate, strength)  # ValueError for a number outside its range
    shape = canonical_shape(shape)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)

    parent: Genome = random_genome(shape, rng)
    parent_img = render(parent, size)
    first = critic.score_images([parent_img]).scores()[0]
    parent_mean, parent_std, parent_calibrated = first.mean, first.std, first.calibrated_mean
    result = EvolutionResult(shape, seed, parent_mean, parent_std, parent_calibrated)
    strip = [Cell(parent_img, f"start {parent_mean:.2f}")]

    for r in range(1, rounds + 1):
        variants = [mutate(parent, rng, rate, strength) for _ in range(batch)]
        images = [render(g, size) for g in variants]
        scores = critic.score_images(images).scores()
        means, stds = [x.mean for x in scores], [x.std for x in scores]
        # The calibration is strictly increasing, so the raw mean ranks the variants as the calibrated one would.
        best = max(range(batch), key=lambda i: (means[i], -i))
        improved = means[best] > parent_mean
        if improved:
            message = (f"round {r}: variant {best} scores {means[best]:.3f} (calibrated "
                       f"{scores[best].calibrated_mean:.3f}), beating the parent's {parent_mean:.3f}")
            parent, parent_img, parent_mean, parent_std = variants[best], images[best], means[best], stds[best]
            parent_calibrated = scores[best].calibrated_mean
        else:
            message = (f"round {r}: stuck, the best variant scores {means[best]:.3f}, "
                       f"not above the parent's {parent_mean:.3f}; the parent is kept")

        tiles = [Cell(img, f"{m:.2f} \u00b1 {s:.2f}", (0, 170, 0) if improved and i == best else None)
                 for i, (img, m, s) in enumerate(zip(images, means, stds, strict=True))]
        sheet_path = out / f"round_{r:02d}.png"
        _save_png(_grid(tiles, cols=min(8, batch)), sheet_path)
        strip.append(Cell(parent_img, f"r{r} {parent_mean:.2f}" + ("" if improved else " =")))
        log = RoundLog(r, parent_mean, means[best], stds[best], best, improved, means, stds,
                       parent.as_dict(), sheet_path.name, message, parent_calibrated,
                       scores[best].calibrated_mean, scores[best].percentile)
        result.rounds.append(log)
        if on_round:
            on_round(log)

    strip_path = out / "strip.png"
    _save_png(_grid(strip, cols=len(strip)), strip_path)
    log_path = out / "log.json"
    payload = {
        "shape": shape, "seed": seed, "rounds": rounds, "batch": batch, "size": size,
        "rate": rate, "strength": strength, "model": critic.version,
        "calibration": critic.calibration.describe() if critic.calibration else None,
        "initial": {"mean": result.initial_mean, "std": result.initial_std,
                    "calibrated_mean": result.initial_calibrated_mean},
        "best_mean": result.best_mean, "best_calibrated_mean": result.best_calibrated_mean,
        "stuck_rounds": result.stuck_rounds,
        "strip": strip_path.name, "log": [vars(x) for x in result.rounds],
    }
    write_atomic(log_path, json.dumps(payload, indent=2).encode())
    result.strip, result.log = str(strip_path), str(log_path)
    return result
