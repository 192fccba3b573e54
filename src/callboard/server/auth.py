"""Who is calling: every entry point turns a bearer token into an `Caller` or an `ApiError`.

The project and developer come from the key that signed the token (`iss`), never from a claim
inside it, so a token cannot claim someone else's project or developer.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

from aiohttp import web

from callboard.protocol import tokens
from callboard.protocol.errors import PermissionDenied, Unauthenticated
from callboard.store.base import ApiKey, Store

log = logging.getLogger("callboard.auth")


@dataclass(frozen=True)
class Caller:
    key: ApiKey
    claims: tokens.TokenClaims

    @property
    def project_id(self) -> str:
        return self.key.project_id

    @property
    def owner(self) -> str:
        """The developer whose dispatches this caller makes ("" = production)."""
        return self.key.developer


def request_token(request: web.Request) -> str | None:
    """Bearer header first; the `access_token` query for clients that cannot set headers."""
    return tokens.bearer(request.headers.get("Authorization")) or request.query.get("access_token")


def authenticate(store: Store, token: str | None) -> Caller:
    if not token:
        raise Unauthenticated("missing access token: send 'Authorization: Bearer <jwt>'")

    def secret_for(key: str) -> str | None:
        found = store.get_key(key)
        return found.secret if found else None

    claims = tokens.verify(token, secret_for)
    key = store.get_key(claims.api_key)
    if key is None:  # revoked between the two look-ups
        raise Unauthenticated(f"unknown API key {claims.api_key!r}")
    return Caller(key=key, claims=claims)


def require(caller: Caller, *grants: str, room: str | None = None) -> None:
    """Raise permission_denied unless the token holds one of `grants` (and, if given, that room)."""
    video = caller.claims.video
    if not any(getattr(video, grant) for grant in grants):
        wanted = " or ".join(_camel(g) for g in grants)
        raise PermissionDenied(f"token lacks the {wanted} grant")
    if room is not None and video.room and video.room != room:
        raise PermissionDenied(f"token is scoped to room {video.room!r}, not {room!r}")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def check_admin(request: web.Request, admin_token: str) -> None:
    token = tokens.bearer(request.headers.get("Authorization"))
    if not token:
        raise Unauthenticated("admin API: missing 'Authorization: Bearer <admin credential>'")
    if not hmac.compare_digest(token.encode(), admin_token.encode()):
        raise Unauthenticated("admin API: wrong admin credential")
