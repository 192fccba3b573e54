"""LiveKit-style identifiers: a type prefix plus 12 base57 characters (livekit-wire §2)."""

from __future__ import annotations

import secrets

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
    return prefix + "".join(secrets.choice(BASE57) for _ in range(length))


def new_secret(length: int = 43) -> str:
    """A random API secret: 43 base57 characters carry about 250 bits."""
    return new_id("", length)
