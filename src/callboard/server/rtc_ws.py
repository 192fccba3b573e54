"""`/rtc/v1`: LiveKit room signalling (WebSocket), `/rtc/v1/validate` and `/rtc/validate`.

Everything that can refuse a join is checked before the WebSocket upgrade, so a refusal is an
HTTP status with a text that says why: the LiveKit SDKs show that text (they call `…/validate`
after a failed upgrade, and `validate` runs the very same checks). 401: no, expired, forged or
unusable token; 403: the token cannot join this room (another room, no roomJoin grant, refused
by the observer, room full); 400: a malformed join_request; 503: shutting down.

The legacy dual peer-connection endpoint `/rtc` answers 404: that is the one status on which the
SDKs fall back, so they never try it against callboard while /rtc/v1 exists, and a client that only
knows `/rtc` learns at once that it is not served.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

from aiohttp import web
from livekit.protocol import models
from livekit.protocol import rtc as pb

from callboard.protocol import tokens
from callboard.protocol.errors import ApiError
from callboard.rooms.contract import JoinRefused
from callboard.rooms.model import JoinAttempt
from callboard.rtc import signal
from callboard.rtc.manager import RoomManager
from callboard.rtc.session import RtcSession
from callboard.server.auth import authenticate, request_token

log = logging.getLogger("callboard.rtc")

MAX_SIGNAL_BYTES = 1024 * 1024
CLOSE_TIMEOUT_S = 2.0


class Refusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Admission:
    attempt: JoinAttempt
    request: pb.JoinRequest | None


def routes() -> list[web.RouteDef]:
    return [
        web.get("/rtc/v1", handle_rtc),
        web.get("/rtc/v1/validate", handle_validate),
        web.get("/rtc/validate", handle_validate),
        web.get("/rtc", handle_legacy),
        web.get("/callboard/v1/rtc/stats", handle_stats),
    ]


async def handle_rtc(request: web.Request) -> web.StreamResponse:
    try:
        admission = _admit(request, need_join_request=True)
    except Refusal as refusal:
        return _refuse(request, refusal)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return _refuse(request, Refusal(400, "/rtc/v1 is a WebSocket endpoint"))
    assert admission.request is not None
    ws = web.WebSocketResponse(
        max_msg_size=MAX_SIGNAL_BYTES, timeout=CLOSE_TIMEOUT_S, compress=False
    )
    await ws.prepare(request)
    if admission.request.reconnect:
        await _ask_full_reconnect(ws, admission)
        return ws
    session = RtcSession(
        request.app["rooms"], ws, admission.attempt, admission.request, request.remote or ""
    )
    await session.run()
    return ws


async def _ask_full_reconnect(ws: web.WebSocketResponse, admission: Admission) -> None:
    """No session resumption here: `leave{RECONNECT}` makes the client rejoin from scratch."""
    log.info(
        "%s asked to resume: answering with a full reconnect", admission.attempt.claims.identity
    )
    leave = signal.leave(models.DisconnectReason.STATE_MISMATCH, pb.LeaveRequest.Action.RECONNECT)
    await ws.send_bytes(leave.SerializeToString())
    await ws.close()


async def handle_validate(request: web.Request) -> web.Response:
    try:
        _admit(request, need_join_request=False)
    except Refusal as refusal:
        return _refuse(request, refusal)
    return web.Response(text="success")


async def handle_legacy(request: web.Request) -> web.Response:
    return web.Response(
        status=404,
        text="callboard serves LiveKit signalling on /rtc/v1 only (single peer connection)\n",
    )


async def handle_stats(request: web.Request) -> web.Response:
    """Live sessions, peer connections, tasks and data counters (admin credential)."""
    token = tokens.bearer(request.headers.get("Authorization")) or ""
    if not hmac.compare_digest(token.encode(), request.app["admin_token"].encode()):
        return web.Response(status=401, text="rtc stats: send the admin credential as Bearer\n")
    manager: RoomManager = request.app["rooms"]
    return web.json_response(manager.stats())


def _admit(request: web.Request, *, need_join_request: bool) -> Admission:
    """Every check a join must pass, without changing anything (also run by validate)."""
    if request.app["draining"]:
        raise Refusal(503, "server is shutting down")
    manager: RoomManager = request.app["rooms"]
    try:
        caller = authenticate(manager.store, request_token(request))
    except ApiError as exc:
        raise Refusal(401, exc.msg) from None
    room = _room_of(caller.claims, request.query.get("room", ""))
    join = _join_request(request, need_join_request)
    attempt = JoinAttempt(
        key=caller.key,
        claims=caller.claims,
        room_name=room,
        stored=manager.store.get_room(caller.project_id, room),
        client_protocol=join.client_info.client_protocol if join else 0,
        auto_subscribe=_auto_subscribe(join),
    )
    try:
        manager.model.check(attempt)
    except JoinRefused as exc:
        raise Refusal(exc.status, exc.reason) from None
    return Admission(attempt, join)


def _room_of(claims: tokens.TokenClaims, asked: str) -> str:
    video = claims.video
    if not claims.identity:
        raise Refusal(401, "token has no identity (sub): participants need one")
    if not video.room_join:
        raise Refusal(403, "token lacks the roomJoin grant")
    if not video.room:
        raise Refusal(403, "token names no room (video.room)")
    if asked and asked != video.room:
        raise Refusal(403, f"token is for room {video.room!r}, not {asked!r}")
    return video.room


def _join_request(request: web.Request, needed: bool) -> pb.JoinRequest | None:
    raw = request.query.get("join_request")
    if raw is None:
        if needed:
            raise Refusal(400, "missing join_request: callboard speaks the /rtc/v1 protocol")
        return None
    try:
        return signal.decode_join_request(raw)
    except signal.BadJoinRequest as exc:
        raise Refusal(400, str(exc)) from None


def _refuse(request: web.Request, refusal: Refusal) -> web.Response:
    log.warning("%s refused from %s: %s", request.path, request.remote, refusal.reason)
    return web.Response(status=refusal.status, text=refusal.reason + "\n")


def _auto_subscribe(join: pb.JoinRequest | None) -> bool:
    """LiveKit subscribes automatically unless the client's connection settings say not to."""
    if join is None or not join.HasField("connection_settings"):
        return True
    return bool(join.connection_settings.auto_subscribe)
