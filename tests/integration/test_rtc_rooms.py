"""Rooms with the real LiveKit rtc SDK: join, see each other, data, RPC, streams, attributes, kicks.

Each test runs a callboard server in its own loop (tests/support/rtc.py) inside the test network
namespace, and real `livekit.rtc.Room` clients connect to it over /rtc/v1 + WebRTC.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from livekit import rtc
from livekit.protocol import room as room_pb

from callboard.rooms.contract import JoinContext, JoinRefused
from callboard.rooms.null import NullObserver
from callboard.rooms.state import DataKind
from tests.support.rtc import (
    Client,
    RtcServer,
    connect,
    eventually,
    in_process_app,
    needs_netns,
    rtc_server,
)

pytestmark = [needs_netns, in_process_app]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RtcServer]:
    async with rtc_server(tmp_path) as running:
        yield running


@pytest.fixture
async def pair(server: RtcServer) -> AsyncIterator[tuple[Client, Client]]:
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    await eventually(
        lambda: alice.remote_identities == {"bob"} and bob.remote_identities == {"alice"}
    )
    try:
        yield alice, bob
    finally:
        await alice.close()
        await bob.close()


async def test_two_participants_see_each_other_and_the_leave(
    server: RtcServer, pair: tuple[Client, Client]
) -> None:
    alice, bob = pair
    assert alice.joined == ["bob"]
    remote = bob.room.remote_participants
    (alice_there,) = remote.values()
    assert alice_there.sid == alice.room.local_participant.sid
    assert alice_there.sid.startswith("PA_") and bob.room.name == "room-1"
    assert (await alice.room.sid).startswith("RM_")
    assert [p.identity for p in server.rooms.list_participants(server.project_id, "room-1")] == [
        "alice",
        "bob",
    ]
    await bob.close()
    await eventually(lambda: alice.left == ["bob"] and not alice.room.remote_participants)


async def test_reliable_and_lossy_data_with_topics(pair: tuple[Client, Client]) -> None:
    alice, bob = pair
    await alice.room.local_participant.publish_data(b"reliable", reliable=True, topic="chat")
    await alice.room.local_participant.publish_data(b"lossy", reliable=False, topic="pos")
    await eventually(lambda: len(bob.data) == 2)
    got = {
        p.data: (p.topic, p.kind, p.participant.identity if p.participant else "") for p in bob.data
    }
    assert got == {
        b"reliable": ("chat", rtc.DataPacketKind.KIND_RELIABLE, "alice"),
        b"lossy": ("pos", rtc.DataPacketKind.KIND_LOSSY, "alice"),
    }
    assert alice.data == []


async def test_destination_identities_reach_only_those(server: RtcServer) -> None:
    alice, bob, carol = [await connect(server, name) for name in ("alice", "bob", "carol")]
    try:
        await eventually(lambda: len(alice.remote_identities) == 2)
        local = alice.room.local_participant
        await local.publish_data(b"for-bob", destination_identities=["bob"], topic="dm")
        await local.publish_data(b"nobody", destination_identities=["ghost"], topic="dm")
        await local.publish_data(b"everyone", topic="all")
        await eventually(lambda: len(bob.data) == 2 and len(carol.data) == 1)
        assert sorted(p.data for p in bob.data) == [b"everyone", b"for-bob"]
        assert [p.data for p in carol.data] == [b"everyone"]
        stats = server.rooms.stats()
        assert stats["data.dropped.unknown_destination"] == 1
    finally:
        for client in (alice, bob, carol):
            await client.close()


async def test_rpc_round_trip(pair: tuple[Client, Client]) -> None:
    alice, bob = pair

    async def shout(data: rtc.RpcInvocationData) -> str:
        return f"{data.caller_identity}:{data.payload.upper()}"

    bob.room.local_participant.register_rpc_method("shout", shout)
    answer = await alice.room.local_participant.perform_rpc(
        destination_identity="bob", method="shout", payload="hello", response_timeout=5
    )
    assert answer == "alice:HELLO"


async def test_a_30_kb_text_stream(pair: tuple[Client, Client]) -> None:
    alice, bob = pair
    text = "".join(f"{i:05d} callboard text stream\n" for i in range(1200))
    assert len(text) > 30_000
    received: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
    readers: list[asyncio.Task[None]] = []

    def on_stream(reader: rtc.TextStreamReader, sender: str) -> None:
        async def read() -> None:
            received.set_result((sender, await reader.read_all()))

        readers.append(asyncio.ensure_future(read()))

    bob.room.register_text_stream_handler("story", on_stream)
    await alice.room.local_participant.send_text(text, topic="story")
    sender, got = await asyncio.wait_for(received, 10)
    assert (sender, got) == ("alice", text)


async def test_set_attributes_is_seen_by_the_peer(
    server: RtcServer, pair: tuple[Client, Client]
) -> None:
    alice, bob = pair
    await alice.room.local_participant.set_attributes({"mood": "curious", "lang": "en"})
    await eventually(lambda: bob.attributes and bob.attributes[-1][1].get("mood") == "curious")
    assert bob.attributes[-1] == ("alice", {"mood": "curious", "lang": "en"})
    # Alice learns of her own change from the server's update, which may come after Bob's.
    await eventually(lambda: alice.room.local_participant.attributes.get("lang") == "en")
    assert alice.room.local_participant.attributes == {"mood": "curious", "lang": "en"}
    view = server.rooms.get_participant(server.project_id, "room-1", "alice")
    assert view.attributes == {"mood": "curious", "lang": "en"}
    await alice.room.local_participant.set_metadata("meta")
    await eventually(
        lambda: bob.room.remote_participants and _remote(bob, "alice").metadata == "meta"
    )


async def test_remove_participant_kicks(server: RtcServer, pair: tuple[Client, Client]) -> None:
    alice, bob = pair
    server.rooms.remove_participant(server.project_id, "room-1", "bob")
    await eventually(lambda: bob.disconnected and alice.left == ["bob"])
    assert bob.disconnected == [rtc.DisconnectReason.PARTICIPANT_REMOVED]
    await eventually(lambda: server.rooms.stats()["peer_connections"] == 1)


async def test_server_data_metadata_and_attribute_updates(
    server: RtcServer, pair: tuple[Client, Client]
) -> None:
    alice, bob = pair
    sent = server.rooms.send_data(
        server.project_id, "room-1", b"from-server", DataKind.RELIABLE, ["bob"], "sys"
    )
    assert sent == 1
    await eventually(lambda: bob.data)
    assert (bob.data[0].data, bob.data[0].topic, bob.data[0].participant) == (
        b"from-server",
        "sys",
        None,
    )
    await server.rooms.update_room_metadata(server.project_id, "room-1", "room-meta")
    await eventually(
        lambda: alice.room.metadata == "room-meta" and bob.room.metadata == "room-meta"
    )
    server.rooms.update_participant(server.project_id, "room-1", "bob", attributes={"role": "host"})
    await eventually(lambda: _remote(alice, "bob").attributes == {"role": "host"})
    await eventually(lambda: bob.room.local_participant.attributes == {"role": "host"})


async def test_a_second_join_with_the_same_identity_replaces_the_first(server: RtcServer) -> None:
    bob = await connect(server, "bob")
    first = await connect(server, "alice")
    await eventually(lambda: bob.remote_identities == {"alice"})
    first_sid = first.room.local_participant.sid
    second = await connect(server, "alice")
    try:
        await eventually(lambda: first.disconnected == [rtc.DisconnectReason.DUPLICATE_IDENTITY])
        await eventually(lambda: _remote(bob, "alice").sid == second.room.local_participant.sid)
        assert second.room.local_participant.sid != first_sid
        await second.room.local_participant.publish_data(b"still-here")
        await eventually(lambda: [p.data for p in bob.data] == [b"still-here"])
        assert len(server.rooms.list_participants(server.project_id, "room-1")) == 2
    finally:
        for client in (bob, first, second):
            await client.close()


async def test_max_participants_refuses_with_a_reason(server: RtcServer) -> None:
    config = room_pb.RoomConfiguration(max_participants=1)
    alice = await connect(server, "alice", "small", room_config=config)
    try:
        with pytest.raises(rtc.ConnectError, match="full"):
            await connect(server, "bob", "small")
        assert [p.identity for p in server.rooms.list_participants(server.project_id, "small")] == [
            "alice"
        ]
    finally:
        await alice.close()


async def test_agent_kind_comes_from_the_token(server: RtcServer) -> None:
    human = await connect(server, "human")
    agent = await connect(server, "agent-AJ_x", kind="agent", attributes={"lk.agent_name": "a"})
    try:
        await eventually(lambda: human.remote_identities == {"agent-AJ_x"})
        remote = _remote(human, "agent-AJ_x")
        assert remote.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        assert remote.attributes == {"lk.agent_name": "a"}
    finally:
        await human.close()
        await agent.close()


async def test_a_session_longer_than_the_ping_timeout_stays_up(
    server: RtcServer, pair: tuple[Client, Client]
) -> None:
    alice, bob = pair
    timeout_s = server.rooms.signal.ping_timeout_s
    assert timeout_s == 3  # FAST_ROOMS: ping every 1 s, timeout 3 s
    await asyncio.sleep(timeout_s + 2)
    assert alice.left == [] and bob.disconnected == []
    assert alice.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
    await bob.room.local_participant.publish_data(b"after-a-while")
    await eventually(lambda: [p.data for p in alice.data] == [b"after-a-while"])


async def test_a_resume_becomes_a_full_reconnect(
    server: RtcServer, pair: tuple[Client, Client]
) -> None:
    alice, bob = pair
    reconnected = asyncio.Event()
    alice.room.on("reconnected", lambda: reconnected.set())
    old_sid = _remote(bob, "alice").sid
    await alice.room.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_SIGNAL_RECONNECT)
    await asyncio.wait_for(reconnected.wait(), 15)
    # The full rejoin is a new participant: bob sees alice leave and come back with a new sid.
    # (The Python SDK keeps the local participant's first sid; the server's is the truth.)
    await eventually(lambda: bob.left == ["alice"] and bob.joined == ["alice"])
    new_sid = server.rooms.get_participant(server.project_id, "room-1", "alice").sid
    assert new_sid != old_sid and _remote(bob, "alice").sid == new_sid
    assert alice.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
    await alice.room.local_participant.publish_data(b"back")
    await eventually(lambda: b"back" in [p.data for p in bob.data])
    assert server.rooms.stats()["participants"] == 2


async def test_nothing_leaks_after_everyone_leaves(server: RtcServer) -> None:
    before = _rtc_tasks()
    clients = [await connect(server, f"p{i}", room=f"room-{i % 2}") for i in range(4)]
    await eventually(lambda: server.rooms.stats()["peer_connections"] == 4)
    await clients[0].room.local_participant.publish_data(b"x")
    server.rooms.remove_participant(server.project_id, "room-1", "p1")
    for client in clients:
        await client.close()
    await eventually(lambda: server.rooms.stats()["peer_connections"] == 0)
    await eventually(lambda: server.rooms.stats()["sessions"] == 0)
    await eventually(lambda: server.rooms.stats()["tasks"] <= 1)  # a room's store write at most
    await eventually(lambda: len(_rtc_tasks()) <= len(before))
    assert server.rooms.stats()["participants"] == 0


def _remote(client: Client, identity: str) -> rtc.RemoteParticipant:
    for participant in client.room.remote_participants.values():
        if participant.identity == identity:
            return participant
    raise AssertionError(f"{client.identity} does not see {identity}")


def _rtc_tasks() -> list[asyncio.Task[object]]:
    """Tasks running aiortc, aioice or callboard code (not the SDK's or pytest's own)."""

    def ours(task: asyncio.Task[object]) -> bool:
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename if code else ""
        return any(part in filename for part in ("aiortc", "aioice", "callboard"))

    return [t for t in asyncio.all_tasks() if ours(t) and not t.done()]


class _Picky(NullObserver):
    """Refuses one identity (like a superseded agent attempt) and breaks on every join."""

    def admit(self, ctx: JoinContext) -> None:
        if ctx.participant.identity == "stale-agent":
            raise JoinRefused("job attempt 1 was superseded by attempt 2")

    def participant_joined(self, ctx: JoinContext) -> None:
        raise RuntimeError("observer bug")


async def test_the_observer_can_refuse_and_its_bugs_do_not_break_joins(server: RtcServer) -> None:
    server.rooms.observer = _Picky()
    alice = await connect(server, "alice")
    try:
        with pytest.raises(rtc.ConnectError, match="superseded"):
            await connect(server, "stale-agent")
        assert alice.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
        assert server.rooms.stats()["participants"] == 1
    finally:
        await alice.close()


async def test_a_room_made_by_a_join_is_stored_and_closes_after_its_departure_timeout(
    server: RtcServer,
) -> None:
    alice = await connect(server, "alice", "short-lived")
    await server.store.flush()
    stored = server.store.get_room(server.project_id, "short-lived")
    assert stored is not None and stored.creator_key == "devkey"
    assert stored.sid == await alice.room.sid
    await alice.close()
    await eventually(lambda: server.rooms.model.get_room(server.project_id, "short-lived") is None)
    await server.store.flush()
    assert server.store.get_room(server.project_id, "short-lived") is None
    assert server.rooms.stats()["rooms.finished"] == 1
