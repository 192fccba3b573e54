"""A real livekit-agents worker whose job hears the caller's tone and answers with its own.

    python tests/support/audio_agent.py --name NAME --out EVENTS.jsonl [--tone-hz 660]

LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET come from the environment. Each job calls
`ctx.connect()` (auto-subscribe), publishes a sine at `--tone-hz`, and records what it hears from
the first remote audio track: `heard` with the FFT peak (Hz) and RMS of one second of sound. The
job ends (`ctx.shutdown()`) when it receives the data payload `bye`. Facts go to `--out` as JSON
lines: `registered`, `connected`, `published`, `heard`, `bye`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for `tests.support`

# first: it sets the warnings filters before livekit.agents is imported
from tests.support.worker_script import record, run_until_signalled, thread_server  # noqa: I001

from livekit import rtc
from livekit.agents import AgentServer, JobContext

from tests.support.audio import Ear, Tone, analyse


def build(name: str, out: Path, tone_hz: float) -> AgentServer:
    server = thread_server()

    @server.rtc_session(agent_name=name)
    async def entrypoint(ctx: JobContext) -> None:
        done = asyncio.Event()
        room = ctx.room
        ear = Ear(room)

        def on_data(packet: rtc.DataPacket) -> None:
            if packet.data == b"bye":
                record(out, event="bye")
                done.set()

        room.on("data_received", on_data)
        await ctx.connect()
        record(out, event="connected", identity=room.local_participant.identity)
        tone = Tone(room, frequency_hz=tone_hz, name="agent-voice")
        publication = await tone.start()
        record(out, event="published", track_sid=publication.sid)
        caller = await _first_caller(ear)
        samples = await ear.listen_for(caller, 1.0, timeout_s=20)
        peak_hz, rms = analyse(samples)
        record(out, event="heard", caller=caller, peak_hz=peak_hz, rms=rms)
        await done.wait()
        await tone.stop()
        await ear.close()
        ctx.shutdown(reason="bye")

    server.on(
        "worker_registered",
        lambda worker_id, info: record(out, event="registered", worker_id=worker_id),
    )
    return server


async def _first_caller(ear: Ear) -> str:
    while not ear.subscribed:
        await asyncio.sleep(0.05)
    return ear.subscribed[0][0]


async def main(args: argparse.Namespace) -> None:
    await run_until_signalled(build(args.name, Path(args.out), args.tone_hz))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tone-hz", type=float, default=660.0)
    asyncio.run(main(parser.parse_args()))
