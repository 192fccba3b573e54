"""Weighted selection: weights follow load, never reach zero, and the rng makes it reproducible."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from callboard.dispatch.selection import FLOOR, REDRAW_MIN, Draw, choose, weight

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


# -- Draw: the per-pool table the dispatcher keeps -------------------------------------------------


def pool_of(size: int, seed: int) -> list[tuple[str, float]]:
    rng = random.Random(seed)
    return [(f"w{n:04}", rng.choice((0.0, 0.1, 0.5, 0.99, 1.0, rng.random()))) for n in range(size)]


@pytest.mark.parametrize("size", [1, 2, 3, 17, REDRAW_MIN, 1000])
def test_draw_picks_what_choose_picks_for_the_same_seed(size: int) -> None:
    candidates = pool_of(size, seed=size)
    draw = Draw(candidates)
    rng1, rng2 = random.Random(size), random.Random(size)
    assert [draw.pick(rng1, set()) for _ in range(500)] == [
        choose(candidates, rng2) for _ in range(500)
    ]


@pytest.mark.parametrize("size", [2, 5, REDRAW_MIN - 1])
def test_draw_with_tried_workers_in_a_small_pool_picks_what_choose_picks(size: int) -> None:
    candidates = pool_of(size, seed=size)
    draw = Draw(candidates)
    for seed in range(50):
        tried = set(random.Random(seed).sample([w for w, _ in candidates], size // 2 or 1))
        rest = [(w, load) for w, load in candidates if w not in tried]
        if not rest:
            continue
        assert draw.pick(random.Random(seed), tried) == choose(rest, random.Random(seed))


def test_draw_returns_none_only_when_every_worker_is_tried() -> None:
    draw = Draw([("a", 0.0), ("b", 0.5)])
    assert draw.pick(random.Random(1), {"a", "b", "elsewhere"}) is None
    assert draw.pick(random.Random(1), {"a", "elsewhere"}) == "b"
    assert draw.pick(random.Random(1), {"elsewhere"}) in {"a", "b"}
    assert Draw([]).pick(random.Random(1), set()) is None


@pytest.mark.parametrize("tried_load", [0.0, 0.99])  # tried workers heavy (many misses) or light
def test_redrawing_past_tried_workers_keeps_the_weights(tried_load: float) -> None:
    """A big pool rejects tried workers by drawing again: the rest must keep their shares."""
    tried = [(f"t{n:02}", tried_load) for n in range(REDRAW_MIN // 2)]
    rest = (
        [(f"a{n:02}", 0.1) for n in range(10)]
        + [(f"b{n:02}", 0.4) for n in range(11)]
        + [(f"c{n:02}", 0.6) for n in range(REDRAW_MIN // 2 - 21)]
    )
    candidates = tried + rest
    random.Random(0).shuffle(candidates)
    draw = Draw(candidates)
    skip = {w for w, _ in tried}
    rng = random.Random(2025)
    picks = [draw.pick(rng, skip) for _ in range(3000)]
    assert not skip.intersection(picks)
    counts = Counter(str(p)[0] for p in picks)
    shares = {"a": 10 * 0.9, "b": 11 * 0.6, "c": (REDRAW_MIN // 2 - 21) * 0.4}
    assert chi_square(counts, shares) < CHI2_CRITICAL_2DOF_P001, counts
