"""One participant's aiortc peer connection: the client offers, we answer; data in and out.

LiveKit v1 uses a single peer connection per participant, and the client creates the data
channels in-band (`_reliable` ordered; `_lossy` and `_data_track` unordered without retransmits).
Data arriving on `_reliable` / `_lossy` goes to `on_data`; `_data_track` (data tracks) is not
supported yet and its messages are ignored. Sending never blocks. Packets for a channel the client
has not opened yet (it joined a moment ago) wait in a small bounded queue per channel and go out
when it opens. A packet for a channel whose send buffer is over its cap (a receiver that cannot
keep up) is dropped and reported as not sent, so one slow receiver never holds up a room.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)

from callboard.rooms.state import DataKind
from callboard.rtc import sdp

log = logging.getLogger("callboard.rtc")

CHANNEL_KINDS = {"_reliable": DataKind.RELIABLE, "_lossy": DataKind.LOSSY}
# Beyond this much queued on a receiver's channel, new packets for it are dropped.
MAX_BUFFERED_BYTES = {DataKind.RELIABLE: 8 * 1024 * 1024, DataKind.LOSSY: 256 * 1024}
# Packets held for a channel that is not open yet.
MAX_PENDING_BYTES = {DataKind.RELIABLE: 1024 * 1024, DataKind.LOSSY: 64 * 1024}


class SdpError(Exception):
    """An offer the server cannot answer; `reason` says why (it goes back to the client)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PeerEdge:
    def __init__(
        self,
        ice_servers: list[RTCIceServer],
        *,
        node_ip: str = "",
        on_data: Callable[[DataKind, bytes], None],
        on_connected: Callable[[], None],
    ) -> None:
        # Always an explicit list: with none given, aiortc reaches out to a public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers)))
        self.node_ip = node_ip
        self._on_data = on_data
        self._on_connected = on_connected
        self._channels: dict[DataKind, RTCDataChannel] = {}
        self._pending: dict[DataKind, list[bytes]] = {kind: [] for kind in DataKind}
        self._lock = asyncio.Lock()
        self._answered = False
        self.pc.on("datachannel", self._on_channel)
        self.pc.on("connectionstatechange", self._on_state)

    async def answer(self, offer_sdp: str) -> tuple[str, list[str]]:
        """Answer an offer: the SDP without candidates, and the trickle JSON for our candidates
        (only after the first offer: later offers renegotiate on the same ICE transport)."""
        if not any(line.startswith("m=") for line in offer_sdp.splitlines()):
            raise SdpError("cannot answer the offer: it has no media sections")
        async with self._lock:
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
                await self.pc.setLocalDescription(await self.pc.createAnswer())
            except Exception as exc:  # aiortc raises many types for a bad SDP
                raise SdpError(f"cannot answer the offer: {exc or type(exc).__name__}") from None
            local = self.pc.localDescription
            stripped, candidates = sdp.split_candidates(local.sdp, self.node_ip)
            if self._answered:
                return stripped, []
            self._answered = True
            mid = sdp.first_mid(local.sdp)
            return stripped, [sdp.trickle_json(c, mid) for c in candidates]

    async def add_candidate(self, candidate_init: str) -> None:
        """A trickled remote candidate; raises sdp.BadCandidate for one that cannot be used."""
        candidate = sdp.parse_trickle(candidate_init)
        if candidate is None or self.pc.remoteDescription is None:
            return
        try:
            await self.pc.addIceCandidate(candidate)
        except Exception as exc:
            raise sdp.BadCandidate(f"candidate refused: {exc}") from None

    def send(self, kind: DataKind, payload: bytes) -> bool:
        channel = self._channels.get(kind)
        state = channel.readyState if channel is not None else "connecting"
        if state == "connecting":
            return self._hold(kind, payload)
        if channel is None or state != "open":
            return False
        if channel.bufferedAmount > MAX_BUFFERED_BYTES[kind]:
            return False
        try:
            channel.send(payload)
        except Exception:  # closed under us
            return False
        return True

    def _hold(self, kind: DataKind, payload: bytes) -> bool:
        pending = self._pending[kind]
        if sum(map(len, pending)) + len(payload) > MAX_PENDING_BYTES[kind]:
            return False
        pending.append(payload)
        return True

    def _flush_pending(self, kind: DataKind, channel: RTCDataChannel) -> None:
        pending, self._pending[kind] = self._pending[kind], []
        for payload in pending:
            channel.send(payload)

    async def close(self) -> None:
        self._channels.clear()
        for pending in self._pending.values():
            pending.clear()
        await self.pc.close()

    @property
    def connection_state(self) -> str:
        return str(self.pc.connectionState)

    def _on_channel(self, channel: RTCDataChannel) -> None:
        kind = CHANNEL_KINDS.get(channel.label)
        if kind is None:
            log.debug("ignoring data channel %r", channel.label)
            return
        self._channels[kind] = channel
        if channel.readyState == "open":
            self._flush_pending(kind, channel)
        else:
            channel.on("open", lambda: self._flush_pending(kind, channel))

        def on_message(message: bytes | str) -> None:
            self._on_data(kind, message if isinstance(message, bytes) else message.encode())

        channel.on("message", on_message)

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.debug("peer connection %s", state)
        if state == "connected":
            self._on_connected()
