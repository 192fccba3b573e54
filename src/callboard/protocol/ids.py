"""LiveKit-style identifiers: a type prefix plus 12 base57 characters (livekit-wire §2)."""

from __future__ import annotations

import os

# shortuuid's alphabet, which LiveKit uses: no 0/O/1/I/l look-alikes.
BASE57 = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

WORKER = "AW_"
JOB = "AJ_"
DISPATCH = "AD_"
ROOM = "RM_"
PARTICIPANT = "PA_"
PROJECT = "P_"
WEBHOOK = "WH_"
API_KEY = "API"


def new_id(prefix: str, length: int = 12) -> str:
    """One urandom read per id (not one per character: ids are minted on every dispatch).

    Base57 digits of a random integer with 64 bits more than the id needs, so the bias of
    the last division is below 2**-64.
    """
    bits = int(length * 5.84) + 64  # log2(57) ~ 5.83
    value = int.from_bytes(os.urandom((bits + 7) // 8), "big")
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 57)
        chars.append(BASE57[digit])
    return prefix + "".join(chars)


def new_secret(length: int = 43) -> str:
    """A random API secret: 43 base57 characters carry about 250 bits."""
    return new_id("", length)
