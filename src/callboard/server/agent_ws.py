"""`/agent`: the worker WebSocket (livekit-wire §1).

Auth is checked before the upgrade so a bad token gets an HTTP status and a body that says why (the
SDK retries for two minutes; the reason must be in our log at once). After the upgrade, a protocol
violation closes the connection with a close code and a reason, is logged once, and touches nothing
else: the worker's jobs go through the same grace window as any dropped connection.

Keep-alive is ours, not aiohttp's `heartbeat`: that one re-arms a timer through a loop callback for
every frame received, twice per dispatch; here a frame only stamps its connection, and one sweep per
half interval pings the quiet ones and cuts the silent ones (`keep_alive`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Final, cast

from aiohttp import WSMessage, WSMsgType, web
from livekit.protocol import agent as pb

from callboard.dispatch.model import (
    AvailabilityAnswered,
    JobsMigrated,
    JobStatusReported,
    JobType,
    WorkerGone,
    WorkerInfo,
    WorkerRegistered,
    WorkerStatus,
    WorkerStatusChanged,
)
from callboard.protocol import convert, ids
from callboard.protocol.errors import (
    WS_GOING_AWAY,
    WS_MESSAGE_TOO_BIG,
    WS_NORMAL,
    WS_POLICY_VIOLATION,
    ApiError,
    ProtocolViolation,
)
from callboard.protocol.frames import (
    MAX_FRAME_BYTES,
    Format,
    decode_worker_message,
    encode_server_message,
)
from callboard.server.auth import Caller, authenticate, request_token
from callboard.server.hub import Hub

log = logging.getLogger("callboard.agent_ws")

# Protobuf field names of ParticipantPermission kept for the job token.
_PERMISSIONS = ("can_publish", "can_subscribe", "can_publish_data", "can_update_metadata", "hidden")


DIRECT_WRITE_LIMIT = 256 * 1024  # socket buffer above which frames wait for it to drain
PING_FRAME: Final = b"\x89\x00"  # an empty WebSocket ping, unmasked as a server sends it


@dataclass
class WorkerConnection:
    """One registered worker's socket. A frame is written at once when nothing is queued before
    it and the socket keeps up; otherwise it joins an ordered outbox that one sender task drains
    as the socket allows. Why not always the task: a queue hand-off and a task step per frame
    cost about as much as the rest of sending it, twice per dispatch."""

    info: WorkerInfo
    ws: web.WebSocketResponse
    fmt: Format = Format.BINARY
    transport: asyncio.BaseTransport | None = None  # the socket under `ws`: direct writes
    outbox: asyncio.Queue[pb.ServerMessage | None] = field(default_factory=asyncio.Queue)
    close_request: tuple[int, str] | None = None
    heard_at: float = 0.0  # loop time of the last frame received (`keep_alive`)
    _sending: bool = False  # the sender task holds a frame it is still writing

    def send(self, msg: pb.ServerMessage) -> None:
        if self._writable():
            write_frame(cast(asyncio.WriteTransport, self.transport), msg, self.fmt)
            return
        self.outbox.put_nowait(msg)

    def _writable(self) -> bool:
        transport = self.transport
        return (
            isinstance(transport, asyncio.WriteTransport)
            and self.close_request is None
            and not self._sending
            and self.outbox.empty()
            and not transport.is_closing()
            and transport.get_write_buffer_size() < DIRECT_WRITE_LIMIT
        )

    def close(self, code: int, reason: str) -> None:
        if self.close_request is None:
            self.close_request = (code, reason)
            self.outbox.put_nowait(None)

    def ping(self) -> None:
        """A control frame may go between any two frames, so it skips the outbox."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(PING_FRAME)

    def drop(self, reason: str) -> None:
        """Cut a silent peer's socket: a closing handshake would only wait for it."""
        self.close(WS_GOING_AWAY, reason)
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.abort()

    async def run_sender(self) -> None:
        while (msg := await self.outbox.get()) is not None:
            self._sending = True
            try:
                await send_frame(self.ws, msg, self.fmt)
            except ConnectionError:
                return
            finally:
                self._sending = False
        code, reason = self.close_request or (WS_NORMAL, "")
        await self.ws.close(code=code, message=reason.encode()[:120])


