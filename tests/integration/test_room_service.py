"""RoomService over Twirp (the real livekit-api client) on rooms the real rtc SDK is in.

A real `callboard server` process; participants are `livekit.rtc.Room` clients over /rtc/v1 +
WebRTC, so these run inside the test network namespace (scripts/test.sh).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from livekit import api, rtc
from livekit.protocol import models
from livekit.protocol import room as room_pb
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

from tests.support.clients import light_worker, lk_api
from tests.support.rtc import Client, eventually, needs_netns, token
from tests.support.server import DEV_KEY, DEV_SECRET, ServerProcess

pytestmark = needs_netns


async def join(server: ServerProcess, identity: str, room: str = "room-1", **kw: object) -> Client:
    client = Client(identity)
    await client.room.connect(server.ws_url, token(identity, room, **kw))  # type: ignore[arg-type]
    return client


@pytest.fixture
async def pair(server: ServerProcess) -> AsyncIterator[tuple[Client, Client]]:
    alice = await join(server, "alice")
    bob = await join(server, "bob")
    await eventually(lambda: alice.remote_identities == {"bob"})
    await eventually(lambda: bob.remote_identities == {"alice"})
    try:
        yield alice, bob
    finally:
        await alice.close()
        await bob.close()


async def twirp_error(call: object) -> api.TwirpError:
    with pytest.raises(api.TwirpError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_list_and_get_participants(
    server: ServerProcess, pair: tuple[Client, Client]
) -> None:
    alice, _ = pair
    async with lk_api(server) as lk:
        listed = await lk.room.list_participants(room_pb.ListParticipantsRequest(room="room-1"))
        assert sorted(p.identity for p in listed.participants) == ["alice", "bob"]
        got = await lk.room.get_participant(
            room_pb.RoomParticipantIdentity(room="room-1", identity="alice")
        )
        assert got.sid == alice.room.local_participant.sid
        assert got.kind == models.ParticipantInfo.STANDARD
        missing = await twirp_error(lk.room.get_participant(
            room_pb.RoomParticipantIdentity(room="room-1", identity="nobody")))
        assert missing.code == "not_found" and missing.status == 404
        no_room = await twirp_error(
            lk.room.list_participants(room_pb.ListParticipantsRequest(room="no-such-room"))
        )
        assert no_room.code == "not_found"
        rooms = await lk.room.list_rooms(room_pb.ListRoomsRequest(names=["room-1"]))
        assert [r.num_participants for r in rooms.rooms] == [2]


async def test_remove_participant_kicks(server: ServerProcess, pair: tuple[Client, Client]) -> None:
    alice, bob = pair
    async with lk_api(server) as lk:
        await lk.room.remove_participant(
            room_pb.RoomParticipantIdentity(room="room-1", identity="bob")
        )
        await eventually(lambda: bob.disconnected and alice.left == ["bob"])
        assert bob.disconnected == [rtc.DisconnectReason.PARTICIPANT_REMOVED]
        again = await twirp_error(lk.room.remove_participant(
            room_pb.RoomParticipantIdentity(room="room-1", identity="bob")))
        assert again.code == "not_found"


async def test_update_participant_is_seen_by_the_others(
    server: ServerProcess, pair: tuple[Client, Client]
) -> None:
    alice, _ = pair
    async with lk_api(server) as lk:
        info = await lk.room.update_participant(room_pb.UpdateParticipantRequest(
            room="room-1", identity="bob", metadata='{"vip": true}', name="Robert",
            attributes={"role": "host"},
        ))
        assert (info.name, info.metadata, dict(info.attributes)) == (
            "Robert", '{"vip": true}', {"role": "host"})
        await eventually(lambda: ("bob", {"role": "host"}) in alice.attributes)
        bob_there = next(iter(alice.room.remote_participants.values()))
        await eventually(lambda: bob_there.name == "Robert")
        assert bob_there.metadata == '{"vip": true}'
        cleared = await lk.room.update_participant(room_pb.UpdateParticipantRequest(
            room="room-1", identity="bob", attributes={"role": ""}))
        assert dict(cleared.attributes) == {} and cleared.name == "Robert"  # empty = unchanged
        too_big = await twirp_error(lk.room.update_participant(room_pb.UpdateParticipantRequest(
            room="room-1", identity="bob", attributes={"x": "y" * (65 * 1024)})))
        assert too_big.code == "invalid_argument"


async def test_send_data_to_everyone_or_to_some(
    server: ServerProcess, pair: tuple[Client, Client]
) -> None:
    alice, bob = pair
    async with lk_api(server) as lk:
        await lk.room.send_data(room_pb.SendDataRequest(
            room="room-1", data=b"all", kind=models.DataPacket.RELIABLE, topic="news"))
        await eventually(lambda: [p.data for p in alice.data + bob.data] == [b"all", b"all"])
        assert alice.data[0].topic == "news" and alice.data[0].participant is None
        await lk.room.send_data(room_pb.SendDataRequest(
            room="room-1", data=b"just-bob", kind=models.DataPacket.LOSSY,
            destination_identities=["bob", "ghost"]))
        bob_sid = bob.room.local_participant.sid
        await lk.room.send_data(room_pb.SendDataRequest(
            room="room-1", data=b"by-sid", destination_sids=[bob_sid]))
        await eventually(lambda: [p.data for p in bob.data] == [b"all", b"just-bob", b"by-sid"])
        assert [p.data for p in alice.data] == [b"all"]
        huge = await twirp_error(lk.room.send_data(room_pb.SendDataRequest(
            room="room-1", data=b"x" * (16 * 1024), kind=models.DataPacket.LOSSY)))
        assert huge.code == "invalid_argument"


async def test_update_room_metadata_reaches_the_participants(
    server: ServerProcess, pair: tuple[Client, Client]
) -> None:
    alice, bob = pair
    async with lk_api(server) as lk:
        room = await lk.room.update_room_metadata(
            room_pb.UpdateRoomMetadataRequest(room="room-1", metadata="agenda")
        )
        assert room.name == "room-1" and room.metadata == "agenda" and room.num_participants == 2
        await eventually(lambda: alice.room.metadata == "agenda" == bob.room.metadata)
        listed = await lk.room.list_rooms(room_pb.ListRoomsRequest(names=["room-1"]))
        assert listed.rooms[0].metadata == "agenda"
        unknown = await twirp_error(lk.room.update_room_metadata(
            room_pb.UpdateRoomMetadataRequest(room="nope", metadata="x")))
        assert unknown.code == "not_found"


async def test_delete_room_disconnects_everyone_and_ends_its_jobs(
    server: ServerProcess, pair: tuple[Client, Client], http: aiohttp.ClientSession
) -> None:
    alice, bob = pair
    worker = await light_worker(http, server, "bot")
    async with lk_api(server) as lk:
        await lk.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="bot", room="room-1")
        )
        job_id = (await worker.next("assignment")).assignment.job.id
        await lk.room.delete_room(room_pb.DeleteRoomRequest(room="room-1"))
        assert (await worker.next("termination")).termination.job_id == job_id
        await eventually(lambda: alice.disconnected and bob.disconnected)
        assert alice.disconnected == bob.disconnected == [rtc.DisconnectReason.ROOM_DELETED]
        assert (await lk.room.list_rooms(room_pb.ListRoomsRequest())).rooms == []
        assert await lk.agent_dispatch.list_dispatch("room-1") == []
        gone = await twirp_error(lk.room.delete_room(room_pb.DeleteRoomRequest(room="room-1")))
        assert gone.code == "not_found"
    await worker.close()


async def test_a_room_made_by_create_room_is_live_and_can_be_joined(
    server: ServerProcess,
) -> None:
    async with lk_api(server) as lk:
        made = await lk.room.create_room(room_pb.CreateRoomRequest(name="made", metadata="m"))
        assert made.sid.startswith("RM_") and made.num_participants == 0
        assert (await lk.room.list_participants(
            room_pb.ListParticipantsRequest(room="made"))).participants == []
        carol = await join(server, "carol", "made")
        assert await carol.room.sid == made.sid and carol.room.metadata == "m"
        listed = await lk.room.list_participants(room_pb.ListParticipantsRequest(room="made"))
        assert [p.identity for p in listed.participants] == ["carol"]
        await carol.close()


@pytest.mark.parametrize(
    ("grants", "room"),
    [({"room_list": True}, ""), ({"room_admin": True, "room": "other"}, "other")],
)
async def test_participant_methods_need_room_admin_for_that_room(
    server: ServerProcess, pair: tuple[Client, Client], grants: dict[str, Any], room: str
) -> None:
    bearer = api.AccessToken(DEV_KEY, DEV_SECRET).with_grants(api.VideoGrants(**grants)).to_jwt()
    headers = {"Authorization": f"Bearer {bearer}"}
    url = f"{server.http_url}/twirp/livekit.RoomService/RemoveParticipant"
    async with aiohttp.ClientSession() as http:
        body = {"room": "room-1", "identity": "bob"}
        async with http.post(url, json=body, headers=headers) as resp:
            assert resp.status == 403
            assert (await resp.json())["code"] == "permission_denied"
    assert {p for p in pair[0].remote_identities} == {"bob"}
