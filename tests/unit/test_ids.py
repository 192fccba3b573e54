"""LiveKit-style ids: prefix + 12 base57 characters, unpredictable and evenly spread."""

from __future__ import annotations

from collections import Counter

from callboard.protocol import ids


def test_ids_have_the_prefix_and_twelve_base57_characters() -> None:
    for prefix in (ids.WORKER, ids.JOB, ids.DISPATCH, ids.ROOM, ids.PARTICIPANT, ids.API_KEY):
        value = ids.new_id(prefix)
        assert value.startswith(prefix) and len(value) == len(prefix) + 12
        assert set(value[len(prefix):]) <= set(ids.BASE57)


def test_ids_do_not_repeat_and_use_the_whole_alphabet_evenly() -> None:
    values = [ids.new_id("") for _ in range(20_000)]
    assert len(set(values)) == len(values)
    counts = Counter(ch for v in values for ch in v)
    expected = 20_000 * 12 / 57
    chi2 = sum((counts[ch] - expected) ** 2 / expected for ch in ids.BASE57)
    assert len(counts) == 57
    assert chi2 < 110.0  # 56 degrees of freedom: p ~ 1e-5


def test_secrets_are_43_base57_characters() -> None:
    secret = ids.new_secret()
    assert len(secret) == 43 and set(secret) <= set(ids.BASE57)
    assert ids.new_secret() != secret
