"""`callboard workers …`: the connected workers as the server sees them, per project."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

from tests.support.cli import acb, creds, isolate, ok, ok_json, one_line_error
from tests.support.clients import light_worker, lk_api, new_project
from tests.support.server import ServerProcess


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


async def test_list_and_show(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    a = await light_worker(http, server, "alpha", load=0.4)
    b = await light_worker(http, server, "beta")
    async with lk_api(server) as lk:
        await lk.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="beta", room="r"))
    job_id = (await b.next("assignment")).assignment.job.id
    listed = ok_json(await acb("workers", "list", "--json", *creds(server)))
    by_id = {w["id"]: w for w in listed}
    assert set(by_id) == {a.proto.worker_id, b.proto.worker_id}
    assert by_id[b.proto.worker_id]["jobs"] == [job_id]
    assert by_id[a.proto.worker_id]["agent_name"] == "alpha"
    table = ok(await acb("workers", "list", *creds(server)))
    row = next(line for line in table.splitlines() if a.proto.worker_id in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells[:7] == [a.proto.worker_id, "alpha", "production", "light-1", "0.40",
                         "available", "0"]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", cells[7])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\d+s ago\)", cells[8])
    only = ok_json(await acb("workers", "list", "--agent-name", "beta", "--json", *creds(server)))
    assert [w["id"] for w in only] == [b.proto.worker_id]
    shown = ok(await acb("workers", "show", b.proto.worker_id, *creds(server)))
    assert "beta" in shown and job_id in shown and "light-1" in shown and "available" in shown
    as_json = ok_json(await acb("workers", "show", b.proto.worker_id, "--json", *creds(server)))
    assert as_json["id"] == b.proto.worker_id and as_json["jobs"] == [job_id]
    for worker in (a, b):
        await worker.close()


async def test_developer_workers_are_labelled_and_projects_are_apart(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    key, secret = new_project(server, "acme", developer="jack")
    jacks = await light_worker(http, server, "helper", key=key, secret=secret)
    acme = ok_json(await acb("workers", "list", "--json", *creds(server, key, secret)))
    assert [(w["id"], w["developer"]) for w in acme] == [(jacks.proto.worker_id, "jack")]
    assert "jack" in ok(await acb("workers", "list", *creds(server, key, secret)))
    assert ok_json(await acb("workers", "list", "--json", *creds(server))) == []  # dev project
    one_line_error(await acb("workers", "show", jacks.proto.worker_id, *creds(server)), 1,
                   "server said not_found:")
    await jacks.close()


async def test_an_unknown_worker(server: ServerProcess) -> None:
    one_line_error(await acb("workers", "show", "AW_nope", *creds(server)), 1,
                   "server said not_found: worker 'AW_nope' not found")
    one_line_error(await acb("workers", "show", "a/b", *creds(server)), 1, "not_found")
