"""A real livekit-agents worker whose jobs join their room, run as its own process by room tests.

    python tests/support/rtc_agent.py --name NAME --out EVENTS.jsonl

LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET come from the environment. Each job calls
`ctx.connect()` (the real SDK path: /rtc/v1 + WebRTC), answers the RPC method `whoami` with its
identity, echoes every data packet back to its sender with the topic `echo`, and ends its job
(`ctx.shutdown()`) when it receives the payload `bye`. Facts go to `--out` as JSON lines:
`registered`, `connected` (identity, room sid, who else is there), `rpc`, `bye`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for `tests.support`

# first: it sets the warnings filters before livekit.agents is imported
from tests.support.worker_script import record, run_until_signalled, thread_server  # noqa: I001

from livekit import rtc
from livekit.agents import AgentServer, JobContext


def build(name: str, out: Path) -> AgentServer:
    server = thread_server()

    @server.rtc_session(agent_name=name)
    async def entrypoint(ctx: JobContext) -> None:
        done = asyncio.Event()
        room = ctx.room
        echoes: set[asyncio.Future[None]] = set()

        def on_data(packet: rtc.DataPacket) -> None:
            sender = packet.participant.identity if packet.participant else ""
            if packet.data == b"bye":
                record(out, event="bye", sender=sender)
                done.set()
                return
            echo = asyncio.ensure_future(
                room.local_participant.publish_data(
                    packet.data, destination_identities=[sender], topic="echo"
                )
            )
            echoes.add(echo)
            echo.add_done_callback(echoes.discard)

        async def whoami(data: rtc.RpcInvocationData) -> str:
            record(out, event="rpc", caller=data.caller_identity, payload=data.payload)
            me = room.local_participant
            return json.dumps({"identity": me.identity, "attributes": dict(me.attributes)})

        room.on("data_received", on_data)
        await ctx.connect()
        room.local_participant.register_rpc_method("whoami", whoami)
        record(
            out,
            event="connected",
            job_id=ctx.job.id,
            identity=room.local_participant.identity,
            room=room.name,
            room_sid=await room.sid,
            remotes=sorted(p.identity for p in room.remote_participants.values()),
        )
        await done.wait()
        ctx.shutdown(reason="bye")

    server.on(
        "worker_registered",
        lambda worker_id, info: record(out, event="registered", worker_id=worker_id),
    )
    return server


async def main(args: argparse.Namespace) -> None:
    await run_until_signalled(build(args.name, Path(args.out)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True)
    asyncio.run(main(parser.parse_args()))
