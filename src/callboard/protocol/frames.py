"""Worker WebSocket frames (livekit-wire §1): binary protobuf or text protojson, 2 MiB at most.

The server replies in the format the worker last used: a worker speaking protojson gets protojson.
"""

from __future__ import annotations

import enum
import json

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from livekit.protocol import agent as pb

from callboard.protocol.errors import (
    WS_MESSAGE_TOO_BIG,
    WS_UNSUPPORTED_DATA,
    ProtocolViolation,
)

MAX_FRAME_BYTES = 2 * 1024 * 1024

_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


class Format(enum.Enum):
    BINARY = "binary"
    TEXT = "text"


def decode_worker_message(data: bytes | str) -> tuple[pb.WorkerMessage, Format]:
    """Parse one frame; a malformed one is the peer's protocol violation."""
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > MAX_FRAME_BYTES:
        raise ProtocolViolation(
            f"frame of {size} bytes exceeds the {MAX_FRAME_BYTES} byte limit", WS_MESSAGE_TOO_BIG
        )
    if isinstance(data, bytes):
        return _decode_binary(data), Format.BINARY
    return _decode_text(data), Format.TEXT


def _decode_binary(data: bytes) -> pb.WorkerMessage:
    msg = pb.WorkerMessage()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise ProtocolViolation(
            f"binary frame is not a protobuf WorkerMessage: {exc}", WS_UNSUPPORTED_DATA
        ) from None
    return msg


def _decode_text(data: str) -> pb.WorkerMessage:
    """Protojson; unknown fields are ignored (a newer SDK may send more), but the frame must be a
    JSON object: `json_format` alone would accept a bare JSON string as an empty message."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolViolation(f"text frame is not JSON: {exc}", WS_UNSUPPORTED_DATA) from None
    if not isinstance(obj, dict):
        kind = _JSON_KINDS.get(type(obj), "value")
        raise ProtocolViolation(
            f"text frame is a JSON {kind}, not a protojson WorkerMessage object",
            WS_UNSUPPORTED_DATA,
        )
    msg = pb.WorkerMessage()
    try:
        json_format.ParseDict(obj, msg, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError) as exc:
        raise ProtocolViolation(
            f"text frame is not a protojson WorkerMessage: {exc}", WS_UNSUPPORTED_DATA
        ) from None
    return msg


def encode_server_message(msg: pb.ServerMessage, fmt: Format) -> bytes | str:
    """A frame in `fmt`: protobuf bytes, or protojson text on one line."""
    if fmt is Format.TEXT:
        return json_format.MessageToJson(msg, indent=None)
    return msg.SerializeToString()
