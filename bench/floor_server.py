"""The floor for `bench/dispatch.py`: the dispatch exchange on bare aiohttp, with no logic at all.

It speaks just enough of the same wire as callboard, with the same protobuf messages, so that the
serialisation and transport costs match and only callboard's own work is left in the difference:

    POST /twirp/livekit.AgentDispatchService/CreateDispatch  (binary CreateAgentDispatchRequest)
      -> AvailabilityRequest to one connected worker (round robin) on its /agent WebSocket
      <- AvailabilityResponse
      -> JobAssignment (with a pre-made token of a job token's size)
    <- AgentDispatch (binary protobuf), once the assignment is written to the socket

No authentication, no store, no matching, no timers, no explain trace. `GET /` answers `OK`.
Run: `python bench/floor_server.py --port P` (127.0.0.1 only); SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal

from aiohttp import WSMsgType, web
from livekit.protocol import agent as pb
from livekit.protocol import agent_dispatch as dpb
from livekit.protocol import models

DISPATCH_PATH = "/twirp/livekit.AgentDispatchService/CreateDispatch"
# About the size of the room-scoped job token callboard mints (header.payload.signature).
JOB_TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "x" * 538 + "." + "s" * 43


class Floor:
    """Connected workers and the availability answers awaited, by job id."""

    def __init__(self) -> None:
        self.workers: list[web.WebSocketResponse] = []
        self.answers: dict[str, asyncio.Future[pb.AvailabilityResponse]] = {}
        self._ids = itertools.count(1)
        self._turn = itertools.count()

    def next_worker(self) -> web.WebSocketResponse:
        if not self.workers:
            raise web.HTTPServiceUnavailable(text="no worker connected")
        return self.workers[next(self._turn) % len(self.workers)]

    def new_job(self, req: dpb.CreateAgentDispatchRequest) -> pb.Job:
        n = next(self._ids)
        return pb.Job(
            id=f"AJ_floor{n}",
            dispatch_id=f"AD_floor{n}",
            type=pb.JobType.JT_ROOM,
            room=models.Room(sid=f"RM_floor{n}", name=req.room),
            agent_name=req.agent_name,
            metadata=req.metadata,
        )


async def health(request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def create_dispatch(request: web.Request) -> web.Response:
    floor: Floor = request.app["floor"]
    req = dpb.CreateAgentDispatchRequest.FromString(await request.read())
    job = floor.new_job(req)
    ws = floor.next_worker()
    answer: asyncio.Future[pb.AvailabilityResponse] = asyncio.get_running_loop().create_future()
    floor.answers[job.id] = answer
    offer = pb.ServerMessage(availability=pb.AvailabilityRequest(job=job))
    await ws.send_bytes(offer.SerializeToString())
    await answer
    assignment = pb.ServerMessage(assignment=pb.JobAssignment(job=job, token=JOB_TOKEN, url=""))
    await ws.send_bytes(assignment.SerializeToString())
    reply = dpb.AgentDispatch(
        id=job.dispatch_id, agent_name=req.agent_name, room=req.room, metadata=req.metadata
    )
    return web.Response(body=reply.SerializeToString(), content_type="application/protobuf")


async def agent(request: web.Request) -> web.WebSocketResponse:
    floor: Floor = request.app["floor"]
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    registered = False
    try:
        async for raw in ws:
            if raw.type is not WSMsgType.BINARY:
                continue
            msg = pb.WorkerMessage.FromString(raw.data)
            which = msg.WhichOneof("message")
            if which == "register" and not registered:
                registered = True
                await ws.send_bytes(_registered(len(floor.workers)).SerializeToString())
                floor.workers.append(ws)
            elif which == "availability":
                answer = floor.answers.pop(msg.availability.job_id, None)
                if answer is not None and not answer.done():
                    answer.set_result(msg.availability)
    finally:
        if registered:
            floor.workers.remove(ws)
    return ws


def _registered(n: int) -> pb.ServerMessage:
    info = models.ServerInfo(edition=models.ServerInfo.Standard, version="floor", protocol=16,
                             node_id="ND_floor", agent_protocol=1)
    return pb.ServerMessage(register=pb.RegisterWorkerResponse(worker_id=f"AW_floor{n}",
                                                               server_info=info))


def create_app() -> web.Application:
    app = web.Application()
    app["floor"] = Floor()
    app.router.add_get("/", health)
    app.router.add_get("/agent", agent)
    app.router.add_post(DISPATCH_PATH, create_dispatch)
    return app


async def serve(port: int) -> None:
    runner = web.AppRunner(create_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    print(f"floor listening on http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
