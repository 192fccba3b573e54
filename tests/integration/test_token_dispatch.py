"""Token-based dispatch and JT_PARTICIPANT jobs with real SDK joins against a real server process.

A join's token `roomConfig.agents` dispatches agents (LiveKit), also into an existing room
(callboard; livekit#4390), owned by the key that signed the token; each non-agent participant
gets a JT_PARTICIPANT job from agents with participant workers; an agent whose job attempt was
superseded is refused. Participants are `livekit.rtc.Room` clients over /rtc/v1 + WebRTC (run
inside the test network namespace: scripts/test.sh).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from livekit import rtc
from livekit.protocol import agent as pb
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration

from callboard.client.worker import LightWorker, WorkerProtocol
from tests.support.clients import light_worker, lk_api, new_project, project_get, wait_for
from tests.support.rtc import Client, eventually, needs_netns, token
from tests.support.server import DEV_KEY, DEV_SECRET, ServerProcess
from tests.support.worker_procs import read_records, worker_process

pytestmark = needs_netns
AGENT_PROCESS = Path(__file__).parents[1] / "support" / "rtc_agent.py"


def agents(*names: str) -> RoomConfiguration:
    return RoomConfiguration(agents=[RoomAgentDispatch(agent_name=n, metadata=f"for {n}")
                                     for n in names])


async def join(server: ServerProcess, identity: str, room: str = "room-1", **kw: Any) -> Client:
    client = Client(identity)
    await client.room.connect(server.ws_url, token(identity, room, **kw))
    return client


@dataclass
class ParticipantWorker(WorkerProtocol):
    """A light worker that registers for JT_PARTICIPANT jobs."""

    def register(self) -> pb.WorkerMessage:
        msg = super().register()
        msg.register.type = pb.JT_PARTICIPANT
        return msg


async def participant_worker(
    http: aiohttp.ClientSession, server: ServerProcess, agent_name: str
) -> LightWorker:
    return await light_worker(http, server, proto=ParticipantWorker(agent_name=agent_name))


async def room_events(http: aiohttp.ClientSession, server: ServerProcess, room: str,
                      key: str = DEV_KEY, secret: str = DEV_SECRET) -> list[dict[str, Any]]:
    status, body = await project_get(http, server, f"/events?room={room}&limit=1000", key, secret)
    assert status == 200, body
    events: list[dict[str, Any]] = body["events"]
    return events


async def dispatches(server: ServerProcess, room: str) -> list[tuple[str, str]]:
    async with lk_api(server) as lk:
        listed = await lk.agent_dispatch.list_dispatch(room)
    return sorted((d.agent_name, d.metadata) for d in listed)


async def test_a_join_that_creates_the_room_dispatches_the_token_agents(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    worker = await light_worker(http, server, "helper")
    alice = await join(server, "alice", room_config=agents("helper", "helper", "other"))
    offer = (await worker.next("availability")).availability.job
    assert (offer.room.name, offer.agent_name, offer.metadata) == ("room-1", "helper", "for helper")
    assert offer.type == pb.JT_ROOM and offer.room.sid == await alice.room.sid
    assert await dispatches(server, "room-1") == [("helper", "for helper"), ("other", "for other")]
    events = await room_events(http, server, "room-1")
    created = [e for e in events if e["kind"] == "dispatch.created"]
    assert all("(token)" in e["message"] for e in created) and len(created) == 2
    await alice.close()
    await worker.close()


async def test_a_join_without_agents_makes_the_automatic_dispatch(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    unnamed = await light_worker(http, server)
    alice = await join(server, "alice")
    job = (await unnamed.next("assignment")).assignment.job
    assert job.agent_name == "" and job.room.name == "room-1"
    bob = await join(server, "bob")  # an existing room: no second automatic dispatch
    assert await dispatches(server, "room-1") == [("", "")]
    await alice.close()
    await bob.close()
    await unnamed.close()


async def test_an_existing_room_gets_the_named_agents_it_lacks_once(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    helper = await light_worker(http, server, "helper")
    alice = await join(server, "alice")
    bob = await join(server, "bob", room_config=agents("helper"))
    await helper.next("assignment")
    carol = await join(server, "carol", room_config=agents("helper"))
    assert await dispatches(server, "room-1") == [("", ""), ("helper", "for helper")]
    lines = [e for e in await room_events(http, server, "room-1") if e["kind"] == "dispatch.token"]
    assert len(lines) == 1 and "livekit#4390" in lines[0]["message"]
    assert "bob" in lines[0]["message"] and lines[0]["agent_name"] == "helper"
    for client in (alice, bob, carol):
        await client.close()
    await helper.close()


@pytest.fixture
def strict_server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(db=tmp_path / "strict.db", env={"CALLBOARD_STRICT_TOKEN_DISPATCH": "1"})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_strict_mode_ignores_tokens_for_existing_rooms(
    strict_server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    alice = await join(strict_server, "alice", room_config=agents("first"))
    bob = await join(strict_server, "bob", room_config=agents("helper"))
    assert await dispatches(strict_server, "room-1") == [("first", "for first")]
    events = await room_events(http, strict_server, "room-1")
    (ignored,) = [e for e in events if e["kind"] == "dispatch.token_ignored"]
    assert "'helper'" in ignored["message"] and "bob" in ignored["message"]
    await alice.close()
    await bob.close()


async def test_token_dispatches_belong_to_the_key_that_signed_the_token(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    jack_key, jack_secret = new_project(server, "dev", developer="jack")
    production = await light_worker(http, server, "my-agent-jack")
    jacks = await light_worker(http, server, "my-agent-jack", key=jack_key, secret=jack_secret)
    caller = await join(server, "caller", key=jack_key, secret=jack_secret,
                        room_config=agents("my-agent-jack"))
    assignment = (await jacks.next("assignment")).assignment
    assert assignment.job.agent_name == "my-agent-jack"
    assert production.proto.offers == []  # production never sees a developer's call
    async with lk_api(server) as lk:
        (dispatch,) = await lk.agent_dispatch.list_dispatch("room-1")
    status, explained = await project_get(http, server, f"/dispatches/{dispatch.id}/explain")
    assert status == 200 and explained["developer"] == "jack" and explained["source"] == "token"
    assert explained["api_key"] == jack_key

    agent = Client("agent")  # joins as the job, with the assignment's token
    await agent.room.connect(server.ws_url, assignment.token)
    await eventually(lambda: agent.room.local_participant.identity in caller.remote_identities)
    there = caller.room.remote_participants[agent.room.local_participant.identity]
    assert there.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    assert there.attributes["lk.agent_name"] == "my-agent-jack"
    await agent.room.local_participant.publish_data(b"hello from jack's agent")
    await eventually(lambda: [p.data for p in caller.data] == [b"hello from jack's agent"])
    for client in (agent, caller):
        await client.close()
    await production.close()
    await jacks.close()


async def test_each_participant_gets_a_participant_job(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    room_worker = await light_worker(http, server, "greeter")
    per_person = await participant_worker(http, server, "greeter")
    alice = await join(server, "alice", room_config=agents("greeter"))
    room_job = (await room_worker.next("assignment")).assignment
    first = (await per_person.next("assignment")).assignment.job
    assert first.type == pb.JT_PARTICIPANT and first.participant.identity == "alice"
    assert first.participant.sid == alice.room.local_participant.sid
    assert first.agent_name == "greeter" and first.dispatch_id == room_job.job.dispatch_id
    agent = Client("agent")  # an agent joining gets no participant job
    await agent.room.connect(server.ws_url, room_job.token)
    bob = await join(server, "bob")
    second = (await per_person.next("assignment")).assignment.job
    assert second.participant.identity == "bob" and second.id != first.id
    assert [o.job.participant.identity for o in per_person.proto.offers] == ["alice", "bob"]
    async with lk_api(server) as lk:
        (listed,) = await lk.agent_dispatch.list_dispatch("room-1")
    assert sorted((j.type, j.participant.identity) for j in listed.state.jobs) == [
        (pb.JT_ROOM, ""), (pb.JT_PARTICIPANT, "alice"), (pb.JT_PARTICIPANT, "bob")]
    for client in (alice, bob, agent):
        await client.close()
    await room_worker.close()
    await per_person.close()


async def test_a_superseded_agent_is_removed_and_refused(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    first = await light_worker(http, server, "bot")
    alice = await join(server, "alice", room_config=agents("bot"))
    old = (await first.next("assignment")).assignment
    old_agent = Client("old-agent")
    await old_agent.room.connect(server.ws_url, old.token)
    await eventually(lambda: len(alice.remote_identities) == 1)
    await first.close()  # the worker vanishes; after the grace window the job goes elsewhere
    second = await light_worker(http, server, "bot")
    new = (await second.next("assignment", timeout=15)).assignment
    assert new.job.dispatch_id == old.job.dispatch_id and new.job.id != old.job.id
    await eventually(lambda: old_agent.disconnected)  # the earlier attempt's agent is removed
    assert old_agent.disconnected == [rtc.DisconnectReason.PARTICIPANT_REMOVED]

    async with http.get(f"{server.http_url}/rtc/v1/validate",
                        headers={"Authorization": f"Bearer {old.token}"}) as resp:
        assert resp.status == 403
        assert f"job {old.job.id} has ended (failed)" in await resp.text()
    stale = Client("stale")
    with pytest.raises(rtc.ConnectError):
        await stale.room.connect(server.ws_url, old.token)
    agent = Client("agent")
    await agent.room.connect(server.ws_url, new.token)
    await eventually(lambda: agent.room.local_participant.identity in alice.remote_identities)
    assert len(alice.remote_identities) == 1
    assert alice.left == [old_agent.room.local_participant.identity]
    for client in (alice, agent, stale, old_agent):
        await client.close()
    await second.close()


# -- the real livekit-agents worker ----------------------------------------------------------------


async def test_a_token_naming_jacks_agent_starts_his_livekit_agents_worker(
    server: ServerProcess, tmp_path: Path
) -> None:
    jack_key, jack_secret = new_project(server, "dev", developer="jack")
    out = tmp_path / "jack.jsonl"
    with worker_process(server, AGENT_PROCESS, "my-agent-jack", out, jack_key, jack_secret):
        await wait_for(lambda: read_records(out, "registered"), timeout_s=45)
        caller = Client("caller")
        jwt = token("caller", "call-1", key=jack_key, secret=jack_secret,
                    room_config=agents("my-agent-jack"))
        await caller.room.connect(server.ws_url, jwt)
        await wait_for(lambda: read_records(out, "connected"), timeout_s=20)
        (connected,) = read_records(out, "connected")
        assert connected["room"] == "call-1" and connected["remotes"] == ["caller"]
        await eventually(lambda: connected["identity"] in caller.remote_identities)
        await caller.room.local_participant.publish_data(b"ping", topic="t")
        await eventually(lambda: [(p.data, p.topic) for p in caller.data] == [(b"ping", "echo")])
        await caller.room.local_participant.publish_data(b"bye")
        await eventually(lambda: caller.left == [connected["identity"]], timeout_s=10)
        await caller.close()
