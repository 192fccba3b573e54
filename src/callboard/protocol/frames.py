"""Worker WebSocket frames (livekit-wire §1): binary protobuf or text protojson, 2 MiB at most.

The server replies in the format the worker last used, so a worker speaking protojson gets protojson.
"""

from __future__ import annotations

import enum

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from livekit.protocol import agent as pb

from callboard.protocol.errors import (
    WS_MESSAGE_TOO_BIG,
    WS_UNSUPPORTED_DATA,
    ProtocolViolation,
)

MAX_FRAME_BYTES = 2 * 1024 * 1024


class Format(enum.Enum):
    BINARY = "binary"
    TEXT = "text"


def decode_worker_message(data: bytes | str) -> tuple[pb.WorkerMessage, Format]:
    """Parse one frame; a malformed one is the peer's protocol violation."""
    size = len(data) if isinstance(data, bytes) else len(data.encode())
    if size > MAX_FRAME_BYTES:
        raise ProtocolViolation(
            f"frame of {size} bytes exceeds the {MAX_FRAME_BYTES} byte limit", WS_MESSAGE_TOO_BIG
        )
    msg = pb.WorkerMessage()
    if isinstance(data, bytes):
        try:
            msg.ParseFromString(data)
        except DecodeError as exc:
            raise ProtocolViolation(
                f"binary frame is not a protobuf WorkerMessage: {exc}", WS_UNSUPPORTED_DATA
            ) from None
        return msg, Format.BINARY
    try:
        json_format.Parse(data, msg, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise ProtocolViolation(
            f"text frame is not protojson WorkerMessage: {exc}", WS_UNSUPPORTED_DATA
        ) from None
    return msg, Format.TEXT


def encode_server_message(msg: pb.ServerMessage, fmt: Format) -> bytes | str:
    if fmt is Format.TEXT:
        return json_format.MessageToJson(msg, indent=None)
    return msg.SerializeToString()
