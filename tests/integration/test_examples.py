"""examples/echo_agent.py as a developer runs it: `python examples/echo_agent.py dev|start`.

livekit-agents' own CLI (`cli.run_app`, its default process executor: each job in a process of its
own, so the first call waits for one), a real `callboard server`, and a real `callboard call`.
`console` is not tested: it needs PortAudio and an audio device (see the example's docstring).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.calls import place_call
from tests.support.cli import creds
from tests.support.clients import project_get, wait_for
from tests.support.echo_agents import EchoAgent, EchoFleet
from tests.support.rtc import needs_netns
from tests.support.server import DEV_KEY, DEV_SECRET, ServerProcess, free_port

pytestmark = needs_netns
EXAMPLE = Path(__file__).parents[2] / "examples" / "echo_agent.py"


@pytest.mark.parametrize("mode", ["dev", "start"])
async def test_the_example_runs_in_dev_and_start_and_answers_a_call(
    mode: str, server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    agent = EchoAgent("demo", DEV_KEY, DEV_SECRET, tmp_path / "events.jsonl",
                      tmp_path / "agent.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "PYTEST_"))}
    env |= {"LIVEKIT_URL": server.ws_url, "LIVEKIT_API_KEY": DEV_KEY,
            "LIVEKIT_API_SECRET": DEV_SECRET, "LIVEKIT_AGENT_SUFFIX": "demo",
            "ECHO_AGENT_EVENTS": str(agent.events), "AGENT_HTTP_PORT": str(free_port())}
    with open(agent.log_path, "ab") as log:
        agent.proc = subprocess.Popen([sys.executable, str(EXAMPLE), mode], env=env,
                                      stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    fleet = EchoFleet(server, tmp_path, [agent])
    try:
        await fleet.wait_registered(http, timeout_s=60)
        if mode == "start":
            await _calm(http, server, agent.worker_id)
        result = place_call(tmp_path, *creds(server), "--message", "hi", "--expect-reply",
                            "--timeout", "60", suffix="demo", timeout_s=120)
    finally:
        if agent.proc.poll() is None:
            agent.proc.send_signal(signal.SIGINT)
        agent.stop(timeout_s=15)
    assert result.rc == 0, result.describe() + agent.describe()
    assert result.body["answered_by"]["worker_id"] == agent.worker_id
    assert result.body["answered_by"]["agent_name"] == "echo-agent-demo"
    assert result.body["replies"][0]["text"] == "echo: hi"
    assert [j["room"] for j in agent.jobs()] == [result.body["room"]]


async def _calm(http: aiohttp.ClientSession, server: ServerProcess, worker_id: str) -> None:
    """In `start` mode livekit-agents declines offers while the machine's CPU is above its load
    threshold (0.7), and its process pool starting up right after it registers is such a moment
    on two busy cores; callboard then queues the job until the worker reports FULL and back or
    another worker comes. Call once a periodic status report (every 2.5 s) shows it calm."""
    await asyncio.sleep(3)

    async def calm() -> bool:
        _, body = await project_get(http, server, "/workers")
        return any(w["id"] == worker_id and w["load"] < 0.5 for w in body["workers"])

    await wait_for(calm, timeout_s=60, interval_s=0.5)
