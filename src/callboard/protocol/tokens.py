"""Access tokens exactly as livekit-api's `AccessToken` makes them (livekit-wire §3).

HS256 only, `iss` is the API key, `exp` is required, 60 s of leeway, camelCase grants. Verification
looks the key up first (so an unknown key and a bad signature give different, precise errors), then
checks the signature with that key's secret.

Parsing, signing and verifying are done here with the standard library (one parse per token), with
the checks and messages PyJWT 2.x gave; PyJWT itself only vets each secret once (`_hmac_key`) and
remains the cross-check in the tests.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import math
import re
import time
import warnings
from calendar import timegm
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.warnings import InsecureKeyLengthWarning

from callboard.protocol.errors import Unauthenticated

LEEWAY_S = 60
JOB_TOKEN_TTL_S = 3600
ALGORITHM = "HS256"

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class VideoGrant:
    """The `video` claim; names are the snake_case of LiveKit's camelCase keys."""

    room_join: bool = False
    room: str = ""
    room_create: bool = False
    room_list: bool = False
    room_admin: bool = False
    room_record: bool = False
    agent: bool = False
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    can_update_own_metadata: bool = False
    hidden: bool = False

    @classmethod
    def from_claim(cls, claim: Mapping[str, Any]) -> VideoGrant:
        """Parse the claim; a flag that is not a JSON boolean is refused (livekit-server does too),
        so `"roomAdmin": "false"` never reads as granted."""

        def flag(name: str, default: bool) -> bool:
            value = claim.get(name)
            if value is None:
                return default
            if not isinstance(value, bool):
                raise Unauthenticated(
                    f"malformed token: grant video.{name} must be true or false, got {value!r}"
                )
            return value

        room = claim.get("room")
        if room is not None and not isinstance(room, str):
            raise Unauthenticated(
                f"malformed token: grant video.room must be a string, got {room!r}"
            )
        return cls(
            room_join=flag("roomJoin", False),
            room=room or "",
            room_create=flag("roomCreate", False),
            room_list=flag("roomList", False),
            room_admin=flag("roomAdmin", False),
            room_record=flag("roomRecord", False),
            agent=flag("agent", False),
            can_publish=flag("canPublish", True),
            can_subscribe=flag("canSubscribe", True),
            can_publish_data=flag("canPublishData", True),
            can_update_own_metadata=flag("canUpdateOwnMetadata", False),
            hidden=flag("hidden", False),
        )


@dataclass(frozen=True)
class TokenClaims:
    api_key: str
    identity: str
    expires_at_s: int
    video: VideoGrant = field(default_factory=VideoGrant)
    name: str = ""
    kind: str = ""
    metadata: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    sip: Mapping[str, Any] = field(default_factory=dict)
    room_config: Mapping[str, Any] | None = None
    sha256: str = ""
    job: JobClaim | None = None


@dataclass(frozen=True)
class JobClaim:
    """callboard's own claim in job tokens: lets the room refuse a superseded attempt."""

    dispatch_id: str
    job_id: str
    attempt: int


def verify(
    token: str,
    secret_for_key: Callable[[str], str | None],
    *,
    now_s: float | None = None,
) -> TokenClaims:
    """Check algorithm, issuer, signature and times; raise `Unauthenticated` saying which failed.

    `now_s` is the clock (default: the wall clock); exp, nbf and iat are all judged against it with
    `LEEWAY_S` of slack, as livekit-server does.

    The token is parsed once, with the standard library, and checked in the order (and with the
    messages) PyJWT 2.x gave when it did this work: shape, algorithm, issuer, key, signature over
    the exact bytes sent, then the claims.

    A token verified before (the same string: clients reuse one token for many calls) is not
    parsed again: its key is still looked up — a revoked key refuses it at once, a key whose
    secret changed verifies it from scratch — and its times are judged against `now_s` again.
    The claims returned are then shared between calls: never mutate them.
    """
    seen = _verified.get(token)
    if seen is not None:
        return _verify_again(token, seen, secret_for_key, now_s)
    signing_input, header, payload_bytes, signature = _parse(token)
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise Unauthenticated(f"token algorithm is {alg!r}: only {ALGORITHM} is accepted")
    payload = _unverified_payload(header, payload_bytes)
    api_key = payload.get("iss")
    if not isinstance(api_key, str) or not api_key:
        raise Unauthenticated("token has no issuer (iss): it must name the API key that signed it")
    secret = secret_for_key(api_key)
    if secret is None:
        raise Unauthenticated(f"unknown API key {api_key!r} (revoked, or never issued)")
    try:
        key = _hmac_key(secret)
    except jwt.InvalidKeyError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    expected = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise Unauthenticated(f"invalid token signature for API key {api_key}")
    _check_registered_claims(payload)
    _check_times(payload, api_key, time.time() if now_s is None else now_s)
    claims = _claims_from_payload(api_key, payload)
    _remember(token, _Verified(secret, payload, claims))
    return claims


