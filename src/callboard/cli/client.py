"""Talking to a callboard server from a command: Twirp through `livekit-api`, and the project API.

Every command runs one coroutine through `run`, which owns the event loop, the HTTP session, the
spinner and the translation of failures into one-line errors:

- the server said no (a Twirp error, or the project API's `{"code", "msg"}`) → exit 1, with the code
  and the server's text;
- the server could not be reached or did not answer → exit 1, one line, no traceback;
- the URL itself is malformed → exit 2.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import socket
import urllib.parse
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import aiohttp
from jwt.warnings import InsecureKeyLengthWarning
from livekit import api

from callboard.cli.common import EXIT_USAGE, http_url
from callboard.cli.credentials import Credentials
from callboard.cli.output import fail, spinner

T = TypeVar("T")

TIMEOUT_S = 15.0
PROJECT_API = "/callboard/v1"


class Refused(Exception):
    """The project API answered with an error."""

    def __init__(self, code: str, msg: str, status: int) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status


class NotCallboard(Exception):
    """Something answered, but not the way a callboard server does."""


class Api:
    """One server: `lk` (livekit-api's `LiveKitAPI`) for Twirp, `get` for the project API."""

    def __init__(self, creds: Credentials, session: aiohttp.ClientSession) -> None:
        self.creds = creds
        self.base = http_url(creds.url).rstrip("/")
        self.session = session
        self.lk = api.LiveKitAPI(self.base, creds.api_key, creds.api_secret, session=session,
                                 failover=False)

    def project_token(self) -> str:
        grants = api.VideoGrants(room_admin=True, room_list=True)
        token = api.AccessToken(self.creds.api_key, self.creds.api_secret).with_grants(grants)
        return token.with_ttl(datetime.timedelta(minutes=10)).to_jwt()

    async def get(self, path: str, **params: str | int | None) -> Any:
        """GET a project API path (segments already quoted with `segment`); the JSON answer."""
        query = {k: str(v) for k, v in params.items() if v is not None and v != ""}
        headers = {"Authorization": f"Bearer {self.project_token()}"}
        url = f"{self.base}{PROJECT_API}{path}"
        async with self.session.get(url, params=query, headers=headers) as resp:
            body = await resp.read()
            status = resp.status
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = None
        if status != 200:
            if isinstance(data, dict) and "code" in data:
                raise Refused(str(data["code"]), str(data.get("msg", "")), status)
            raise NotCallboard(f"{self.base} answered HTTP {status} on {PROJECT_API}: is it a "
                               f"callboard server?")
        if data is None:
            raise NotCallboard(f"{self.base} answered with something that is not JSON: is it a "
                               f"callboard server?")
        return data


def segment(value: str) -> str:
    """A value placed in a URL path, quoted so that it stays one segment."""
    return urllib.parse.quote(value, safe="")


def run(creds: Credentials, work: Callable[[Api], Awaitable[T]], waiting: str | None = None) -> T:
    """Run `work` against the server; any failure ends the command with a one-line error."""

    async def main() -> T:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            return await work(Api(creds, session))

    base = check_url(creds.url)
    with warnings.catch_warnings():
        # LiveKit's dev secret "secret" is 6 bytes; PyJWT would warn on every request.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        try:
            if waiting is None:
                return asyncio.run(main())
            with spinner(waiting):
                return asyncio.run(main())
        except api.TwirpError as exc:
            fail(refusal(base, exc.code, exc.message, exc.status))
        except Refused as exc:
            fail(refusal(base, exc.code, exc.msg, exc.status))
        except NotCallboard as exc:
            fail(str(exc))
        except aiohttp.InvalidURL:
            fail(f"bad server URL {creds.url!r}: use ws(s)://host:port or http(s)://host:port",
                 EXIT_USAGE)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            unreachable(base, exc)


def refusal(base: str, code: str, msg: str, status: int) -> str:
    """`server said not_found: room 'x' not found`; a non-Twirp answer says so instead."""
    if code == "unknown" and not msg:
        return (f"{base} answered HTTP {status} without a Twirp error: is it a callboard or "
                f"LiveKit server?")
    return f"server said {code}: {msg}" if msg else f"server said {code} (HTTP {status})"


def unreachable(base: str, exc: BaseException) -> NoReturn:
    fail(f"cannot reach callboard at {base}: {reason(exc)}")


def reason(exc: BaseException) -> str:
    """The useful part of a connection failure, in one line: `connection refused`, not a repr."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT_S:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _os_reason(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "what answered does not speak HTTP"
    if isinstance(exc, OSError):
        return _os_reason(exc)
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _os_reason(exc: OSError) -> str:
    """`connection refused`, from errno, rather than asyncio's "Connect call failed (...)"."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if exc.errno and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    return exc.strerror or str(exc) or type(exc).__name__


def check_url(url: str) -> str:
    """The server URL as http(s)://host[:port][/path]; a malformed one is a usage error."""
    base = http_url(url).rstrip("/")
    try:
        parts = urllib.parse.urlsplit(base)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        fail(f"bad server URL {url!r}: {exc}", EXIT_USAGE)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"bad server URL {url!r}: use ws(s)://host:port or http(s)://host:port", EXIT_USAGE)
    return base
