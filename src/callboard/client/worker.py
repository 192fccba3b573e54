"""The worker side of /agent, sans-IO: frames in, decisions and frames out.

`WorkerProtocol` knows the message flow (register, answer availability, report status) and nothing
about sockets; `LightWorker` drives it over an aiohttp WebSocket. Tests and `bench/` use them to put
many protocol-level workers against a real server cheaply.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from livekit.protocol import agent as pb

from callboard.protocol import tokens

Decide = Callable[[pb.Job], bool]


@dataclass
class WorkerProtocol:
    agent_name: str = ""
    namespace: str = ""
    version: str = "light-1"
    decide: Decide = field(default=lambda job: True)
    worker_id: str = ""
    assignments: list[pb.JobAssignment] = field(default_factory=list)
    terminations: list[str] = field(default_factory=list)
    offers: list[pb.AvailabilityRequest] = field(default_factory=list)

    def register(self) -> pb.WorkerMessage:
        msg = pb.WorkerMessage()
        msg.register.agent_name = self.agent_name
        msg.register.namespace = self.namespace
        msg.register.version = self.version
        return msg

    def status(self, load: float, *, full: bool = False, job_count: int = 0) -> pb.WorkerMessage:
        status = pb.WorkerStatus.WS_FULL if full else pb.WorkerStatus.WS_AVAILABLE
        return pb.WorkerMessage(
            update_worker=pb.UpdateWorkerStatus(status=status, load=load, job_count=job_count)
        )

    def job_update(self, job_id: str, status: int, error: str = "") -> pb.WorkerMessage:
        return pb.WorkerMessage(
            update_job=pb.UpdateJobStatus(
                job_id=job_id,
                status=status,  # type: ignore[arg-type]
                error=error,
            )
        )

    def migrate(self, job_ids: list[str]) -> pb.WorkerMessage:
        return pb.WorkerMessage(migrate_job=pb.MigrateJobRequest(job_ids=job_ids))

    def receive(self, msg: pb.ServerMessage) -> list[pb.WorkerMessage]:
        """Handle one server message; return what to send back."""
        which = msg.WhichOneof("message")
        if which == "register":
            self.worker_id = msg.register.worker_id
        elif which == "availability":
            self.offers.append(msg.availability)
            return [self._answer(msg.availability.job)]
        elif which == "assignment":
            self.assignments.append(msg.assignment)
            return [self.job_update(msg.assignment.job.id, pb.JobStatus.JS_RUNNING)]
        elif which == "termination":
            self.terminations.append(msg.termination.job_id)
        return []

    def _answer(self, job: pb.Job) -> pb.WorkerMessage:
        msg = pb.WorkerMessage()
        msg.availability.job_id = job.id
        msg.availability.available = self.decide(job)
        if msg.availability.available:
            msg.availability.participant_identity = f"light-{job.id}"
        return msg


def worker_token(api_key: str, api_secret: str, ttl_s: int = 6 * 3600) -> str:
    import time

    now = int(time.time())
    return tokens.sign(
        {"iss": api_key, "sub": "", "nbf": now, "exp": now + ttl_s, "video": {"agent": True}},
        api_secret,
    )


class LightWorker:
    """Drives a `WorkerProtocol` over a real WebSocket to `<url>/agent`."""

    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        proto: WorkerProtocol,
        session: aiohttp.ClientSession,
    ) -> None:
        self.url = url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://")
        self.api_key = api_key
        self.api_secret = api_secret
        self.proto = proto
        self.session = session
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.events: asyncio.Queue[pb.ServerMessage] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.close_code: int | None = None

    async def connect(self, load: float = 0.0) -> str:
        headers = {"Authorization": f"Bearer {worker_token(self.api_key, self.api_secret)}"}
        self.ws = await self.session.ws_connect(
            f"{self.url}/agent", headers=headers, max_msg_size=0
        )
        await self.send(self.proto.register())
        first = pb.ServerMessage()
        first.ParseFromString(await self.ws.receive_bytes(timeout=10))
        self.proto.receive(first)
        await self.send(self.proto.status(load))
        self._reader = asyncio.create_task(self._read())
        return self.proto.worker_id

    async def send(self, msg: pb.WorkerMessage) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(msg.SerializeToString())

    async def _read(self) -> None:
        assert self.ws is not None
        async for raw in self.ws:
            if raw.type is not aiohttp.WSMsgType.BINARY:
                continue
            msg = pb.ServerMessage()
            msg.ParseFromString(raw.data)
            for reply in self.proto.receive(msg):
                await self.send(reply)
            self.events.put_nowait(msg)
        self.close_code = self.ws.close_code

    async def next(self, kind: str, timeout: float = 10.0) -> pb.ServerMessage:
        """The next server message of this kind (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.events.get()
                if msg.WhichOneof("message") == kind:
                    return msg

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
