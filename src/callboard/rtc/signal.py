"""LiveKit's /rtc/v1 signalling codec: the join_request query parameter in, JoinResponse out.

The client puts `base64url(WrappedJoinRequest{compression, join_request})` in the URL, padded or
not; with GZIP compression the inner JoinRequest is gzipped. Anything that does not decode is a
`BadJoinRequest` (HTTP 400 before the WebSocket upgrade), never a half-joined participant.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from livekit.protocol import models
from livekit.protocol import rtc as signal

from callboard import __version__

# The LiveKit server version we speak for: clients gate features on it (the Rust SDK refuses RPC
# below 1.8.0, and parses it as semver, so it must be one).
COMPAT_VERSION = "1.9.0"
SERVER_PROTOCOL = 16
MAX_JOIN_REQUEST_BYTES = 256 * 1024  # decompressed; a full offer SDP is a few KiB


class BadJoinRequest(ValueError):
    """The join_request parameter cannot be decoded; the message says how."""


def decode_join_request(text: str) -> signal.JoinRequest:
    wrapped = _wrapped(_unbase64(text))
    inner = wrapped.join_request
    if wrapped.compression == signal.WrappedJoinRequest.Compression.GZIP:
        inner = _gunzip(inner)
    elif wrapped.compression != signal.WrappedJoinRequest.Compression.NONE:
        raise BadJoinRequest(f"join_request: unknown compression {wrapped.compression}")
    try:
        return signal.JoinRequest.FromString(inner)
    except DecodeError:
        raise BadJoinRequest("join_request: the JoinRequest is not valid protobuf") from None


def _unbase64(text: str) -> bytes:
    text = text.strip()
    if not text:
        raise BadJoinRequest("join_request is empty")
    try:
        text = text.replace(" ", "+")  # a "+" that a query string turned into a space
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise BadJoinRequest("join_request is not base64url") from None


def _wrapped(raw: bytes) -> signal.WrappedJoinRequest:
    try:
        wrapped = signal.WrappedJoinRequest.FromString(raw)
    except DecodeError:
        raise BadJoinRequest("join_request: not a valid WrappedJoinRequest") from None
    if not wrapped.join_request:
        raise BadJoinRequest("join_request: the WrappedJoinRequest carries no JoinRequest")
    return wrapped


def _gunzip(data: bytes) -> bytes:
    """Decompress with a cap, so a small zip bomb in a URL cannot eat the server's memory."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_JOIN_REQUEST_BYTES)
    except zlib.error as exc:
        raise BadJoinRequest(f"join_request: bad gzip data ({exc})") from None
    if inflater.unconsumed_tail:
        raise BadJoinRequest(f"join_request: over {MAX_JOIN_REQUEST_BYTES} bytes decompressed")
    if not inflater.eof:
        raise BadJoinRequest("join_request: gzip data is truncated")
    return out


@dataclass(frozen=True)
class SignalSettings:
    """What every JoinResponse carries besides the room and the participants."""

    ping_interval_s: int
    ping_timeout_s: int
    node_id: str
    ice_servers: tuple[signal.ICEServer, ...] = ()


def server_info(node_id: str) -> models.ServerInfo:
    return models.ServerInfo(
        edition=models.ServerInfo.Edition.Standard,
        version=COMPAT_VERSION,
        protocol=SERVER_PROTOCOL,
        node_id=node_id,
        debug_info=f"callboard {__version__}",
    )


def join_response(
    settings: SignalSettings,
    room: models.Room,
    participant: models.ParticipantInfo,
    others: list[models.ParticipantInfo],
) -> signal.SignalResponse:
    join = signal.JoinResponse(
        room=room,
        participant=participant,
        other_participants=others,
        server_version=COMPAT_VERSION,
        server_info=server_info(settings.node_id),
        ice_servers=list(settings.ice_servers),
        ping_interval=max(1, settings.ping_interval_s),  # 0 aborts the LiveKit SDK's process
        ping_timeout=max(2, settings.ping_timeout_s),
    )
    return signal.SignalResponse(join=join)


def leave(
    reason: models.DisconnectReason,
    action: signal.LeaveRequest.Action = signal.LeaveRequest.Action.DISCONNECT,
) -> signal.SignalResponse:
    request = signal.LeaveRequest(
        reason=reason,
        action=action,
        can_reconnect=action == signal.LeaveRequest.Action.RECONNECT,
    )
    return signal.SignalResponse(leave=request)


def answer(sdp: str, offer_id: int) -> signal.SignalResponse:
    description = signal.SessionDescription(type="answer", sdp=sdp, id=offer_id)
    return signal.SignalResponse(answer=description)


def trickle(candidate_json: str) -> signal.SignalResponse:
    request = signal.TrickleRequest(
        candidateInit=candidate_json, target=signal.SignalTarget.PUBLISHER
    )
    return signal.SignalResponse(trickle=request)


def pong(last_ping_ms: int, now_ms: int) -> signal.SignalResponse:
    return signal.SignalResponse(
        pong_resp=signal.Pong(last_ping_timestamp=last_ping_ms, timestamp=now_ms)
    )
