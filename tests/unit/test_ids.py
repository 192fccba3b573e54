"""LiveKit-style ids: prefix + 12 base57 characters, unique, in creation order; random secrets."""

from __future__ import annotations

import time
from collections import Counter

from callboard.protocol import ids


def test_ids_have_the_prefix_and_twelve_base57_characters() -> None:
    for prefix in (ids.WORKER, ids.JOB, ids.DISPATCH, ids.ROOM, ids.PARTICIPANT, ids.API_KEY):
        value = ids.new_id(prefix)
        assert value.startswith(prefix) and len(value) == len(prefix) + 12
        assert set(value[len(prefix):]) <= set(ids.BASE57)


def test_ids_do_not_repeat_and_sort_in_creation_order() -> None:
    values = [ids.new_id("AD_") for _ in range(50_000)]
    assert len(set(values)) == len(values)
    assert values == sorted(values)


def test_the_leading_characters_are_the_clock() -> None:
    before_ms = time.time_ns() // 1_000_000 - ids.EPOCH_MS
    stamp = ids.new_id("")[: ids.TIME_CHARS]
    after_ms = time.time_ns() // 1_000_000 - ids.EPOCH_MS
    value = 0
    for ch in stamp:
        value = value * 57 + ids.BASE57.index(ch)
    assert before_ms <= value <= after_ms


def test_each_millisecond_counts_from_a_random_start() -> None:
    starts = set()
    for _ in range(200):
        first = ids.new_id("")
        while (nxt := ids.new_id(""))[: ids.TIME_CHARS] == first[: ids.TIME_CHARS]:
            pass
        starts.add(nxt[ids.TIME_CHARS:])
    assert len(starts) >= 195  # 200 draws from ~3e8 values: repeats are next to impossible


def test_secrets_are_43_base57_characters_spread_evenly() -> None:
    secret = ids.new_secret()
    assert len(secret) == 43 and set(secret) <= set(ids.BASE57)
    values = [ids.new_secret() for _ in range(2_000)]
    assert len(set(values)) == len(values)
    counts = Counter(ch for v in values for ch in v)
    expected = 2_000 * 43 / 57
    chi2 = sum((counts[ch] - expected) ** 2 / expected for ch in ids.BASE57)
    assert len(counts) == 57
    assert chi2 < 110.0  # 56 degrees of freedom: p ~ 1e-5
