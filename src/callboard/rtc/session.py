"""One participant's /rtc/v1 connection after the upgrade: signalling plus its peer connection.

Order on the wire (livekit-wire §10): `join` (JoinResponse) → `answer` to the publisher offer →
our ICE candidates as `trickle` → then whatever comes: client trickle, `ping_req` → `pong_resp`,
`update_metadata` → `request_response`, re-offers → answers, `leave` either way.

Audio (livekit-wire §10): `add_track` → the model answers `track_published` (or a
`request_response` refusal); the client re-offers with a sendonly section, whose mid → cid the
peer reads from the SDP and whose receiver is relayed without decoding (media.py, relay.py). A
section the client stops sending on is an unpublish. What the participant should hear comes from
the model (`sync_subscriptions`); when that needs sections the last answer did not settle, the
client is sent `media_sections_requirement` and re-offers.

The session is the participant's `ParticipantEdge`. Messages to the client go through one
outbox drained by one sender task, so they keep their order and the model never waits on a
socket. Whatever ends the session (client leave, socket closed, protocol error, kick, ping
timeout, shutdown), `_finish` runs once: the participant leaves the room if it is still in it,
and the peer connection is closed, so nothing outlives the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import WSMsgType, web
from aiortc import RTCRtpReceiver
from google.protobuf.message import DecodeError
from livekit.protocol import models
from livekit.protocol import rtc as pb

from callboard.protocol.errors import WS_NORMAL, WS_POLICY_VIOLATION
from callboard.rooms.contract import JoinRefused
from callboard.rooms.model import JoinAttempt
from callboard.rooms.state import DataKind
from callboard.rtc import signal
from callboard.rtc.manager import RoomManager
from callboard.rtc.peer import Answer, SdpError
from callboard.rtc.sdp import BadCandidate

log = logging.getLogger("callboard.rtc")

Reason = models.DisconnectReason
Action = pb.LeaveRequest.Action
WS_INVALID_PAYLOAD = 1007
# A client this many signal messages behind (not reading its socket) is disconnected.
MAX_OUTBOX = 4096
# How long a closing session lets its sender flush (the final leave) before cancelling it.
SENDER_DRAIN_S = 2.0
_IGNORED = frozenset(
    {"track_setting", "update_layers", "sync_state", "simulate", "update_audio_track",
     "update_video_track", "answer"}
)  # fmt: skip


def now_ms() -> int:
    return int(time.time() * 1000)


class RtcSession:
    def __init__(
        self,
        manager: RoomManager,
        ws: web.WebSocketResponse,
        attempt: JoinAttempt,
        request: pb.JoinRequest,
        remote: str = "",
    ) -> None:
        self.manager = manager
        self.ws = ws
        self.attempt = attempt
        self.request = request
        self.remote = remote
        self.sid = ""
        self.peer = manager.new_peer(self._on_data, self._on_connected)
        self.peer.on_publish = self._on_publish
        self._published: dict[str, str] = {}  # mid → track sid of audio this client sends
        self._outbox: asyncio.Queue[pb.SignalResponse | None] = asyncio.Queue()
        self._in_room = False
        self._close: tuple[int, str] | None = None
        self._bad_candidates = 0

    @property
    def identity(self) -> str:
        return self.attempt.claims.identity

    # -- ParticipantEdge

    def send_signal(self, msg: pb.SignalResponse) -> None:
        if self._close is not None:
            return
        if self._outbox.qsize() >= MAX_OUTBOX:
            self._overflow()
            return
        self._outbox.put_nowait(msg)

    def _overflow(self) -> None:
        """Too far behind: close now, without touching the room (the model may be mid-broadcast);
        the participant leaves when the receive loop ends."""
        log.warning("%s is %d signal messages behind: disconnecting", self.identity, MAX_OUTBOX)
        self._close = (WS_POLICY_VIOLATION, "too far behind on signalling")
        self._outbox.put_nowait(None)
        self.manager.spawn(self._abort(), f"rtc abort {self.identity}")

    async def _abort(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=WS_POLICY_VIOLATION, message=b"too far behind on signalling")

    def send_data(self, kind: DataKind, payload: bytes) -> bool:
        return self.peer.send(kind, payload)

    def disconnect(self, reason: models.DisconnectReason, action: pb.LeaveRequest.Action) -> None:
        """The model let us go (kick, replaced, timeout, room closed): say leave, then close."""
        self._in_room = False
        self.send_signal(signal.leave(reason, action))
        self.close(WS_NORMAL, Reason.Name(reason).lower())

    def close(self, code: int, message: str) -> None:
        """Close the socket once everything queued before is sent."""
        if self._close is None:
            self._close = (code, message)
            self._outbox.put_nowait(None)

    # -- the life of the connection

    async def run(self) -> None:
        sender = self.manager.spawn(self._send_loop(), f"rtc sender {self.identity}")
        try:
            if await self._start():
                await self._receive_loop()
        finally:
            await self._finish(sender)

    async def _start(self) -> bool:
        """Answer the offer first (a bad SDP joins nothing), then join, then tell the client."""
        offer = self.request.publisher_offer
        answer: Answer | None = None
        if offer.sdp:
            try:
                answer = await self.peer.answer(offer.sdp)
            except SdpError as exc:
                return self._refuse(exc.reason)
        try:
            joined = self.manager.join(self.attempt, self)
        except JoinRefused as exc:
            return self._refuse(exc.reason)
        self.sid, self._in_room = joined.sid, True
        self.manager.sessions[self.sid] = self
        log.info("%s joined room %s as %s", self.identity, self.attempt.room_name, self.sid)
        self.send_signal(
            signal.join_response(
                self.manager.signal, joined.room, joined.participant, joined.others
            )
        )
        if answer is not None:
            self._send_answer(answer, offer.id)
        self.sync_subscriptions(self.manager.model.subscriptions(self.sid))
        return True

    def _refuse(self, reason: str) -> bool:
        log.warning("/rtc/v1 join of %s refused after upgrade: %s", self.identity, reason)
        self.send_signal(signal.leave(Reason.JOIN_FAILURE))
        self.close(WS_NORMAL, reason)
        return False

    def _send_answer(self, answer: Answer, offer_id: int) -> None:
        msg = signal.answer(answer.sdp, offer_id)
        mids = {**answer.mid_to_track_id, **self._published}
        msg.answer.mid_to_track_id.update(mids)
        self.send_signal(msg)
        for candidate in answer.candidates:
            self.send_signal(signal.trickle(candidate))
        self.manager.media.wire(self.sid, self.peer.sinks())
        if answer.missing:
            self._ask_for_sections(answer.missing)

    # -- audio

    def sync_subscriptions(self, wanted: dict[str, str]) -> None:
        """The model says what this participant should receive now; renegotiate if needed."""
        if self._close is not None:
            return
        more = self.peer.set_wanted(wanted)
        self.manager.media.wire(self.sid, self.peer.sinks())
        if more is not None and self._in_room:
            self._ask_for_sections(more)

    def _ask_for_sections(self, num_audios: int) -> None:
        """media_sections_requirement: the client adds that many recvonly audio sections (0 is
        fine) and re-offers; the answer puts the wanted tracks on them."""
        requirement = pb.MediaSectionsRequirement(num_audios=num_audios)
        self.send_signal(pb.SignalResponse(media_sections_requirement=requirement))

    def _on_publish(self, mid: str, cid: str, receiver: RTCRtpReceiver) -> None:
        track_sid = self.manager.model.track_sid_for(self.sid, cid)
        if not track_sid:
            log.warning("%s sends audio %r it never announced with add_track", self.identity, cid)
            return
        if self._published.get(mid) != track_sid and self.manager.media.publish(
            track_sid, receiver, self.sid
        ):
            self._published[mid] = track_sid

    def _check_unpublished(self) -> None:
        """A track whose section the client no longer sends on was unpublished."""
        sending = set(self.peer.sending)
        for mid, track_sid in list(self._published.items()):
            if mid not in sending:
                del self._published[mid]
                self.manager.model.unpublish(self.sid, track_sid)

    async def _receive_loop(self) -> None:
        async for msg in self.ws:
            if msg.type != WSMsgType.BINARY:
                if msg.type == WSMsgType.TEXT:
                    self._protocol_error("expected binary protobuf SignalRequest, got text")
                return
            try:
                request = pb.SignalRequest.FromString(msg.data)
            except DecodeError:
                self._protocol_error("message is not a protobuf SignalRequest")
                return
            self.manager.model.touch(self.sid)
            if not await self._handle(request):
                return

    def _protocol_error(self, reason: str) -> None:
        log.warning("/rtc/v1 %s (%s): %s; closing", self.identity, self.remote, reason)
        self._leave_room(Reason.SIGNAL_CLOSE)
        self.send_signal(signal.leave(Reason.UNKNOWN_REASON))
        self.close(WS_INVALID_PAYLOAD, reason)

    async def _handle(self, request: pb.SignalRequest) -> bool:
        """Carry out one client message; False when the client is leaving."""
        kind = request.WhichOneof("message")
        if kind == "leave":
            self._leave_room(Reason.CLIENT_INITIATED)
            return False
        if kind == "ping_req":
            self.send_signal(signal.pong(request.ping_req.timestamp, now_ms()))
        elif kind == "ping":
            self.send_signal(pb.SignalResponse(pong=now_ms()))
        elif kind == "trickle":
            await self._add_candidate(request.trickle.candidateInit)
        elif kind == "offer":
            await self._renegotiate(request.offer)
        elif kind == "update_metadata":
            self.manager.model.update_own_metadata(self.sid, request.update_metadata)
        elif kind == "add_track":
            self.manager.model.add_track(self.sid, request.add_track)
        elif kind == "mute":
            self.manager.model.set_muted(self.sid, request.mute.sid, request.mute.muted)
        elif kind == "subscription":
            self.manager.model.update_subscription(self.sid, request.subscription)
        elif kind == "subscription_permission":
            self.manager.model.set_subscription_permission(
                self.sid, request.subscription_permission
            )
        elif kind not in _IGNORED:
            log.debug("ignoring %s from %s", kind, self.identity)
        return True

    async def _add_candidate(self, candidate_init: str) -> None:
        try:
            await self.peer.add_candidate(candidate_init)
        except BadCandidate as exc:
            self._bad_candidates += 1
            if self._bad_candidates == 1:
                log.warning("%s trickled a bad candidate (ignored): %s", self.identity, exc)

    async def _renegotiate(self, offer: pb.SessionDescription) -> None:
        try:
            answer = await self.peer.answer(offer.sdp)
        except SdpError as exc:
            log.warning("%s: re-offer refused: %s", self.identity, exc.reason)
            self._leave_room(Reason.STATE_MISMATCH)
            self.send_signal(signal.leave(Reason.STATE_MISMATCH))
            self.close(WS_NORMAL, exc.reason)
            return
        self._check_unpublished()
        self._send_answer(answer, offer.id)

    def _leave_room(self, reason: models.DisconnectReason) -> None:
        if self._in_room:
            self._in_room = False
            self.manager.model.leave(self.sid, reason)

    async def _send_loop(self) -> None:
        while (msg := await self._outbox.get()) is not None:
            try:
                await self.ws.send_bytes(msg.SerializeToString())
            except (ConnectionError, RuntimeError):
                break
        code, message = self._close or (WS_NORMAL, "")
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=message.encode()[:120])

    async def _finish(self, sender: asyncio.Task[None]) -> None:
        if self._in_room:
            log.info("%s left room %s without leave", self.identity, self.attempt.room_name)
        self._leave_room(Reason.SIGNAL_CLOSE)
        self.close(WS_NORMAL, "")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(sender), SENDER_DRAIN_S)
        sender.cancel()
        if self.manager.sessions.get(self.sid) is self:
            del self.manager.sessions[self.sid]
        await self.manager.close_peer(self.peer)

    # -- from the peer connection

    def _on_data(self, kind: DataKind, payload: bytes) -> None:
        if self._in_room:
            self.manager.model.on_data(self.sid, kind, payload)

    def _on_connected(self) -> None:
        if self._in_room:
            self.manager.model.mark_active(self.sid)
