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
        def flag(name: str, default: bool) -> bool:
            value = claim.get(name, default)
            return default if value is None else bool(value)

        return cls(
            room_join=flag("roomJoin", False),
            room=str(claim.get("room") or ""),
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
    """Check signature, expiry and issuer; raise `Unauthenticated` saying which check failed."""
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"malformed token: {exc}") from None
    api_key = unverified.get("iss")
    if not isinstance(api_key, str) or not api_key:
        raise Unauthenticated("token has no issuer (iss): it must name the API key that signed it")
    secret = secret_for_key(api_key)
    if secret is None:
        raise Unauthenticated(f"unknown API key {api_key!r} (revoked, or never issued)")
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            leeway=LEEWAY_S,
            issuer=api_key,
            options={"require": ["exp"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated(f"token expired (API key {api_key})") from None
    except jwt.ImmatureSignatureError:
        raise Unauthenticated(f"token not valid yet (nbf in the future, API key {api_key})") from None
    except jwt.InvalidSignatureError:
        raise Unauthenticated(f"invalid token signature for API key {api_key}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthenticated(f"token is missing the required claim {exc.claim!r}") from None
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    if now_s is not None and payload["exp"] + LEEWAY_S < now_s:
        raise Unauthenticated(f"token expired (API key {api_key})")
    return _claims_from_payload(api_key, payload)


def _claims_from_payload(api_key: str, payload: Mapping[str, Any]) -> TokenClaims:
    video = payload.get("video") or {}
    attributes = payload.get("attributes") or {}
    room_config = payload.get("roomConfig")
    job = payload.get("callboard")
    return TokenClaims(
        api_key=api_key,
        identity=str(payload.get("sub") or ""),
        expires_at_s=int(payload["exp"]),
        video=VideoGrant.from_claim(video if isinstance(video, dict) else {}),
        name=str(payload.get("name") or ""),
        kind=str(payload.get("kind") or ""),
        metadata=str(payload.get("metadata") or ""),
        attributes={str(k): str(v) for k, v in attributes.items()}
        if isinstance(attributes, dict)
        else {},
        sip=payload.get("sip") or {},
        room_config=room_config if isinstance(room_config, dict) else None,
        sha256=str(payload.get("sha256") or ""),
        job=_job_claim(job),
    )


def _job_claim(raw: object) -> JobClaim | None:
    if not isinstance(raw, dict):
        return None
    try:
        return JobClaim(str(raw["dispatch"]), str(raw["job"]), int(raw["attempt"]))
    except (KeyError, TypeError, ValueError):
        return None


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
        "sub": req.identity,
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
        "callboard": {"dispatch": req.job.dispatch_id, "job": req.job.job_id, "attempt": req.job.attempt},
    }
    if req.metadata:
        payload["metadata"] = req.metadata
    if req.attributes:
        payload["attributes"] = dict(req.attributes)
    return jwt.encode(payload, req.api_secret, algorithm=ALGORITHM)


def sign(payload: Mapping[str, Any], secret: str) -> str:
    return jwt.encode(dict(payload), secret, algorithm=ALGORITHM)


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <jwt>` header (a bare token is accepted too)."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if rest and scheme.lower() == "bearer":
        return rest.strip() or None
    return header.strip() if not rest else None
