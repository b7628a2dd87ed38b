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


@dataclass(frozen=True)
class _Parent:
    genome: Genome
    image: Image.Image
    mean: float
    std: float
    calibrated_mean: float


def evolve(
    critic: Critic,
    shape: str,
    rounds: int,
    batch: int,
    seed: int,
    out: str | Path,
    size: int = EvolveSettings.size,
    rate: float = EvolveSettings.rate,
    strength: float = EvolveSettings.strength,
    on_round: Callable[[RoundLog], None] | None = None,
) -> EvolutionResult:
    settings = EvolveSettings(rounds, batch, seed, size, rate, strength)  # ValueError for a number out of range
    shape = canonical_shape(shape)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)

    genome: Genome = random_genome(shape, rng)
    image = render(genome, size)
    first = critic.score_images([image]).scores()[0]
    parent = _Parent(genome, image, first.mean, first.std, first.calibrated_mean)
    result = EvolutionResult(shape, seed, parent.mean, parent.std, parent.calibrated_mean)
    strip = [Cell(parent.image, f"start {parent.mean:.2f}")]

    for r in range(1, rounds + 1):
        log, parent = _round(critic, parent, r, rng, settings, out)
        strip.append(Cell(parent.image, f"r{r} {parent.mean:.2f}" + ("" if log.improved else " =")))
        result.rounds.append(log)
        if on_round:
            on_round(log)

    strip_path = out / "strip.png"
    _save_png(_grid(strip, cols=len(strip)), strip_path)
    result.strip, result.log = str(strip_path), str(_write_log(out, critic, shape, settings, result))
    return result


def _round(critic: Critic, parent: _Parent, r: int, rng: random.Random, settings: EvolveSettings,
           out: Path) -> tuple[RoundLog, _Parent]:
    """One round: mutate, score, keep the best variant if it beats the parent; writes round_NN.png."""
    batch = settings.batch
    variants = [mutate(parent.genome, rng, settings.rate, settings.strength) for _ in range(batch)]
    images = [render(g, settings.size) for g in variants]
    scores = critic.score_images(images).scores()
    means, stds = [x.mean for x in scores], [x.std for x in scores]
    # The calibration is strictly increasing, so the raw mean ranks the variants as the calibrated one would.
    best = max(range(batch), key=lambda i: (means[i], -i))
    improved = means[best] > parent.mean
    if improved:
        message = (f"round {r}: variant {best} scores {means[best]:.3f} (calibrated "
                   f"{scores[best].calibrated_mean:.3f}), beating the parent's {parent.mean:.3f}")
        parent = _Parent(variants[best], images[best], means[best], stds[best], scores[best].calibrated_mean)
    else:
        message = (f"round {r}: stuck, the best variant scores {means[best]:.3f}, "
                   f"not above the parent's {parent.mean:.3f}; the parent is kept")

    tiles = [Cell(img, f"{m:.2f} \u00b1 {s:.2f}", (0, 170, 0) if improved and i == best else None)
             for i, (img, m, s) in enumerate(zip(images, means, stds, strict=True))]
    sheet_path = out / f"round_{r:02d}.png"
    _save_png(_grid(tiles, cols=min(8, batch)), sheet_path)
    log = RoundLog(r, parent.mean, means[best], stds[best], best, improved, means, stds,
                   parent.genome.as_dict(), sheet_path.name, message, parent.calibrated_mean,
                   scores[best].calibrated_mean, scores[best].percentile)
    return log, parent


def _write_log(out: Path, critic: Critic, shape: str, settings: EvolveSettings, result: EvolutionResult) -> Path:
    log_path = out / "log.json"
    payload = {
        "shape": shape, "seed": settings.seed, "rounds": settings.rounds, "batch": settings.batch,
        "size": settings.size, "rate": settings.rate, "strength": settings.strength, "model": critic.version,
        "calibration": critic.calibration.describe() if critic.calibration else None,
        "initial": {"mean": result.initial_mean, "std": result.initial_std,
                    "calibrated_mean": result.initial_calibrated_mean},
        "best_mean": result.best_mean, "best_calibrated_mean": result.best_calibrated_mean,
        "stuck_rounds": result.stuck_rounds,
        "strip": "strip.png", "log": [vars(x) for x in result.rounds],
    }
    write_atomic(log_path, json.dumps(payload, indent=2).encode())
    return log_path
