"""A real `callboard server` process with real clients: a livekit-agents job joins its room.

The job is dispatched with the real livekit-api client, its worker is a real livekit-agents
`AgentServer` process (tests/support/rtc_agent.py) whose entrypoint calls `ctx.connect()`, and a
human participant is the real rtc SDK in this process. Also: SIGTERM tells participants the
server is shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from livekit import rtc
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

from tests.support.clients import lk_api
from tests.support.rtc import Client, eventually, needs_netns, token
from tests.support.server import DEV_ADMIN, DEV_KEY, DEV_SECRET, ServerProcess

pytestmark = needs_netns
WORKER = Path(__file__).parents[1] / "support" / "rtc_agent.py"


@contextlib.contextmanager
def agent_worker(server: ServerProcess, out: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "PYTEST_"))}
    env |= {
        "LIVEKIT_URL": server.ws_url,
        "LIVEKIT_API_KEY": DEV_KEY,
        "LIVEKIT_API_SECRET": DEV_SECRET,
    }
    with open(out.with_suffix(".log"), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), "--name", name, "--out", str(out)],
            env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def events(out: Path, kind: str) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    lines = [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]
    return [e for e in lines if e["event"] == kind]


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
    with agent_worker(server, out, "room-agent"):
        await eventually(lambda: events(out, "registered"), timeout_s=45)
        await human.room.connect(server.ws_url, token("human", "agent-room"))
        async with lk_api(server) as lk:
            await lk.agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name="room-agent", room="agent-room")
            )
        await eventually(lambda: events(out, "connected"), timeout_s=20)
        (connected,) = events(out, "connected")
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