def write_frame(transport: asyncio.WriteTransport, msg: pb.ServerMessage, fmt: Format) -> None:
    """One unmasked, unfragmented WebSocket frame (RFC 6455 §5.2), as a server sends it."""
    data = encode_server_message(msg, fmt)
    payload = data.encode() if isinstance(data, str) else data
    first = 0x81 if isinstance(data, str) else 0x82  # FIN + text / binary
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, size)
    elif size < 65536:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    transport.write(header + payload)


async def send_frame(ws: web.WebSocketResponse, msg: pb.ServerMessage, fmt: Format) -> None:
    data = encode_server_message(msg, fmt)
    if isinstance(data, bytes):
        await ws.send_bytes(data)
    else:
        await ws.send_str(data)


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _reject(status: int, reason: str, request: web.Request) -> web.Response:
    log.warning("/agent refused from %s: %s", request.remote, reason)
    return web.Response(status=status, text=reason + "\n")


def _check_caller(hub: Hub, request: web.Request) -> Caller | web.Response:
    if not _is_websocket(request):
        return _reject(404, "/agent is a WebSocket endpoint for agent workers", request)
    try:
        caller = authenticate(hub.store, request_token(request))
    except ApiError as exc:
        return _reject(401, f"worker authentication failed: {exc.msg}", request)
    if not caller.claims.video.agent:
        return _reject(403, "token lacks the agent grant (video.agent = true)", request)
    return caller


async def handle_agent(request: web.Request) -> web.StreamResponse:
    hub: Hub = request.app["hub"]
    if request.app["draining"]:
        return _reject(503, "server is shutting down", request)
    checked = _check_caller(hub, request)
    if isinstance(checked, web.Response):
        return checked
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, autoping=False, compress=False)
    await ws.prepare(request)
    session = _Session(hub, checked, ws, _remote(request), request.transport)
    request.app["sockets"].add(ws)
    try:
        await session.run()
    finally:
        request.app["sockets"].discard(ws)
    return ws


