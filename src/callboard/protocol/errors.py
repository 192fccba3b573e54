"""One error hierarchy, each kind carrying its wire hint.

Two families, as in h11: the peer broke the protocol (a worker sent something it must not: the
connection is closed with a WebSocket close code), or a caller misused an API (the request is
answered with a Twirp code and HTTP status). Handlers map them in one place each; nothing raises
bare `Exception`.
"""

from __future__ import annotations

from typing import Final

# Twirp error code -> HTTP status (https://twitchtv.github.io/twirp/docs/spec_v7.html).
TWIRP_STATUS: Final[dict[str, int]] = {
    "canceled": 408,
    "unknown": 500,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
}

# WebSocket close codes used on /agent.
WS_POLICY_VIOLATION: Final = 1008
WS_MESSAGE_TOO_BIG: Final = 1009
WS_PROTOCOL_ERROR: Final = 1002
WS_UNSUPPORTED_DATA: Final = 1003
WS_GOING_AWAY: Final = 1001
WS_NORMAL: Final = 1000


class CallboardError(Exception):
    """Base of every error callboard raises on purpose."""


class ApiError(CallboardError):
    """A caller misused an API: answered with a Twirp code (and its HTTP status), never retried."""

    def __init__(self, code: str, msg: str, meta: dict[str, str] | None = None) -> None:
        if code not in TWIRP_STATUS:
            raise ValueError(f"unknown twirp code {code!r}")
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.meta = meta or {}

    @property
    def http_status(self) -> int:
        return TWIRP_STATUS[self.code]

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "msg": self.msg}
        if self.meta:
            body["meta"] = dict(self.meta)
        return body


class Unauthenticated(ApiError):
    def __init__(self, msg: str) -> None:
        super().__init__("unauthenticated", msg)


class PermissionDenied(ApiError):
    def __init__(self, msg: str) -> None:
        super().__init__("permission_denied", msg)


class NotFound(ApiError):
    def __init__(self, msg: str) -> None:
        super().__init__("not_found", msg)


class InvalidArgument(ApiError):
    def __init__(self, msg: str, argument: str | None = None) -> None:
        super().__init__("invalid_argument", msg, {"argument": argument} if argument else None)


class ProtocolViolation(CallboardError):
    """A worker broke the /agent protocol: its connection is closed with `close_code`, `reason`."""

    def __init__(self, reason: str, close_code: int = WS_POLICY_VIOLATION) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code
