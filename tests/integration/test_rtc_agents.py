"""A real `callboard server` process with real clients: a livekit-agents job joins its room.

The job is dispatched with the real livekit-api client, its worker is a real livekit-agents
`AgentServer` process (tests/support/rtc_agent.py) whose entrypoint calls `ctx.connect()`, and a
human participant is the real rtc SDK in this process. Also: SIGTERM tells participants the
server is shutting down.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
from livekit import rtc
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

from tests.support.clients import lk_api
from tests.support.rtc import Client, eventually, needs_netns, token
from tests.support.server import DEV_ADMIN, ServerProcess
from tests.support.worker_procs import read_records, worker_process

pytestmark = needs_netns
WORKER = Path(__file__).parents[1] / "support" / "rtc_agent.py"


async def stats(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {DEV_ADMIN}"}
    async with http.get(f"{server.http_url}/callboard/v1/rtc/stats", headers=headers) as resp:
        body: dict[str, int] = await resp.json()
        return body


async def test_a_livekit_agents_job_joins_its_room_and_answers(
    server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    out = tmp_path / "agent.jsonl"
    human = Client("human")
    with worker_process(server, WORKER, "room-agent", out):
        await eventually(lambda: read_records(out, "registered"), timeout_s=45)
        await human.room.connect(server.ws_url, token("human", "agent-room"))
        async with lk_api(server) as lk:
            await lk.agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name="room-agent", room="agent-room")
            )
        await eventually(lambda: read_records(out, "connected"), timeout_s=20)
        (connected,) = read_records(out, "connected")
        agent_id = connected["identity"]
        assert agent_id == f"agent-{connected['job_id']}"
        assert connected["remotes"] == ["human"] and connected["room_sid"] == await human.room.sid

        await eventually(lambda: agent_id in human.remote_identities)
        agent = next(p for p in human.room.remote_participants.values() if p.identity == agent_id)
        assert agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        assert agent.attributes.get("lk.agent_name") == "room-agent"

        answer = await human.room.local_participant.perform_rpc(
            destination_identity=agent_id, method="whoami", payload="hi", response_timeout=5
        )
        assert json.loads(answer)["identity"] == agent_id
        await human.room.local_participant.publish_data(b"ping", topic="t")
        await eventually(lambda: [(p.data, p.topic) for p in human.data] == [(b"ping", "echo")])

        await human.room.local_participant.publish_data(b"bye")
        await eventually(lambda: human.left == [agent_id], timeout_s=10)
        assert (await stats(http, server))["participants"] == 1
    await human.close()
    await eventually(lambda: _zero_peers(http, server), timeout_s=5)


async def _zero_peers(http: aiohttp.ClientSession, server: ServerProcess) -> bool:
    return (await stats(http, server))["peer_connections"] == 0


async def test_sigterm_tells_participants_the_server_is_going_away(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    alice, bob = Client("alice"), Client("bob")
    await alice.room.connect(server.ws_url, token("alice"))
    await bob.room.connect(server.ws_url, token("bob"))
    await eventually(lambda: alice.remote_identities == {"bob"})
    rc = await asyncio.to_thread(server.stop)
    assert rc == 0
    await eventually(lambda: alice.disconnected and bob.disconnected)
    assert alice.disconnected == bob.disconnected == [rtc.DisconnectReason.SERVER_SHUTDOWN]