def _remote(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return request.remote or ""


def sweep(links: Iterable[object], now: float, interval_s: float) -> None:
    """Ping each worker quiet for `interval_s`; drop each silent for twice that (no frame, no pong).
    Before register there is nothing to sweep: the register timeout bounds that silence."""
    for link in list(links):
        if not isinstance(link, WorkerConnection) or link.close_request is not None:
            continue
        silent = now - link.heard_at
        if silent >= 2 * interval_s:
            log.warning(
                "worker %s from %s silent for %.1f s (no frame, no pong): dropped",
                link.info.worker_id, link.info.remote, silent,
            )
            link.drop(f"silent for {silent:.1f} s (no frame, no pong to pings)")
        elif silent >= interval_s:
            link.ping()


async def keep_alive(app: web.Application) -> AsyncIterator[None]:
    """The sweep, every half ping interval, for the app's life (an aiohttp cleanup context).
    A quiet worker is pinged after 1-1.5 intervals and dropped after 2-2.5; 0 turns it off."""
    hub: Hub = app["hub"]
    interval = hub.settings.ping_interval_s
    loop = asyncio.get_running_loop()

    async def run() -> None:
        while True:
            await asyncio.sleep(interval / 2)
            sweep(hub.links.values(), loop.time(), interval)

    task = asyncio.create_task(run()) if interval > 0 else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _Session:
    """The life of one /agent connection: register, then messages until close."""

    def __init__(
        self,
        hub: Hub,
        caller: Caller,
        ws: web.WebSocketResponse,
        remote: str,
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        self.hub = hub
        self.transport = transport
        self.caller = caller
        self.ws = ws
        self.remote = remote
        self.fmt = Format.BINARY
        self.conn: WorkerConnection | None = None
        self._pending_close: tuple[int, str] | None = None
        self._loop = asyncio.get_running_loop()

    async def run(self) -> None:
        sender: asyncio.Task[None] | None = None
        try:
            register = await self._await_register()
            self.conn = self._register(register)
            sender = asyncio.create_task(self.conn.run_sender())
            await self._serve()
        except ProtocolViolation as exc:
            self._violation(exc)
        finally:
            await self._finish(sender)

    def _violation(self, exc: ProtocolViolation) -> None:
        worker = self.conn.info.worker_id if self.conn else "(unregistered)"
        log.warning(
            "worker %s from %s (key %s) closed: %s",
            worker,
            self.remote,
            self.caller.key.key,
            exc.reason,
        )
        if self.conn is not None:
            self.conn.close(exc.close_code, exc.reason)
        else:
            self._pending_close = (exc.close_code, exc.reason)

    async def _finish(self, sender: asyncio.Task[None] | None) -> None:
        if self.conn is not None:
            self.hub.detach(self.conn.info.worker_id)
            reason = self.conn.close_request[1] if self.conn.close_request else "connection closed"
            self.hub.feed(WorkerGone(self.conn.info.worker_id, reason, self.hub.clock_ms()))
            self.conn.close(WS_NORMAL, "")
        if sender is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sender, timeout=2.0)
            sender.cancel()
        if not self.ws.closed:
            code, reason = self._pending_close or (WS_NORMAL, "")
            with contextlib.suppress(Exception):
                await self.ws.close(code=code, message=reason.encode()[:120])

    async def _receive(self, timeout: float | None = None) -> WSMessage:
        """The next frame that is not a ping or pong (pings are answered: autoping is off so
        that pongs reach the keep-alive stamp). `timeout` bounds the whole wait, pings included,
        so a peer that only pings still meets the register deadline."""
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            remaining = None if deadline is None else deadline - self._loop.time()
            if remaining is not None and remaining <= 0:  # 0 would mean "no timeout" to aiohttp
                raise TimeoutError
            raw = await self.ws.receive(timeout=remaining)
            if self.conn is not None:
                self.conn.heard_at = self._loop.time()
            if raw.type is WSMsgType.PING:
                with contextlib.suppress(ConnectionError):
                    await self.ws.pong(raw.data)
            elif raw.type is not WSMsgType.PONG:
                return raw

    # -- before register

    async def _await_register(self) -> pb.RegisterWorkerRequest:
        deadline = time.monotonic() + self.hub.settings.register_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _no_register(self.hub.settings.register_timeout_s)
            try:
                raw = await self._receive(timeout=remaining)
            except TimeoutError:
                raise _no_register(self.hub.settings.register_timeout_s) from None
            msg = self._decode(raw)
            if msg is None:
                raise ProtocolViolation("connection closed before register", WS_NORMAL)
            which = msg.WhichOneof("message")
            if which == "register":
                return msg.register
            if which == "ping":
                await self._pong(msg.ping)
                continue
            raise ProtocolViolation(f"expected register first, got {which or 'an empty message'}")

    def _register(self, req: pb.RegisterWorkerRequest) -> WorkerConnection:
        perms = req.allowed_permissions
        info = WorkerInfo(
            worker_id=ids.new_id(ids.WORKER),
            project_id=self.caller.project_id,
            api_key=self.caller.key.key,
            owner=self.caller.owner,
            agent_name=req.agent_name,
            namespace=req.namespace,
            job_type=_job_type(req.type),
            version=req.version,
            remote=self.remote,
            connected_at_ms=self.hub.clock_ms(),
            permissions={name: bool(getattr(perms, name)) for name in _PERMISSIONS}
            if req.HasField("allowed_permissions")
            else {},
        )
        conn = WorkerConnection(
            info=info, ws=self.ws, fmt=self.fmt, transport=self.transport,
            heard_at=self._loop.time(),
        )
        reply = pb.RegisterWorkerResponse(
            worker_id=info.worker_id, server_info=convert.server_info(self.hub.node_id)
        )
        conn.send(pb.ServerMessage(register=reply))
        self.hub.attach(conn)
        self.hub.feed(WorkerRegistered(info, info.connected_at_ms))
        return conn

    # -- after register

    async def _serve(self) -> None:
        assert self.conn is not None
        while not self.ws.closed and self.conn.close_request is None:
            raw = await self._receive()
            if self.conn.close_request is not None:  # dropped or closed meanwhile: said already
                return
            msg = self._decode(raw)
            if msg is None:
                return
            self.conn.fmt = self.fmt
            await self._dispatch(msg)

    async def _dispatch(self, msg: pb.WorkerMessage) -> None:
        assert self.conn is not None
        worker_id = self.conn.info.worker_id
        now = self.hub.clock_ms()
        match msg.WhichOneof("message"):
            case "update_worker":
                self.hub.feed(_status_event(worker_id, msg.update_worker, now))
            case "availability":
                self.hub.feed(_availability_event(worker_id, msg.availability, now))
            case "update_job":
                upd = msg.update_job
                status = convert.reported_status(upd.status)
                self.hub.feed(JobStatusReported(worker_id, upd.job_id, status, upd.error, now))
            case "migrate_job":
                self.hub.feed(JobsMigrated(worker_id, tuple(msg.migrate_job.job_ids), now))
            case "ping":
                await self._pong(msg.ping)
            case "register":
                raise ProtocolViolation("second register on one connection")
            case "simulate_job":
                log.info("worker %s sent simulate_job: not supported, ignored", worker_id)
            case other:
                log.debug("worker %s sent %s: ignored", worker_id, other or "an empty message")

    def _decode(self, raw: object) -> pb.WorkerMessage | None:
        """The next WorkerMessage, None when the socket closed; violations raise."""
        kind = getattr(raw, "type", None)
        data = getattr(raw, "data", None)
        if kind in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return None
        if kind is WSMsgType.ERROR:
            if self.ws.close_code == WS_MESSAGE_TOO_BIG or "too big" in str(data).lower():
                raise ProtocolViolation(
                    f"frame exceeds the {MAX_FRAME_BYTES} byte limit", WS_MESSAGE_TOO_BIG
                )
            raise ProtocolViolation(f"websocket error: {data}", WS_POLICY_VIOLATION)
        if not isinstance(data, bytes | str):
            return None
        msg, self.fmt = decode_worker_message(data)
        return msg

    async def _pong(self, ping: pb.WorkerPing) -> None:
        pong = pb.WorkerPong(last_timestamp=ping.timestamp, timestamp=self.hub.clock_ms())
        reply = pb.ServerMessage(pong=pong)
        if self.conn is not None:
            self.conn.send(reply)
        else:
            await send_frame(self.ws, reply, self.fmt)


def _no_register(timeout_s: float) -> ProtocolViolation:
    return ProtocolViolation(f"no register within {timeout_s:g} s")


def _job_type(value: int) -> JobType:
    try:
        return JobType(int(value))
    except ValueError:
        raise ProtocolViolation(f"unknown job type {value} in register") from None


def _status_event(worker_id: str, upd: pb.UpdateWorkerStatus, now: int) -> WorkerStatusChanged:
    status = WorkerStatus(int(upd.status)) if upd.HasField("status") else None
    if upd.draining:
        status = WorkerStatus.FULL
    load = float(upd.load) if upd.load == upd.load else 0.0  # NaN guard
    return WorkerStatusChanged(worker_id, status, min(max(load, 0.0), 1.0), upd.job_count, now)


def _availability_event(
    worker_id: str, resp: pb.AvailabilityResponse, now: int
) -> AvailabilityAnswered:
    return AvailabilityAnswered(
        worker_id=worker_id,
        job_id=resp.job_id,
        available=resp.available,
        terminate=resp.terminate,
        participant_identity=resp.participant_identity,
        participant_name=resp.participant_name,
        participant_metadata=resp.participant_metadata,
        participant_attributes=dict(resp.participant_attributes),
        now_ms=now,
    )
