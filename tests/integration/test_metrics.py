"""`/metrics`: who may read it, and what a scrape holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from livekit import api

from tests.support.clients import light_worker, new_project, project_token
from tests.support.server import DEV_ADMIN, ServerProcess


async def scrape(http: aiohttp.ClientSession, server: ServerProcess,
                 token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(f"{server.http_url}/metrics", headers=headers) as resp:
        return resp.status, await resp.text()


async def test_metrics_need_a_credential_and_stay_in_their_project(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    worker = await light_worker(http, server, "my-agent")
    key, secret = new_project(server, "other")
    assert (await scrape(http, server, None))[0] == 401
    assert (await scrape(http, server, "wrong"))[0] == 401
    status, text = await scrape(http, server, DEV_ADMIN)
    assert status == 200
    assert ('callboard_workers{agent_name="my-agent",developer="",project="dev",'
            'status="available"} 1.0') in text
    assert 'callboard_pending_dispatches{project="other"} 0.0' in text
    status, text = await scrape(http, server, project_token(key, secret))
    assert status == 200 and 'project="other"' in text and 'project="dev"' not in text
    grants = api.VideoGrants(room_join=True, room="r")
    join_only = api.AccessToken(key, secret).with_identity("u").with_grants(grants).to_jwt()
    status, _ = await scrape(http, server, join_only)
    assert status == 403
    await worker.close()


@pytest.fixture
def public(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(db=tmp_path / "public.db", env={"CALLBOARD_METRICS_PUBLIC": "1"})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_metrics_public_serves_everything_without_credentials(
    public: ServerProcess, http: aiohttp.ClientSession
) -> None:
    status, text = await scrape(http, public, None)
    assert status == 200 and 'callboard_pending_dispatches{project="dev"} 0.0' in text
