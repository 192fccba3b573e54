"""A livekit-agents agent in a voice call: it hears the caller's 440 Hz tone, the caller hears its
660 Hz one — the real `callboard server` process, the real livekit-api dispatch, a real
livekit-agents worker process (tests/support/audio_agent.py) and the real rtc SDK as the caller.
"""

from __future__ import annotations

from pathlib import Path

from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

from tests.support.audio import Ear, Tone, assert_tone, sent_rms
from tests.support.clients import lk_api
from tests.support.rtc import Client, eventually, needs_netns, token
from tests.support.server import ServerProcess
from tests.support.worker_procs import read_records, worker_process

pytestmark = needs_netns
WORKER = Path(__file__).parents[1] / "support" / "audio_agent.py"


async def test_an_agent_hears_the_caller_and_the_caller_hears_the_agent(
    server: ServerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "agent.jsonl"
    caller = Client("caller")
    ear = Ear(caller.room)
    tone = Tone(caller.room, frequency_hz=440.0)
    with worker_process(server, WORKER, "voice-agent", out, extra_args=["--tone-hz", "660"]):
        await eventually(lambda: read_records(out, "registered"), timeout_s=45)
        try:
            await caller.room.connect(server.ws_url, token("caller", "voice-room"))
            await tone.start()
            async with lk_api(server) as lk:
                await lk.agent_dispatch.create_dispatch(
                    CreateAgentDispatchRequest(agent_name="voice-agent", room="voice-room")
                )
            await eventually(lambda: read_records(out, "connected"), timeout_s=20)
            (connected,) = read_records(out, "connected")
            agent_id = connected["identity"]
            assert_tone(await ear.listen_for(agent_id, 1.0, timeout_s=20), 660.0)

            await eventually(lambda: read_records(out, "heard"), timeout_s=20)
            (heard,) = read_records(out, "heard")
            assert heard["caller"] == "caller"
            assert abs(heard["peak_hz"] - 440.0) <= 2.0
            assert abs(heard["rms"] - sent_rms()) <= 0.05 * sent_rms()
            await caller.room.local_participant.publish_data(b"bye")
            await eventually(lambda: agent_id not in caller.remote_identities, timeout_s=10)
        finally:
            await tone.stop()
            await ear.close()
            await caller.close()
