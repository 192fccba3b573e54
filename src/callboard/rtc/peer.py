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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpTransceiver,
    RTCSessionDescription,
)

from callboard.rooms.state import DataKind
from callboard.rtc import sdp, sections
from callboard.rtc.relay import ForwardTrack

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


@dataclass
class Answer:
    sdp: str
    candidates: list[str]  # trickle JSON (first answer only)
    mid_to_track_id: dict[str, str] = field(default_factory=dict)
    missing: int = 0  # wanted tracks that found no free section: ask the client for more


# Called with (mid, client track id, receiver) for each audio section the client sends on.
OnPublish = Callable[[str, str, RTCRtpReceiver], None]


def _no_publish(mid: str, cid: str, receiver: RTCRtpReceiver) -> None:
    pass


def _release(transceiver: RTCRtpTransceiver) -> None:
    """Answer the section inactive, under an msid of its own (a client refuses an SDP where two
    sections share one, and the track it carried may now sit on another section)."""
    transceiver.direction = "recvonly"  # and the client's recvonly: inactive
    transceiver.sender._stream_id = f"-{transceiver.mid}"
    transceiver.sender._track_id = f"free-{transceiver.mid}"


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
        self.on_publish: OnPublish = _no_publish
        # Subscriptions: what the participant should receive (track sid → publisher sid), which
        # offered section carries which (mid → track sid), and each section's forwarding track.
        self.wanted: dict[str, str] = {}
        self.assigned: dict[str, str] = {}
        self.section_tracks: dict[str, ForwardTrack] = {}
        self.receivable: list[str] = []  # the last offer's receivable audio mids
        # Sections whose track is no longer wanted: answered inactive once before being reused,
        # so the client sees the track end (and a new one start if the same track comes back).
        self.released: set[str] = set()
        self.sending: dict[str, str] = {}  # the last offer's mid → cid of audio the client sends
        self.pc.on("datachannel", self._on_channel)
        self.pc.on("connectionstatechange", self._on_state)

    async def answer(self, offer_sdp: str) -> Answer:
        """Answer an offer: the SDP without candidates, and the trickle JSON for our candidates
        (only after the first offer: later offers renegotiate on the same ICE transport).
        Published audio is handed to `on_publish`; wanted tracks are put on offered sections."""
        if not any(line.startswith("m=") for line in offer_sdp.splitlines()):
            raise SdpError("cannot answer the offer: it has no media sections")
        offered = sections.media_sections(offer_sdp)
        async with self._lock:
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
                self._take_published(offered)
                placement = self._place(offered)
                await self.pc.setLocalDescription(await self.pc.createAnswer())
            except Exception as exc:  # aiortc raises many types for a bad SDP
                raise SdpError(f"cannot answer the offer: {exc or type(exc).__name__}") from None
            local = self.pc.localDescription
            stripped, candidates = sdp.split_candidates(local.sdp, self.node_ip)
            mids = {**placement.assigned}
            answer = Answer(stripped, [], mids, placement.missing)
            if self._answered:
                return answer
            self._answered = True
            mid = sdp.first_mid(local.sdp)
            answer.candidates = [sdp.trickle_json(c, mid) for c in candidates]
            return answer

    def _take_published(self, offered: list[sections.MediaSection]) -> None:
        self.sending = sections.published_audio(offered)
        for transceiver in self.pc.getTransceivers():
            cid = self.sending.get(transceiver.mid or "")
            if cid and transceiver.kind == "audio":
                self.on_publish(transceiver.mid or "", cid, transceiver.receiver)

    def _place(self, offered: list[sections.MediaSection]) -> sections.Placement:
        self.receivable = [m for m in sections.receivable_audio(offered) if m not in self.sending]
        usable = [m for m in self.receivable if m not in self.released]
        placement = sections.place(usable, self.assigned, self.wanted)
        by_mid = {t.mid: t for t in self.pc.getTransceivers() if t.mid is not None}
        for mid in (set(self.assigned) | self.released) - set(placement.assigned):
            if mid in by_mid:
                _release(by_mid[mid])
        self.released.clear()
        for mid, track_sid in placement.assigned.items():
            self._attach(by_mid[mid], track_sid)
        self.assigned = placement.assigned
        return placement

    def _attach(self, transceiver: RTCRtpTransceiver, track_sid: str) -> None:
        mid = transceiver.mid or ""
        track = self.section_tracks.get(mid)
        if track is None:
            track = self.section_tracks[mid] = ForwardTrack(track_sid)
        elif track.id != track_sid:
            track.retarget(track_sid)
        transceiver.direction = "sendonly"
        transceiver.sender._stream_id = f"{self.wanted[track_sid]}|{track_sid}"
        transceiver.sender.replaceTrack(track)

    def set_wanted(self, wanted: Mapping[str, str]) -> int | None:
        """What to receive from now on. None: nothing to renegotiate; else how many more
        sections the client must add (0: the free ones it has will do) before re-offering."""
        self.wanted = dict(wanted)
        for mid, track_sid in list(self.assigned.items()):
            if track_sid not in self.wanted:
                del self.assigned[mid]
                self.released.add(mid)
                if mid in self.section_tracks:
                    self.section_tracks[mid].flush()
        placed = set(self.assigned.values())
        if placed == set(self.wanted) and not self.released:
            return None
        free = len(self.receivable) - len(self.assigned) - len(self.released)
        return max(0, len(set(self.wanted) - placed) - free)

    def sinks(self) -> dict[str, ForwardTrack]:
        """track sid → the forwarding track that carries it to this participant now."""
        return {
            track_sid: self.section_tracks[mid]
            for mid, track_sid in self.assigned.items()
            if track_sid in self.wanted and mid in self.section_tracks
        }

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
        for track in self.section_tracks.values():
            track.stop()
        self.section_tracks.clear()
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
