"""Weighted selection: weights follow load, never reach zero, and the rng makes it reproducible."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from callboard.dispatch.selection import FLOOR, choose, weight

CHI2_CRITICAL_2DOF_P001 = 13.816


def chi_square(observed: Counter[str], weights: dict[str, float]) -> float:
    total = sum(observed.values())
    norm = sum(weights.values())
    expected = {k: total * w / norm for k, w in weights.items()}
    return sum((observed[k] - e) ** 2 / e for k, e in expected.items())


@pytest.mark.parametrize(
    ("load", "expected"),
    [
        (0.0, 1.0),
        (0.25, 0.75),
        (0.99, FLOOR),
        (1.0, FLOOR),
        (7.0, FLOOR),
        (-3.0, 1.0),  # clamped: a negative load cannot outweigh an idle worker
        (math.nan, FLOOR),
        (math.inf, FLOOR),
    ],
)
def test_weight(load: float, expected: float) -> None:
    assert weight(load) == pytest.approx(expected)


def test_weight_with_custom_floor() -> None:
    assert weight(1.0, floor=0.2) == 0.2
    assert weight(0.5, floor=0.2) == 0.5


def test_choose_one_candidate() -> None:
    assert choose([("AW_a", 1.0)], random.Random(1)) == "AW_a"


def test_choose_rejects_nothing_and_bad_floor() -> None:
    with pytest.raises(ValueError, match="no candidates"):
        choose([], random.Random(1))
    with pytest.raises(ValueError, match="floor"):
        choose([("AW_a", 0.0)], random.Random(1), floor=0.0)


def test_same_seed_same_choices() -> None:
    candidates = [("a", 0.1), ("b", 0.5), ("c", 0.9)]
    first = [choose(candidates, random.Random(42)) for _ in range(5)]
    rng1, rng2 = random.Random(7), random.Random(7)
    assert [choose(candidates, rng1) for _ in range(50)] == [
        choose(candidates, rng2) for _ in range(50)
    ]
    assert len(set(first)) == 1


def test_distribution_matches_weights() -> None:
    rng = random.Random(2024)
    candidates = [("a", 0.1), ("b", 0.4), ("c", 0.6)]
    counts = Counter(choose(candidates, rng) for _ in range(3000))
    assert chi_square(counts, {"a": 0.9, "b": 0.6, "c": 0.4}) < CHI2_CRITICAL_2DOF_P001


def test_floor_keeps_a_saturated_worker_in_the_draw() -> None:
    rng = random.Random(3)
    counts = Counter(choose([("idle", 0.0), ("busy", 1.0)], rng) for _ in range(5000))
    # expected share 0.01 / 1.01, about 50 of 5000
    assert 15 < counts["busy"] < 110


def test_all_saturated_workers_share_equally() -> None:
    rng = random.Random(5)
    counts = Counter(choose([("a", 1.0), ("b", 2.0), ("c", 9.0)], rng) for _ in range(3000))
    assert chi_square(counts, {"a": 1, "b": 1, "c": 1}) < CHI2_CRITICAL_2DOF_P001
