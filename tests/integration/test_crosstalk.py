"""Crosstalk detection against a real server: one key used from several hosts (loopback addresses
127.0.0.x stand in for machines), and hosts a project marks as production."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from callboard.client.worker import LightWorker, WorkerProtocol
from tests.support.cli import acb, creds
from tests.support.clients import admin, new_project, project_get, wait_for
from tests.support.server import DEV_ADMIN, DEV_KEY, DEV_SECRET, ServerProcess


@pytest.fixture
async def hosts() -> AsyncIterator[dict[str, aiohttp.ClientSession]]:
    """A client session per source address."""
    sessions = {
        ip: aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ip, 0)))
        for ip in ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    }
    try:
        yield sessions
    finally:
        for session in sessions.values():
            await session.close()


async def worker_from(session: aiohttp.ClientSession, server: ServerProcess, key: str = DEV_KEY,
                      secret: str = DEV_SECRET) -> LightWorker:
    worker = LightWorker(server.ws_url, key, secret, WorkerProtocol(agent_name="my-agent"),
                         session)
    await worker.connect()
    return worker


async def report(http: aiohttp.ClientSession, server: ServerProcess, key: str = DEV_KEY,
                 secret: str = DEV_SECRET) -> list[dict[str, Any]]:
    status, body = await project_get(http, server, "/crosstalk", key, secret)
    assert status == 200, body
    return list(body["crosstalk"])


async def test_a_shared_key_from_two_hosts_is_reported_everywhere(
    server: ServerProcess, http: aiohttp.ClientSession, hosts: dict[str, aiohttp.ClientSession]
) -> None:
    a = await worker_from(hosts["127.0.0.1"], server)
    assert await report(http, server) == []
    b = await worker_from(hosts["127.0.0.2"], server)
    (found,) = await report(http, server)
    assert found["agent_name"] == "my-agent" and found["developer"] == ""
    assert found["hosts"] == ["127.0.0.1", "127.0.0.2"] and "used from 2 hosts" in found["reason"]
    assert "--developer" in found["fix"]
    assert set(found["workers"]) == {a.proto.worker_id, b.proto.worker_id}
    _, listed = await project_get(http, server, "/workers")
    assert all("2 hosts" in w["crosstalk"] for w in listed["workers"])
    out = await acb("workers", "list", *creds(server))
    assert out.exit_code == 0 and "CROSSTALK" in out.stdout
    assert "crosstalk: key devkey used from 2 hosts" in out.stderr and "--developer" in out.stderr
    _, events = await project_get(http, server, "/events?kind=crosstalk.")
    assert len(events["events"]) == 1 and events["events"][0]["level"] == "warning"
    await wait_for(lambda: "crosstalk in project" in server.log())

    # marked production, both hosts may share the key; a third, unmarked host may not
    status, body = admin(server, "PUT", "/projects/dev/hosts",
                         {"production": ["127.0.0.1", "127.0.0.2"]})
    assert status == 200 and body["hosts"] == {"127.0.0.1": "production",
                                               "127.0.0.2": "production"}
    assert await report(http, server) == []
    c = await worker_from(hosts["127.0.0.3"], server)
    (found,) = await report(http, server)
    assert "production hosts" in found["reason"] and "127.0.0.3" in found["reason"]
    for worker in (a, b, c):
        await worker.close()


async def test_developer_keys_keep_pools_apart(
    server: ServerProcess, http: aiohttp.ClientSession, hosts: dict[str, aiohttp.ClientSession]
) -> None:
    jack_key, jack_secret = new_project(server, "team", developer="jack")
    status, jill = admin(server, "POST", "/projects/team/keys", {"developer": "jill"})
    assert status == 201
    one = await worker_from(hosts["127.0.0.1"], server, jack_key, jack_secret)
    two = await worker_from(hosts["127.0.0.2"], server, jill["key"], jill["secret"])
    assert await report(http, server, jack_key, jack_secret) == []  # two pools, one host each
    three = await worker_from(hosts["127.0.0.3"], server, jack_key, jack_secret)
    (found,) = await report(http, server, jack_key, jack_secret)
    assert found["developer"] == "jack" and found["hosts"] == ["127.0.0.1", "127.0.0.3"]
    assert await report(http, server) == []  # the dev project sees none of it
    status, _ = admin(server, "PUT", "/projects/team/hosts", {"production": "nope"})
    assert status == 400
    status, _ = admin(server, "PUT", "/projects/nope/hosts", {"production": []})
    assert status == 404
    status, _ = admin(server, "PUT", "/projects/team/hosts", {"laptop": []}, token="wrong")
    assert status == 401
    for worker in (one, two, three):
        await worker.close()


async def test_admin_cli_marks_hosts_online_and_offline(
    server: ServerProcess, http: aiohttp.ClientSession, hosts: dict[str, aiohttp.ClientSession]
) -> None:
    a = await worker_from(hosts["127.0.0.1"], server)
    b = await worker_from(hosts["127.0.0.2"], server)
    assert len(await report(http, server)) == 1
    online = ("admin", "--url", server.http_url, "--admin-token", DEV_ADMIN)
    out = await acb(*online, "project", "hosts", "dev", "--production", "127.0.0.1",
                    "--production", "127.0.0.2", "--laptop", "127.0.0.9", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {"127.0.0.1": "production", "127.0.0.2": "production",
                                      "127.0.0.9": "laptop"}
    assert await report(http, server) == []
    shown = await acb(*online, "project", "hosts", "dev")
    assert shown.exit_code == 0 and "127.0.0.9" in shown.stdout and "laptop" in shown.stdout
    missing = await acb(*online, "project", "hosts", "nope")
    assert missing.exit_code == 1
    for worker in (a, b):
        await worker.close()
    server.stop()
    cleared = await acb("admin", "--db", str(server.db), "project", "hosts", "dev", "--clear",
                        "--json")
    assert cleared.exit_code == 0, cleared.output
    assert json.loads(cleared.stdout) == {}