@dataclass(frozen=True)
class _Verified:
    """A token that passed `verify`: what is left to check on its next use."""

    secret: str  # the secret its signature was checked with
    payload: Mapping[str, Any]  # for exp, nbf and iat
    claims: TokenClaims


VERIFIED_TOKENS_MAX = 1024
_verified: dict[str, _Verified] = {}  # token -> its verification, oldest first


def _remember(token: str, verified: _Verified) -> None:
    _verified[token] = verified
    if len(_verified) > VERIFIED_TOKENS_MAX:
        del _verified[next(iter(_verified))]


def _verify_again(
    token: str,
    seen: _Verified,
    secret_for_key: Callable[[str], str | None],
    now_s: float | None,
) -> TokenClaims:
    """`verify` of a token that passed before: the checks whose outcome can have changed since
    (the key, the times), in `verify`'s order; the rest (shape, signature, claims) cannot."""
    api_key = seen.claims.api_key
    secret = secret_for_key(api_key)
    if secret is None:
        raise Unauthenticated(f"unknown API key {api_key!r} (revoked, or never issued)")
    if not hmac.compare_digest(secret.encode(), seen.secret.encode()):
        del _verified[token]  # the key's secret changed: judge the token afresh
        return verify(token, secret_for_key, now_s=now_s)
    try:
        _check_times(seen.payload, api_key, time.time() if now_s is None else now_s)
    except Unauthenticated:
        _verified.pop(token, None)
        raise
    return seen.claims


def _parse(token: str) -> tuple[str, dict[str, Any], bytes, bytes]:
    """Split and decode the three segments: (signing input as sent, header, payload bytes,
    signature). Anything that is not a compact JWS with a JSON-object header is malformed."""
    signing_input, _, crypto_segment = token.rpartition(".")
    header_segment, dot, payload_segment = signing_input.partition(".")
    if not dot:
        raise Unauthenticated("malformed token: Not enough segments")
    header_data = _segment(header_segment, "header")
    try:
        header = json.loads(header_data)
    except (ValueError, RecursionError) as exc:
        raise Unauthenticated(f"malformed token: Invalid header string: {exc}") from None
    if not isinstance(header, dict):
        raise Unauthenticated("malformed token: Invalid header string: must be a json object")
    if header.get("b64", True) is False:  # RFC 7797 unencoded payload: never accepted, see below
        if payload_segment:
            raise Unauthenticated(
                "malformed token: Payload segment must be empty when 'b64' is false."
            )
        payload = b""
    else:
        payload = _segment(payload_segment, "payload")
    signature = _segment(crypto_segment, "crypto")
    _check_header(header)
    return signing_input, header, payload, signature


def _segment(segment: str, name: str) -> bytes:
    """Base64url without padding; up to two trailing '=' tolerated (as some issuers send), but
    nothing outside the alphabet and no non-canonical encodings (stray low bits in the last
    character), so one token has exactly one spelling."""
    stripped = segment.rstrip("=")
    padding = len(segment) - len(stripped)
    if (
        padding > 2
        or (padding and len(segment) % 4)
        or len(stripped) % 4 == 1
        or not _BASE64URL.fullmatch(stripped)
    ):
        raise Unauthenticated(f"malformed token: Invalid {name} padding")
    decoded = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != stripped.encode():
        raise Unauthenticated(f"malformed token: Invalid {name} padding")
    return decoded


def _check_header(header: Mapping[str, Any]) -> None:
    """As PyJWT's `_validate_headers`: `kid` must be a string; every `crit` extension must be one
    we understand (RFC 7515 §4.1.11), and the only one is `b64`."""
    if "kid" in header and not isinstance(header["kid"], str):
        raise Unauthenticated("malformed token: Key ID header parameter must be a string")
    if "crit" not in header:
        return
    crit = header["crit"]
    if not isinstance(crit, list) or not crit:
        raise Unauthenticated("malformed token: Invalid 'crit' header: must be a non-empty list")
    for ext in crit:
        if not isinstance(ext, str):
            raise Unauthenticated("malformed token: Invalid 'crit' header: values must be strings")
        if ext != "b64":
            raise Unauthenticated(f"malformed token: Unsupported critical extension: {ext}")
        if ext not in header:
            raise Unauthenticated(
                f"malformed token: Critical extension '{ext}' is missing from headers"
            )


