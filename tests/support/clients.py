"""Helpers around the real livekit-api client and the light worker, for integration tests."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import aiohttp
from livekit import api

from callboard.client.worker import LightWorker, WorkerProtocol
from tests.support.server import DEV_ADMIN, DEV_KEY, DEV_SECRET, ServerProcess


def lk_api(server: ServerProcess, key: str = DEV_KEY, secret: str = DEV_SECRET) -> api.LiveKitAPI:
    return api.LiveKitAPI(url=server.http_url, api_key=key, api_secret=secret)


def project_token(key: str = DEV_KEY, secret: str = DEV_SECRET, **grants: Any) -> str:
    video = api.VideoGrants(room_admin=True, room_list=True, room_create=True, **grants)
    return api.AccessToken(key, secret).with_grants(video).to_jwt()


def admin(
    server: ServerProcess,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str = DEV_ADMIN,
) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{server.http_url}/callboard/v1/admin{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def new_project(server: ServerProcess, name: str, developer: str = "") -> tuple[str, str]:
    """Create project `name` (if needed) and a key in it; returns (key, secret)."""
    admin(server, "POST", "/projects", {"name": name})
    status, body = admin(server, "POST", f"/projects/{name}/keys", {"developer": developer})
    assert status == 201, body
    return body["key"], body["secret"]


async def project_get(
    session: aiohttp.ClientSession,
    server: ServerProcess,
    path: str,
    key: str = DEV_KEY,
    secret: str = DEV_SECRET,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {project_token(key, secret)}"}
    async with session.get(f"{server.http_url}/callboard/v1{path}", headers=headers) as resp:
        return resp.status, await resp.json()


async def light_worker(
    session: aiohttp.ClientSession,
    server: ServerProcess,
    agent_name: str = "",
    key: str = DEV_KEY,
    secret: str = DEV_SECRET,
    load: float = 0.0,
    proto: WorkerProtocol | None = None,
) -> LightWorker:
    worker = LightWorker(
        server.ws_url, key, secret, proto or WorkerProtocol(agent_name=agent_name), session
    )
    await worker.connect(load)
    return worker


async def wait_for(predicate: Any, timeout_s: float = 10.0, interval_s: float = 0.05) -> None:
    """Poll a condition (a real server runs in another process; there is no event to await)."""
    import asyncio

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if hasattr(result, "__await__"):
            result = await result
        if result:
            return
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")
