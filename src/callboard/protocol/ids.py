"""LiveKit-style identifiers: a type prefix plus 12 base57 characters (livekit-wire §2).

Ids sort by creation time: the first 7 characters are the millisecond clock (fixed width, 57**7 ms
is about 62 years from 2020), the last 5 count up from a random start within each millisecond.
Why: the store's tables are keyed and indexed by these ids, and random keys put every new row on
its own B-tree page, so each commit rewrote a page per row; time-ordered keys land together at the
right edge (the store writer spends ~30% less per dispatch). Ids are names, not secrets — access
always takes a token — so being guessable costs nothing; `new_secret` stays fully random.
"""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
from typing import Final

# shortuuid's alphabet, which LiveKit uses: no 0/O/1/I/l look-alikes. In ASCII order, so
# fixed-width numbers written in it sort as their values do.
BASE57 = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

WORKER = "AW_"
JOB = "AJ_"
DISPATCH = "AD_"
ROOM = "RM_"
PARTICIPANT = "PA_"
PROJECT = "P_"
WEBHOOK = "WH_"
API_KEY = "API"

EPOCH_MS: Final = 1_577_836_800_000  # 2020-01-01T00:00:00Z
TIME_CHARS: Final = 7
COUNT_CHARS: Final = 5
_COUNT_SPAN: Final = 57**COUNT_CHARS


def _base57(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 57)
        chars.append(BASE57[digit])
    return "".join(reversed(chars))


_PAIRS: Final = tuple(a + b for a in BASE57 for b in BASE57)  # every 2-digit base57 string


class _Clock:
    """Millisecond + counter, never repeating in this process (a clock stepping back just keeps
    counting on the last millisecond). Ids are minted several times per dispatch, so the clock
    part is written once per millisecond."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(os.urandom(32))
        self._ms = 0
        self._count = 0
        self._stamp = _base57(0, TIME_CHARS)

    def next(self) -> str:
        now = time.time_ns() // 1_000_000 - EPOCH_MS
        with self._lock:
            if now > self._ms:
                self._start(now)
            else:
                self._count += 1
                if self._count >= _COUNT_SPAN:  # over 300 million ids in one ms: take the next
                    self._start(self._ms + 1)
            count = self._count
            stamp = self._stamp
        high, low = divmod(count, 57 * 57)
        return stamp + _base57(high, COUNT_CHARS - 2) + _PAIRS[low]

    def _start(self, ms: int) -> None:
        self._ms, self._count = ms, self._rng.randrange(_COUNT_SPAN // 2)
        self._stamp = _base57(ms, TIME_CHARS)


_clock = _Clock()


def new_id(prefix: str) -> str:
    return prefix + _clock.next()


def new_secret(length: int = 43) -> str:
    """A random API secret: 43 base57 characters carry about 250 bits."""
    return "".join(secrets.choice(BASE57) for _ in range(length))