def _unverified_payload(header: Mapping[str, Any], payload_bytes: bytes) -> dict[str, Any]:
    if header.get("b64", True) is False:
        crit = header.get("crit") or []
        if not isinstance(crit, list) or "b64" not in crit:
            raise Unauthenticated(
                "malformed token: The 'b64' header parameter requires 'b64' to be listed in "
                "'crit'."
            )
        raise Unauthenticated(  # PyJWT's words: we never pass a detached payload
            'malformed token: It is required that you pass in a value for the "detached_payload" '
            "argument to decode a message having the b64 header set to false."
        )
    try:
        payload = json.loads(payload_bytes)
    except (ValueError, RecursionError) as exc:
        raise Unauthenticated(f"malformed token: Invalid payload string: {exc}") from None
    if not isinstance(payload, dict):
        raise Unauthenticated("malformed token: Invalid payload string: must be a json object")
    return payload


@functools.lru_cache(maxsize=256)
def _hmac_key(secret: str) -> bytes:
    """The secret as HMAC key bytes, vetted once per secret (not per token) by PyJWT's own
    `prepare_key`: an empty secret, or one that is really a PEM/SSH/DER key or a JWK, is refused
    with PyJWT's message, as it was when PyJWT checked every token."""
    hs256 = HMACAlgorithm(HMACAlgorithm.SHA256)
    key = hs256.prepare_key(secret)  # raises jwt.InvalidKeyError
    too_short = hs256.check_key_length(key)
    if too_short:  # LiveKit's dev secret "secret" is 6 bytes; PyJWT warned, so do we
        warnings.warn(too_short, InsecureKeyLengthWarning, stacklevel=3)
    return key


def _check_registered_claims(payload: Mapping[str, Any]) -> None:
    """After the signature, as PyJWT did: exp is required; sub and jti, if present, are strings."""
    if payload.get("exp") is None:
        raise Unauthenticated("token is missing the required claim 'exp'")
    if "sub" in payload and not isinstance(payload["sub"], str):
        raise Unauthenticated("invalid token: Subject must be a string")
    if "jti" in payload and not isinstance(payload["jti"], str):
        raise Unauthenticated("invalid token: JWT ID must be a string")


def _check_times(payload: Mapping[str, Any], api_key: str, now_s: float) -> None:
    exp = _seconds(payload, "exp")
    if exp is not None and exp <= now_s - LEEWAY_S:
        raise Unauthenticated(
            f"token expired {now_s - exp:.0f} s ago, beyond the {LEEWAY_S} s leeway "
            f"(API key {api_key})"
        )
    nbf = _seconds(payload, "nbf")
    if nbf is not None and nbf > now_s + LEEWAY_S:
        raise Unauthenticated(
            f"token not valid yet: nbf is {nbf - now_s:.0f} s in the future (API key {api_key})"
        )
    iat = _seconds(payload, "iat")
    if iat is not None and iat > now_s + LEEWAY_S:
        raise Unauthenticated(
            f"token issued in the future: iat is {iat - now_s:.0f} s ahead (API key {api_key})"
        )


