"""Twirp APIs with the real livekit-api client, and the dispatch flow they start."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from livekit import api
from livekit.protocol import agent as pb
from livekit.protocol.agent_dispatch import (
    CreateAgentDispatchRequest,
    RoomAgentDispatch,
)
from livekit.protocol.room import CreateRoomRequest, DeleteRoomRequest, ListRoomsRequest

from tests.support.clients import light_worker, lk_api, project_get, project_token
from tests.support.server import DEV_KEY, DEV_SECRET, ServerProcess


async def test_dispatch_reaches_worker_with_room_job_metadata_and_a_valid_token(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    worker = await light_worker(http, server, "my-agent")
    async with lk_api(server) as lkapi:
        created = await lkapi.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="my-agent", room="room-1", metadata='{"x": 1}')
        )
    assert created.id.startswith("AD_") and created.room == "room-1"
    offer = await worker.next("availability")
    assert offer.availability.job.dispatch_id == created.id
    msg = await worker.next("assignment")
    job = msg.assignment.job
    assert (job.room.name, job.agent_name, job.metadata) == ("room-1", "my-agent", '{"x": 1}')
    assert job.id.startswith("AJ_") and job.room.sid.startswith("RM_")
    claims = api.TokenVerifier(DEV_KEY, DEV_SECRET).verify(msg.assignment.token)
    assert claims.video is not None and claims.video.room == "room-1" and claims.video.room_join
    assert claims.kind == "agent"
    assert claims.identity == f"light-{job.id}"
    assert claims.attributes["lk.agent_name"] == "my-agent"
    await worker.close()


async def test_list_and_delete_dispatch_terminates_its_job(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    worker = await light_worker(http, server, "a")
    async with lk_api(server) as lkapi:
        d = await lkapi.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="a", room="r")
        )
        job_id = (await worker.next("assignment")).assignment.job.id
        listed = await lkapi.agent_dispatch.list_dispatch("r")
        assert [x.id for x in listed] == [d.id]
        assert [j.id for j in listed[0].state.jobs] == [job_id]
        assert await lkapi.agent_dispatch.get_dispatch("AD_unknown00000", "r") is None
        await lkapi.agent_dispatch.delete_dispatch(d.id, "r")
        term = await worker.next("termination")
        assert term.termination.job_id == job_id
        assert await lkapi.agent_dispatch.list_dispatch("r") == []
        with pytest.raises(api.TwirpError) as info:
            await lkapi.agent_dispatch.delete_dispatch(d.id, "r")
        assert info.value.code == "not_found" and info.value.status == 404
    await worker.close()


async def test_create_room_auto_dispatches_only_to_unnamed_workers(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    unnamed = await light_worker(http, server, "")
    named = await light_worker(http, server, "my-agent-jack")
    async with lk_api(server) as lkapi:
        room = await lkapi.room.create_room(CreateRoomRequest(name="auto-room"))
        assert room.sid.startswith("RM_") and room.name == "auto-room"
        msg = await unnamed.next("assignment")
        assert msg.assignment.job.room.name == "auto-room" and msg.assignment.job.agent_name == ""
        # CreateRoom with agents dispatches those (and no automatic one)
        await lkapi.room.create_room(
            CreateRoomRequest(
                name="named-room", agents=[RoomAgentDispatch(agent_name="my-agent-jack")]
            )
        )
        msg = await named.next("assignment")
        assert msg.assignment.job.room.name == "named-room"
        rooms = await lkapi.room.list_rooms(ListRoomsRequest())
        assert sorted(r.name for r in rooms.rooms) == ["auto-room", "named-room"]
        await lkapi.room.delete_room(DeleteRoomRequest(room="auto-room"))
        term = await unnamed.next("termination")
        assert term.termination.job_id == msg.assignment.job.id or term.termination.job_id
        rooms = await lkapi.room.list_rooms(ListRoomsRequest())
        assert [r.name for r in rooms.rooms] == ["named-room"]
    assert named.proto.offers[0].job.room.name == "named-room"  # never offered the auto room
    await unnamed.close()
    await named.close()


async def test_dispatch_before_any_worker_waits_and_runs_on_register(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    async with lk_api(server) as lkapi:
        d = await lkapi.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="late", room="early-room")
        )
    status, trace = await project_get(http, server, f"/dispatches/{d.id}/explain")
    assert status == 200
    assert trace["jobs"][0]["state"] == "pending"
    assert any(t["what"] == "queued" for t in trace["trace"])
    worker = await light_worker(http, server, "late")
    msg = await worker.next("assignment")
    assert msg.assignment.job.dispatch_id == d.id
    status, trace = await project_get(http, server, f"/dispatches/{d.id}/explain")
    assert [t["what"] for t in trace["trace"]][-1] in ("assigned", "running")
    await worker.close()


async def test_declining_worker_then_next_one(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    from callboard.client.worker import WorkerProtocol

    no = await light_worker(http, server, proto=WorkerProtocol("x", decide=lambda job: False))
    yes = await light_worker(http, server, proto=WorkerProtocol("x"))
    async with lk_api(server) as lkapi:
        for i in range(6):
            await lkapi.agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name="x", room=f"d{i}")
            )
    for _ in range(6):
        await yes.next("assignment")
    assert no.proto.assignments == []
    await no.close()
    await yes.close()


@pytest.mark.parametrize("body_format", ["protobuf", "json"])
async def test_raw_twirp_formats_and_errors(
    server: ServerProcess, http: aiohttp.ClientSession, body_format: str
) -> None:
    url = f"{server.http_url}/twirp/livekit.AgentDispatchService/CreateDispatch"
    headers = {"Authorization": f"Bearer {project_token()}"}
    if body_format == "json":
        headers["Content-Type"] = "application/json"
        body: bytes = b'{"agentName": "j", "room": "json-room"}'
    else:
        headers["Content-Type"] = "application/protobuf"
        body = CreateAgentDispatchRequest(agent_name="j", room="json-room").SerializeToString()
    async with http.post(url, data=body, headers=headers) as resp:
        assert resp.status == 200
        assert resp.content_type == f"application/{body_format}"
    bad = b"{nope" if body_format == "json" else b"\xff\xff\xff"
    async with http.post(url, data=bad, headers=headers) as resp:
        err = await resp.json()
        assert resp.status == 400 and err["code"] == "malformed"
        assert "CreateAgentDispatchRequest" in err["msg"]
    async with http.post(
        f"{server.http_url}/twirp/livekit.Nope/Nothing", data=b"", headers=headers
    ) as resp:
        assert resp.status == 404 and (await resp.json())["code"] == "bad_route"


async def test_grants_and_limits(server: ServerProcess) -> None:
    weak = (
        api.AccessToken(DEV_KEY, DEV_SECRET)
        .with_identity("someone")
        .with_grants(api.VideoGrants(room_join=True, room="r"))
        .to_jwt()
    )
    async with lk_api(server) as lkapi:
        svc = lkapi.agent_dispatch
        with pytest.raises(api.TwirpError) as info:
            await svc._client.request(  # the real client, with a token lacking roomAdmin
                "AgentDispatchService",
                "CreateDispatch",
                CreateAgentDispatchRequest(agent_name="a", room="r"),
                {"Authorization": f"Bearer {weak}"},
                pb.Job,
            )
        assert info.value.code == "permission_denied" and "roomAdmin" in info.value.message
        with pytest.raises(api.TwirpError) as info:
            await svc.create_dispatch(
                CreateAgentDispatchRequest(
                    agent_name="a", room="r", metadata="x" * (512 * 1024 + 1)
                )
            )
        assert info.value.code == "invalid_argument" and "metadata" in info.value.message
        with pytest.raises(api.TwirpError) as info:
            await svc.create_dispatch(CreateAgentDispatchRequest(agent_name="a" * 300, room="r"))
        assert info.value.code == "invalid_argument" and "agent_name" in info.value.message
        with pytest.raises(api.TwirpError) as info:
            await lkapi.room.delete_room(DeleteRoomRequest(room="never-made"))
        assert info.value.code == "not_found"
    async with api.LiveKitAPI(url=server.http_url, api_key=DEV_KEY, api_secret="wrong") as bad:
        with pytest.raises(api.TwirpError) as info:
            await bad.room.list_rooms(ListRoomsRequest())
        assert info.value.code == "unauthenticated" and info.value.status == 401


async def test_revoked_key_disconnects_its_workers_at_once(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    from tests.support.clients import admin, new_project

    key, secret = new_project(server, "acme")
    worker = await light_worker(http, server, "w", key=key, secret=secret)
    status, body = admin(server, "DELETE", f"/keys/{key}")
    assert status == 200 and body["workers_disconnected"] == 1
    async with asyncio.timeout(5):
        await worker._reader  # type: ignore[misc]
    assert worker.close_code == 1008
    async with api.LiveKitAPI(url=server.http_url, api_key=key, api_secret=secret) as lkapi:
        with pytest.raises(api.TwirpError) as info:
            await lkapi.room.list_rooms(ListRoomsRequest())
        assert info.value.code == "unauthenticated"


async def test_concurrent_dispatches_to_one_new_room_share_one_room(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """Twenty CreateDispatch calls racing to create the same room: one room, one sid."""
    worker = await light_worker(http, server, "racer")
    async with lk_api(server) as lkapi:
        await asyncio.gather(*(
            lkapi.agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name="racer", room="contended"))
            for _ in range(20)
        ))
        rooms = await lkapi.room.list_rooms(ListRoomsRequest(names=["contended"]))
    sids = {(await worker.next("assignment")).assignment.job.room.sid for _ in range(20)}
    assert [r.sid for r in rooms.rooms] == list(sids)
    await worker.close()
