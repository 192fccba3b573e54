"""Errors carry their wire hint: Twirp code + HTTP status for API misuse, close code for a peer."""

from __future__ import annotations

import json

import pytest
from livekit.api.twirp_client import ServerErrorCode, TwirpClient

from callboard.protocol import errors
from callboard.protocol.errors import (
    TWIRP_STATUS,
    ApiError,
    CallboardError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProtocolViolation,
    Unauthenticated,
)

# The Twirp v7 spec's table (https://twitchtv.github.io/twirp/docs/spec_v7.html#error-codes).
SPEC = {
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


@pytest.mark.parametrize(("code", "status"), sorted(SPEC.items()))
def test_every_twirp_code_maps_to_its_http_status(code: str, status: int) -> None:
    assert TWIRP_STATUS[code] == status
    assert ApiError(code, "m").http_status == status


def test_the_table_is_exactly_the_spec() -> None:
    assert TWIRP_STATUS == SPEC


def test_every_code_livekit_api_knows_is_known_here() -> None:
    livekit_codes = {v for k, v in vars(ServerErrorCode).items() if k.isupper()}
    assert livekit_codes == set(TWIRP_STATUS)


@pytest.mark.parametrize("code", ["", "NOT_FOUND", "notfound", "teapot", "ok"])
def test_an_unknown_code_is_rejected(code: str) -> None:
    with pytest.raises(ValueError, match="unknown twirp code"):
        ApiError(code, "m")


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (Unauthenticated("who?"), "unauthenticated", 401),
        (PermissionDenied("no"), "permission_denied", 403),
        (NotFound("gone"), "not_found", 404),
        (InvalidArgument("bad"), "invalid_argument", 400),
    ],
)
def test_the_named_errors(error: ApiError, code: str, status: int) -> None:
    assert (error.code, error.http_status) == (code, status)
    assert isinstance(error, CallboardError) and str(error) == error.msg


def test_to_json_shape() -> None:
    assert NotFound("dispatch AD_x not found").to_json() == {
        "code": "not_found", "msg": "dispatch AD_x not found"}
    body = InvalidArgument("metadata over 512 KiB", "metadata").to_json()
    assert body == {"code": "invalid_argument", "msg": "metadata over 512 KiB",
                    "meta": {"argument": "metadata"}}
    assert json.loads(json.dumps(body)) == body


def test_meta_is_copied_not_shared() -> None:
    meta = {"a": "1"}
    err = ApiError("internal", "m", meta)
    body = err.to_json()
    assert body["meta"] == meta and body["meta"] is not meta


def test_livekit_api_reads_our_error_body() -> None:
    err = InvalidArgument("agent name too long", "agent_name")
    parsed = TwirpClient._server_error(json.loads(json.dumps(err.to_json())), err.http_status)
    assert (parsed.code, parsed.message, parsed.status) == (
        "invalid_argument", "agent name too long", 400)
    assert parsed.metadata == {"argument": "agent_name"}


def test_a_protocol_violation_carries_a_close_code() -> None:
    default = ProtocolViolation("second register on one connection")
    assert default.close_code == errors.WS_POLICY_VIOLATION == 1008
    assert default.reason == str(default) == "second register on one connection"
    too_big = ProtocolViolation("frame too big", errors.WS_MESSAGE_TOO_BIG)
    assert too_big.close_code == 1009
    assert isinstance(too_big, CallboardError) and not isinstance(too_big, ApiError)


def test_close_codes_are_rfc_6455s() -> None:
    assert (errors.WS_NORMAL, errors.WS_GOING_AWAY, errors.WS_PROTOCOL_ERROR,
            errors.WS_UNSUPPORTED_DATA, errors.WS_POLICY_VIOLATION,
            errors.WS_MESSAGE_TOO_BIG) == (1000, 1001, 1002, 1003, 1008, 1009)
