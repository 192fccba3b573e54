"""Access tokens exactly as livekit-api's `AccessToken` makes them (livekit-wire §3).

HS256 only, `iss` is the API key, `exp` is required, 60 s of leeway, camelCase grants. Verification
looks the key up first (so an unknown key and a bad signature give different, precise errors), then
checks the signature with that key's secret.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from callboard.protocol.errors import Unauthenticated

LEEWAY_S = 60
JOB_TOKEN_TTL_S = 3600
ALGORITHM = "HS256"


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
    """
    _check_algorithm(token)
    api_key = _issuer(token)
    secret = secret_for_key(api_key)
    if secret is None:
        raise Unauthenticated(f"unknown API key {api_key!r} (revoked, or never issued)")
    payload = _verified_payload(token, secret, api_key)
    _check_times(payload, api_key, time.time() if now_s is None else now_s)
    return _claims_from_payload(api_key, payload)


def _check_algorithm(token: str) -> None:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"malformed token: {exc}") from None
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise Unauthenticated(f"token algorithm is {alg!r}: only {ALGORITHM} is accepted")


def _issuer(token: str) -> str:
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"malformed token: {exc}") from None
    api_key = unverified.get("iss")
    if not isinstance(api_key, str) or not api_key:
        raise Unauthenticated("token has no issuer (iss): it must name the API key that signed it")
    return api_key


def _verified_payload(token: str, secret: str, api_key: str) -> dict[str, Any]:
    """Signature, issuer and the presence of exp; times are checked by `_check_times`."""
    options: Any = {
        "require": ["exp"],
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
        "verify_aud": False,
    }
    try:
        payload: dict[str, Any] = jwt.decode(
            token, secret, algorithms=[ALGORITHM], issuer=api_key, options=options
        )
    except jwt.InvalidSignatureError:
        raise Unauthenticated(f"invalid token signature for API key {api_key}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthenticated(f"token is missing the required claim {exc.claim!r}") from None
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    return payload


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
    if isinstance(value, bool) or not isinstance(value, int | float):
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
    """The room-scoped 1 h token a JobAssignment carries, shaped like livekit-server's."""
    now = int(time.time() if now_s is None else now_s)
    payload: dict[str, Any] = {
        "iss": req.api_key,
        "sub": req.identity or f"agent-{req.job.job_id}",  # LiveKit's default agent identity
        "nbf": now,
        "exp": now + JOB_TOKEN_TTL_S,
        "name": req.name,
        "kind": "agent",
        "video": {
            "roomJoin": True,
            "room": req.room,
            "agent": True,
            "canPublish": req.can_publish,
            "canSubscribe": req.can_subscribe,
            "canPublishData": req.can_publish_data,
            "canUpdateOwnMetadata": req.can_update_own_metadata,
            "hidden": req.hidden,
        },
        "callboard": {
            "dispatch": req.job.dispatch_id,
            "job": req.job.job_id,
            "attempt": req.job.attempt,
        },
    }
    if req.metadata:
        payload["metadata"] = req.metadata
    if req.attributes:
        payload["attributes"] = dict(req.attributes)
    return jwt.encode(payload, req.api_secret, algorithm=ALGORITHM)


def sign(payload: Mapping[str, Any], secret: str) -> str:
    return jwt.encode(dict(payload), secret, algorithm=ALGORITHM)


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
