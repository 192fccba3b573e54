"""Room limits and the per-participant data rate limiter.

Data channels have no error reply, so everything here drops rather than refuses: an oversized or
excess packet is counted and (once per participant) logged, and the sender never learns. The
limits mirror LiveKit where it has one (15 KiB for lossy packets).
"""

from __future__ import annotations

from dataclasses import dataclass

LOSSY_MAX_BYTES = 15 * 1024  # LiveKit's limit for lossy DataPackets
RELIABLE_MAX_BYTES = 64 * 1024
MAX_METADATA_BYTES = 512 * 1024
MAX_ATTRIBUTES_BYTES = 64 * 1024


@dataclass(frozen=True)
class RoomLimits:
    """Everything the room model needs to know about sizes, rates and timers (ms where timed)."""

    lossy_max_bytes: int = LOSSY_MAX_BYTES
    reliable_max_bytes: int = RELIABLE_MAX_BYTES
    data_packets_per_s: float = 500.0
    data_bytes_per_s: float = 4 * 1024 * 1024
    ping_timeout_ms: int = 15_000
    empty_timeout_s: int = 300  # used when a room sets none (LiveKit's default)
    departure_timeout_s: int = 20  # likewise
    max_metadata_bytes: int = MAX_METADATA_BYTES
    max_attributes_bytes: int = MAX_ATTRIBUTES_BYTES
    max_tracks_per_participant: int = 4  # published audio tracks


class TokenBucket:
    """A classic token bucket: `rate` tokens per second, holding at most `burst`.

    Time comes from the caller (ms), so the model stays deterministic under a fake clock.
    """

    __slots__ = ("_last_ms", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now_ms: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._last_ms = now_ms

    def refill(self, now_ms: int) -> None:
        elapsed_s = max(0, now_ms - self._last_ms) / 1000
        self.tokens = min(self.burst, self.tokens + elapsed_s * self.rate)
        self._last_ms = max(self._last_ms, now_ms)

    def take(self, amount: float, now_ms: int) -> bool:
        """Spend `amount` tokens if there are enough; False (and nothing spent) otherwise."""
        self.refill(now_ms)
        if amount > self.tokens:
            return False
        self.tokens -= amount
        return True


class DataRateLimit:
    """Packets and bytes per second for one sender, with one second of burst for each.

    A packet passes only if both buckets hold enough; a dropped packet spends nothing, so a
    flood that stops recovers within a second.
    """

    __slots__ = ("_bytes", "_packets")

    def __init__(self, packets_per_s: float, bytes_per_s: float, now_ms: int) -> None:
        self._packets = TokenBucket(packets_per_s, packets_per_s, now_ms)
        self._bytes = TokenBucket(bytes_per_s, bytes_per_s, now_ms)

    def allow(self, size: int, now_ms: int) -> bool:
        self._packets.refill(now_ms)
        self._bytes.refill(now_ms)
        if self._packets.tokens < 1 or self._bytes.tokens < size:
            return False
        self._packets.tokens -= 1
        self._bytes.tokens -= size
        return True
