"""Weighted random choice of the worker a job is offered to.

LiveKit weighs a worker by max(0, 1 - load): a worker that reports load >= 1 yet stays AVAILABLE
is never chosen, and a job whose only candidates are such workers goes nowhere. callboard keeps a
small floor instead: AVAILABLE is the worker's own word that it takes jobs, so it can always be
picked, just rarely while it is busy. Loads are clamped to [0, 1] so one worker reporting a
negative or absurd load cannot starve the rest. The random source is passed in: a seeded
`random.Random` makes every choice reproducible in tests.

A `Draw` holds one pool's AVAILABLE workers with their running weight totals, so a dispatch costs
one bisect instead of a weight per worker. Its totals are summed left to right exactly as
`random.choices` sums them, and it draws through `random.choices` itself: for the same workers and
random state it returns what `choose` returns. Workers that already declined the job are rejected
by drawing again (only in big pools, where a fresh list per draw is the cost being avoided); the
accepted draw is then distributed as a draw among the rest, and after a few misses the exact list
is built anyway. Either way the choice stays proportional to the weights.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Iterable, Sequence
from itertools import accumulate
from typing import Final

FLOOR: Final = 0.01
REDRAW_MIN: Final = 64  # pools smaller than this build the exact list: the same draws as `choose`
REDRAWS: Final = 8  # draws rejected (already tried) before building the exact list


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


class Draw:
    """One pool's AVAILABLE workers, in pool order, ready for a weighted draw in O(log n).

    Built from `(worker_id, load)` pairs; the dispatcher drops it whenever a worker of the pool
    registers, leaves, or changes status or load, and builds it again on the next draw.
    """

    def __init__(self, candidates: Iterable[tuple[str, float]], *, floor: float = FLOOR) -> None:
        pairs = list(candidates)
        self.ids = [worker_id for worker_id, _ in pairs]
        self.weights = [weight(load, floor) for _, load in pairs]
        self.cum_weights = list(accumulate(self.weights))
        self.members = frozenset(self.ids)

    def pick(self, rng: random.Random, tried: Collection[str]) -> str | None:
        """A worker not in `tried`, in proportion to its weight; None when every one is tried."""
        skipped = sum(1 for worker_id in tried if worker_id in self.members) if tried else 0
        if skipped == len(self.ids):
            return None
        if not skipped:
            return rng.choices(self.ids, cum_weights=self.cum_weights)[0]
        if len(self.ids) >= REDRAW_MIN and 2 * skipped <= len(self.ids):
            for _ in range(REDRAWS):
                picked = rng.choices(self.ids, cum_weights=self.cum_weights)[0]
                if picked not in tried:
                    return picked
        rest = [i for i, worker_id in enumerate(self.ids) if worker_id not in tried]
        return rng.choices([self.ids[i] for i in rest], [self.weights[i] for i in rest])[0]
