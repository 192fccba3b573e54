"""Projects as tenants: the admin plane, and a key of one project never reaching another's data."""

from __future__ import annotations

import aiohttp
import pytest
from livekit import api
from livekit.protocol import agent as pb
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest
from livekit.protocol.room import CreateRoomRequest, DeleteRoomRequest, ListRoomsRequest

from tests.support.clients import (
    admin,
    light_worker,
    lk_api,
    new_project,
    project_get,
    wait_for,
)
from tests.support.server import ServerProcess


def test_admin_api_requires_the_admin_credential(server: ServerProcess) -> None:
    status, body = admin(server, "GET", "/projects", token="wrong")
    assert status == 401 and body["code"] == "unauthenticated"
    status, body = admin(server, "GET", "/projects")
    assert status == 200 and [p["name"] for p in body["projects"]] == ["dev"]


def test_project_and_key_lifecycle(server: ServerProcess) -> None:
    status, project = admin(server, "POST", "/projects", {"name": "acme"})
    assert status == 201 and project["id"].startswith("P_")
    status, body = admin(server, "POST", "/projects", {"name": "acme"})
    assert status == 409 and body["code"] == "already_exists"
    status, body = admin(server, "POST", "/projects", {"name": "bad name!"})
    assert status == 400 and body["code"] == "invalid_argument"
    status, key = admin(server, "POST", "/projects/acme/keys", {"developer": "jack"})
    assert status == 201 and key["kind"] == "developer" and key["developer"] == "jack"
    assert key["key"].startswith("API") and len(key["secret"]) >= 32 and key["url"]
    status, listed = admin(server, "GET", "/projects/acme/keys")
    assert [k["key"] for k in listed["keys"]] == [key["key"]]
    assert "secret" not in listed["keys"][0]
    status, body = admin(server, "GET", "/projects/nope/keys")
    assert status == 404
    status, body = admin(server, "DELETE", "/keys/APInotakey000")
    assert status == 404
    status, body = admin(server, "DELETE", "/projects/acme")
    assert status == 200
    status, body = admin(server, "GET", "/projects")
    assert [p["name"] for p in body["projects"]] == ["dev"]


async def test_a_key_of_project_b_never_sees_project_a(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    b_key, b_secret = new_project(server, "project-b")
    a_worker = await light_worker(http, server, "shared-name")
    async with lk_api(server) as a_api:
        await a_api.room.create_room(CreateRoomRequest(name="same-room"))
        a_dispatch = await a_api.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="shared-name", room="same-room")
        )
    await a_worker.next("assignment")
    async with api.LiveKitAPI(url=server.http_url, api_key=b_key, api_secret=b_secret) as b_api:
        assert (await b_api.room.list_rooms(ListRoomsRequest())).rooms == []
        assert await b_api.agent_dispatch.list_dispatch("same-room") == []
        assert await b_api.agent_dispatch.get_dispatch(a_dispatch.id, "same-room") is None
        with pytest.raises(api.TwirpError) as info:
            await b_api.agent_dispatch.delete_dispatch(a_dispatch.id, "same-room")
        assert info.value.code == "not_found"
        with pytest.raises(api.TwirpError) as info:
            await b_api.room.delete_room(DeleteRoomRequest(room="ghost"))
        assert info.value.code == "not_found"
        # B's own room of the same name is B's, and B's dispatch never reaches A's worker
        await b_api.room.create_room(CreateRoomRequest(name="same-room"))
        await b_api.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="shared-name", room="same-room")
        )
    for path in (
        "/workers",
        f"/workers/{a_worker.proto.worker_id}",
        f"/dispatches/{a_dispatch.id}/explain",
        "/events",
    ):
        status, body = await project_get(http, server, path, b_key, b_secret)
        if status == 200:
            assert body.get("workers", []) == [] and all(
                e["project_id"] != _dev_project_id(server) for e in body.get("events", [])
            )
        else:
            assert status == 404 and body["code"] == "not_found"
    assert len(a_worker.proto.offers) == 1
    # A still sees its own room untouched
    async with lk_api(server) as a_api:
        assert [r.name for r in (await a_api.room.list_rooms(ListRoomsRequest())).rooms] == [
            "same-room"
        ]
        assert len(await a_api.agent_dispatch.list_dispatch("same-room")) == 2  # auto + explicit
    await a_worker.close()


def _dev_project_id(server: ServerProcess) -> str:
    _, body = admin(server, "GET", "/projects")
    return next(p["id"] for p in body["projects"] if p["name"] == "dev")


async def test_worker_of_project_b_never_gets_project_a_dispatches(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    b_key, b_secret = new_project(server, "project-b")
    b_worker = await light_worker(http, server, "agent", key=b_key, secret=b_secret)
    a_worker = await light_worker(http, server, "agent")
    async with lk_api(server) as a_api:
        for i in range(10):
            await a_api.agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name="agent", room=f"r{i}")
            )
    for _ in range(10):
        await a_worker.next("assignment")
    assert b_worker.proto.offers == []
    await a_worker.close()
    await b_worker.close()


async def test_event_log_filters_and_pages(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    worker = await light_worker(http, server, "logged")
    async with lk_api(server) as lkapi:
        d1 = await lkapi.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="logged", room="log-a")
        )
        await lkapi.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="logged", room="log-b")
        )
    job_id = (await worker.next("assignment")).assignment.job.id
    await worker.next("assignment")
    status, body = await project_get(http, server, "/events?room=log-a")
    kinds = [e["kind"] for e in body["events"]]
    assert "dispatch.created" in kinds and "dispatch.assigned" in kinds
    assert {e["room_name"] for e in body["events"]} == {"log-a"}
    assert any(e.get("dispatch_id") == d1.id for e in body["events"])
    status, body = await project_get(http, server, f"/events?job={job_id}")
    assert body["events"] and all(e["job_id"] == job_id for e in body["events"])
    status, page1 = await project_get(http, server, "/events?limit=2")
    status, page2 = await project_get(http, server, f"/events?limit=2&after={page1['next_after']}")
    assert len(page1["events"]) == 2 and page2["events"]
    assert page2["events"][0]["seq"] > page1["events"][-1]["seq"]
    status, body = await project_get(http, server, "/events?limit=abc")
    assert status == 400 and body["code"] == "invalid_argument"
    await worker.close()


async def test_the_event_log_shows_what_happened_before_the_read(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """Status reports are written without anyone waiting for them (they may gather with later
    writes for a while); a read of the log must still see them."""
    worker = await light_worker(http, server, "reporter")
    async with lk_api(server) as lkapi:
        d = await lkapi.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="reporter", room="report-room")
        )
    job_id = (await worker.next("assignment")).assignment.job.id
    await worker.send(worker.proto.job_update(job_id, pb.JobStatus.JS_SUCCESS))

    async def ended() -> bool:  # the dispatcher has it (the explain trace is read from memory)
        _, trace = await project_get(http, server, f"/dispatches/{d.id}/explain")
        return bool(trace["jobs"] and trace["jobs"][0]["state"] == "success")

    await wait_for(ended)
    _, body = await project_get(http, server, f"/events?job={job_id}")
    assert "job.success" in [e["kind"] for e in body["events"]]
    await worker.close()