def _seconds(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unauthenticated(f"malformed token: claim {name!r} must be a number, got {value!r}")
    return float(value)


def _claims_from_payload(api_key: str, payload: Mapping[str, Any]) -> TokenClaims:
    attributes = _object(payload, "attributes")
    if not all(isinstance(v, str) for v in attributes.values()):
        raise Unauthenticated("malformed token: claim 'attributes' must map strings to strings")
    room_config = payload.get("roomConfig")
    return TokenClaims(
        api_key=api_key,
        identity=_string(payload, "sub"),
        expires_at_s=int(payload["exp"]),
        video=VideoGrant.from_claim(_object(payload, "video")),
        name=_string(payload, "name"),
        kind=_string(payload, "kind"),
        metadata=_string(payload, "metadata"),
        attributes=dict(attributes),
        sip=_object(payload, "sip"),
        room_config=_object(payload, "roomConfig") if room_config is not None else None,
        sha256=_string(payload, "sha256"),
        job=_job_claim(payload.get("callboard")),
    )


def _object(payload: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = payload.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Unauthenticated(f"malformed token: claim {name!r} must be an object")
    return value


def _string(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Unauthenticated(f"malformed token: claim {name!r} must be a string, got {value!r}")
    return value


def _job_claim(raw: object) -> JobClaim | None:
    if not isinstance(raw, dict):
        return None
    dispatch_id, job_id, attempt = raw.get("dispatch"), raw.get("job"), raw.get("attempt")
    if not (isinstance(dispatch_id, str) and isinstance(job_id, str)):
        return None
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        return None
    return JobClaim(dispatch_id, job_id, attempt)


@dataclass(frozen=True)
class JobTokenRequest:
    api_key: str
    api_secret: str
    room: str
    identity: str
    name: str
    metadata: str
    attributes: Mapping[str, str]
    job: JobClaim
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    can_update_own_metadata: bool = True
    hidden: bool = False


def mint_job_token(req: JobTokenRequest, *, now_s: float | None = None) -> str:
    """The room-scoped 1 h token a JobAssignment carries, shaped like livekit-server's.

    Claims, in order: iss, sub (LiveKit's default agent identity if none), nbf, exp, name,
    kind, video (the grants), callboard (dispatch, job, attempt), then metadata and attributes
    when not empty. The JSON is written here, as `json` would write it compactly, rather than
    built as a dict and encoded: this runs between a worker's yes and its assignment."""
    now = int(time.time() if now_s is None else now_s)
    job = req.job
    parts = [
        '{"iss":', _ascii(req.api_key),
        ',"sub":', _ascii(req.identity or f"agent-{job.job_id}"),
        ',"nbf":', str(now), ',"exp":', str(now + JOB_TOKEN_TTL_S),
        ',"name":', _ascii(req.name),
        ',"kind":"agent","video":{"roomJoin":true,"room":', _ascii(req.room),
        ',"agent":true,"canPublish":', _bool(req.can_publish),
        ',"canSubscribe":', _bool(req.can_subscribe),
        ',"canPublishData":', _bool(req.can_publish_data),
        ',"canUpdateOwnMetadata":', _bool(req.can_update_own_metadata),
        ',"hidden":', _bool(req.hidden),
        '},"callboard":{"dispatch":', _ascii(job.dispatch_id), ',"job":', _ascii(job.job_id),
        ',"attempt":', str(int(job.attempt)), "}",
    ]
    if req.metadata:
        parts += [',"metadata":', _ascii(req.metadata)]
    if req.attributes:
        parts += [',"attributes":', _COMPACT_JSON.encode(dict(req.attributes))]
    parts.append("}")
    return _sign_body("".join(parts).encode(), req.api_secret)


def _bool(value: bool) -> str:
    return "true" if value else "false"


_ascii: Callable[[str], str] = json.encoder.encode_basestring_ascii


def sign(payload: Mapping[str, Any], secret: str) -> str:
    """An HS256 JWT of `payload`, byte for byte what `jwt.encode(payload, secret, "HS256")` makes
    (datetime exp/iat/nbf become seconds; a non-string iss is a TypeError; an empty or
    key-shaped secret is PyJWT's `InvalidKeyError`)."""
    claims = dict(payload)
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if isinstance(value, datetime):
            claims[name] = timegm(value.utctimetuple())
    if "iss" in claims and not isinstance(claims["iss"], str):
        raise TypeError("Issuer (iss) must be a string.")
    return _encode(claims, secret)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


_HEADER_SEGMENT = _b64(b'{"alg":"HS256","typ":"JWT"}')  # PyJWT's header: sorted keys, compact


_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))  # json.dumps(…, separators=…), built once


def _encode(claims: dict[str, Any], secret: str) -> str:
    return _sign_body(_COMPACT_JSON.encode(claims).encode(), secret)


def _sign_body(body: bytes, secret: str) -> str:
    signing_input = _HEADER_SEGMENT + b"." + _b64(body)
    signature = hmac.digest(_hmac_key(secret), signing_input, "sha256")
    return (signing_input + b"." + _b64(signature)).decode()


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <jwt>` header (a bare token is accepted too).

    None when there is no token: an empty header, `Bearer` with nothing after it, another scheme
    (`Basic …`), or more than one word after `Bearer`.
    """
    parts = (header or "").split()
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1]
    if len(parts) == 1 and parts[0].lower() != "bearer":
        return parts[0]
    return None
