"""Room and participant webhooks with real SDK joins (run inside the test network namespace).

A real `callboard server` process posts to a real aiohttp receiver that verifies every delivery
with livekit-api's WebhookReceiver.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from livekit.protocol import models
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration

from tests.integration.test_webhooks import Receiver, add_webhook, listening
from tests.support.clients import light_worker
from tests.support.rtc import Client, eventually, needs_netns, token
from tests.support.server import ServerProcess

pytestmark = needs_netns


@pytest.fixture
def quick_rooms(tmp_path: Path) -> Iterator[ServerProcess]:
    """Rooms close a second after their last participant leaves."""
    proc = ServerProcess(db=tmp_path / "rooms.db",
                         env={"CALLBOARD_ROOM_DEPARTURE_TIMEOUT_S": "1"})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_a_rooms_life_arrives_in_order(
    quick_rooms: ServerProcess, http: aiohttp.ClientSession
) -> None:
    server = quick_rooms
    async with listening(Receiver()) as receiver:
        add_webhook(server, receiver.url)
        worker = await light_worker(http, server, "bot")
        config = RoomConfiguration(agents=[RoomAgentDispatch(agent_name="bot")])
        alice, bob = Client("alice"), Client("bob")
        await alice.room.connect(server.ws_url, token("alice", room_config=config))
        await worker.next("assignment")
        await bob.room.connect(server.ws_url, token("bob", name="Bob", kind="sip"))
        await eventually(lambda: alice.remote_identities == {"bob"})
        await bob.close()
        await eventually(lambda: alice.left == ["bob"])
        await alice.close()
        await eventually(lambda: "room_finished" in receiver.kinds(), timeout_s=15)
        await worker.close()
    assert receiver.problems == []
    assert [(e.event, e.participant.identity) for e in receiver.events] == [
        ("room_started", ""),
        ("participant_joined", "alice"),
        ("agent_job_started", ""),
        ("participant_joined", "bob"),
        ("participant_left", "bob"),
        ("participant_left", "alice"),
        ("agent_job_ended", ""),
        ("room_finished", ""),
    ]
    started = receiver.events[0]
    assert all(e.room.sid == started.room.sid and e.room.name == "room-1" for e in receiver.events)
    joined_bob = receiver.events[3]
    assert joined_bob.participant.name == "Bob"
    assert joined_bob.participant.kind == models.ParticipantInfo.SIP
    assert joined_bob.participant.sid == receiver.events[4].participant.sid
    assert receiver.events[4].participant.disconnect_reason == models.CLIENT_INITIATED
    assert receiver.events[-1].room_end_reason == models.ROOM_END_IDLE_TIMEOUT
    assert receiver.events[6].job.state.error.startswith("room room-1 closed")
