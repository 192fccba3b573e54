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
import json
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

warnings.simplefilter("ignore", DeprecationWarning)
try:
    from jwt.warnings import InsecureKeyLengthWarning

    warnings.simplefilter("ignore", InsecureKeyLengthWarning)
except ImportError:
    pass

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from livekit import rtc  # noqa: E402
from livekit.agents import AgentServer, JobContext, JobExecutorType  # noqa: E402

from tests.support.audio import Ear, Tone, analyse  # noqa: E402

_lock = threading.Lock()


def record(out: Path, **fields: Any) -> None:
    line = json.dumps({**fields, "pid": os.getpid(), "at": time.time()}) + "\n"
    with _lock, open(out, "a") as fh:
        fh.write(line)


def build(name: str, out: Path, tone_hz: float) -> AgentServer:
    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD, num_idle_processes=0, host="127.0.0.1", port=0
    )

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
    server = build(args.name, Path(args.out), args.tone_hz)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    run = asyncio.create_task(server.run(devmode=True))
    stop = asyncio.create_task(stopping.wait())
    await asyncio.wait({run, stop}, return_when=asyncio.FIRST_COMPLETED)
    if run.done():
        run.result()
        return
    try:
        await asyncio.wait_for(server.aclose(), timeout=5)
    finally:
        run.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tone-hz", type=float, default=660.0)
    asyncio.run(main(parser.parse_args()))
