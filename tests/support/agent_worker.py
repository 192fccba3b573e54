"""A real livekit-agents worker, run as its own process by `tests.support.agents`.

    python tests/support/agent_worker.py --name NAME --out JOBS.jsonl [--load 0.4] [--hold DIR]
                                         [--decline N]

LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET come from the environment (as for any agent).
Every fact the tests need goes to `--out` as one JSON line: `{"event": "registered", "worker_id",
"http_port"}` each time the SDK registers (again after a reconnect; the port is the SDK's health
server, whose `/worker` tells its active job count), `{"event": "job", ...}` when the entrypoint
runs (job id, room, agent name, metadata, dispatch id). The entrypoint never calls `ctx.connect()`
(rooms come in a later issue); it ends its job with `ctx.shutdown()` — at once, or with `--hold DIR`
only once the file `DIR/<job id>` (or `DIR/all`) exists, so a test can keep a job running. With
`--decline N` it declines its first N job requests (available=false, not terminate; each is
recorded as `{"event": "declined", "job_id"}`).
The SDK's own log goes to `--log`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for `tests.support`

# first: it sets the warnings filters before livekit.agents is imported
from tests.support.worker_script import record, run_until_signalled, thread_server  # noqa: I001

from livekit.agents import AgentServer, JobContext, JobRequest

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class _ExtrasFormatter(logging.Formatter):
    """livekit-agents puts the useful part (error, job id, retry count) in `extra=`: show it."""

    def format(self, rec: logging.LogRecord) -> str:
        text = super().format(rec)
        extras = {k: v for k, v in vars(rec).items() if k not in _STD_ATTRS}
        return f"{text} {extras}" if extras else text


def build(args: argparse.Namespace) -> AgentServer:
    out = Path(args.out)
    load: float | None = args.load
    server = thread_server(load_fnc=(lambda: load) if load is not None else None)

    declines_left = [args.decline]

    async def on_request(req: JobRequest) -> None:
        if declines_left[0] > 0:
            declines_left[0] -= 1
            record(out, event="declined", job_id=req.id)
            await req.reject(terminate=False)  # not now: the server may ask again
        else:
            await req.accept()

    @server.rtc_session(agent_name=args.name, on_request=on_request if args.decline else None)
    async def entrypoint(ctx: JobContext) -> None:
        job = ctx.job
        record(out, event="job", job_id=job.id, room=job.room.name, agent_name=job.agent_name,
               metadata=job.metadata, dispatch_id=job.dispatch_id)
        if args.hold:
            hold = Path(args.hold)
            while not (hold / job.id).exists() and not (hold / "all").exists():
                await asyncio.sleep(0.05)
            record(out, event="released", job_id=job.id)
        ctx.shutdown(reason="test entrypoint done")

    def on_registered(worker_id: str, server_info: Any) -> None:
        record(out, event="registered", worker_id=worker_id,
               http_port=server.worker_info.http_port)

    server.on("worker_registered", on_registered)
    return server


async def main(args: argparse.Namespace) -> None:
    def release_held() -> None:
        Path(args.hold, "all").touch()  # let held jobs end so the SDK can close quickly

    await run_until_signalled(build(args), release_held if args.hold else None)


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="", help="agent_name ('' = automatic dispatch)")
    parser.add_argument("--out", required=True, help="JSON-lines file of registrations and jobs")
    parser.add_argument("--log", help="the SDK's log file")
    parser.add_argument("--load", type=float, help="pin load_fnc to this value")
    parser.add_argument("--hold", help="keep each job running until DIR/<job id> or DIR/all exists")
    parser.add_argument("--decline", type=int, default=0, help="reject the first N job requests")
    args = parser.parse_args()
    handler = logging.FileHandler(args.log) if args.log else logging.StreamHandler()
    handler.setFormatter(_ExtrasFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG, handlers=[handler])
    for noisy in ("asyncio", "aiohttp", "urllib3", "websockets"):
        logging.getLogger(noisy).setLevel(logging.INFO)
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
