"""Weighted random choice of the worker a job is offered to.

LiveKit weighs a worker by max(0, 1 - load): a worker that reports load >= 1 yet stays AVAILABLE
is never chosen, and a job whose only candidates are such workers goes nowhere. callboard keeps a
small floor instead: AVAILABLE is the worker's own word that it takes jobs, so it can always be
picked, just rarely while it is busy. Loads are clamped to [0, 1] so one worker reporting a
negative or absurd load cannot starve the rest. The random source is passed in: a seeded
`random.Random` makes every choice reproducible in tests.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Final

FLOOR: Final = 0.01


def weight(load: float, floor: float = FLOOR) -> float:
    """A worker's share of the draw; a load that is not a number counts as fully loaded."""
    if not math.isfinite(load):
        return floor
    return max(floor, 1.0 - min(1.0, max(0.0, load)))


def choose(
    candidates: Sequence[tuple[str, float]], rng: random.Random, *, floor: float = FLOOR
) -> str:
    """Pick one id from `(worker_id, load)` pairs, in proportion to `weight(load)`."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"floor must be in (0, 1], got {floor}")
    ids = [worker_id for worker_id, _ in candidates]
    weights = [weight(load, floor) for _, load in candidates]
    return rng.choices(ids, weights=weights)[0]
