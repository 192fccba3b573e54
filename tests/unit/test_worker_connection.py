"""WorkerConnection: frames written at once when the socket keeps up, in order when it does not."""

from __future__ import annotations

import asyncio
import struct
from typing import Any, cast

from aiohttp import web
from livekit.protocol import agent as pb

from callboard.dispatch.model import JobType, WorkerInfo
from callboard.protocol.frames import Format
from callboard.server.agent_ws import DIRECT_WRITE_LIMIT, WorkerConnection

INFO = WorkerInfo("AW_1", "P_a", "APIkey", "", "agent", "", JobType.ROOM, "1", "h:1", 0)


class Transport(asyncio.WriteTransport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.buffered = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.written += data

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing


class Socket:
    """Stands in for aiohttp's WebSocketResponse: the sender task's slow path."""

    def __init__(self) -> None:
        self.frames: list[bytes | str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send_bytes(self, data: bytes) -> None:
        await self.gate.wait()
        self.frames.append(data)

    async def send_str(self, data: str) -> None:
        await self.gate.wait()
        self.frames.append(data)

    async def close(self, code: int, message: bytes) -> None:
        self.frames.append(f"close {code}")


def ping(n: int) -> pb.ServerMessage:
    return pb.ServerMessage(pong=pb.WorkerPong(last_timestamp=n, timestamp=n))


def frames(raw: bytes) -> list[tuple[int, bytes]]:
    """Split unmasked server frames: (opcode byte, payload)."""
    out, i = [], 0
    while i < len(raw):
        first, size = raw[i], raw[i + 1] & 0x7F
        i += 2
        if size == 126:
            (size,) = struct.unpack("!H", raw[i:i + 2])
            i += 2
        elif size == 127:
            (size,) = struct.unpack("!Q", raw[i:i + 8])
            i += 8
        out.append((first, bytes(raw[i:i + size])))
        i += size
    return out


def connection(fmt: Format = Format.BINARY) -> tuple[WorkerConnection, Transport, Socket]:
    transport, sock = Transport(), Socket()
    conn = WorkerConnection(INFO, cast(web.WebSocketResponse, sock), fmt, transport)
    return conn, transport, sock


async def test_frames_are_written_at_once_with_every_length_form() -> None:
    conn, transport, sock = connection()
    big = pb.ServerMessage(
        availability=pb.AvailabilityRequest(job=pb.Job(id="AJ_1", metadata="m" * 70_000))
    )
    medium = pb.ServerMessage(
        availability=pb.AvailabilityRequest(job=pb.Job(id="AJ_2", metadata="m" * 300))
    )
    for msg in (ping(1), medium, big):
        conn.send(msg)
    assert [pb.ServerMessage.FromString(p) for _, p in frames(transport.written)] == [
        ping(1), medium, big,
    ]
    assert {op for op, _ in frames(transport.written)} == {0x82}
    assert sock.frames == [] and conn.outbox.empty()


async def test_text_workers_get_text_frames() -> None:
    conn, transport, _ = connection(Format.TEXT)
    conn.send(ping(7))
    [(op, payload)] = frames(transport.written)
    assert op == 0x81 and b'"lastTimestamp": "7"' in payload


async def test_a_slow_socket_queues_frames_and_keeps_their_order() -> None:
    conn, transport, sock = connection()
    sender = asyncio.create_task(conn.run_sender())
    conn.send(ping(1))  # written at once
    transport.buffered = DIRECT_WRITE_LIMIT  # the peer stopped reading
    sock.gate.clear()
    conn.send(ping(2))
    await asyncio.sleep(0)  # the sender took ping 2 and waits for the socket
    transport.buffered = 0  # room again, but ping 2 is still being written:
    conn.send(ping(3))  # so 3 must queue behind it, not overtake it
    assert not conn.outbox.empty()
    sock.gate.set()
    conn.close(1000, "bye")
    await asyncio.wait_for(sender, 5)
    direct = [pb.ServerMessage.FromString(p) for _, p in frames(transport.written)]
    queued = [pb.ServerMessage.FromString(f) for f in sock.frames if isinstance(f, bytes)]
    assert direct == [ping(1)] and queued == [ping(2), ping(3)]
    assert sock.frames[-1] == "close 1000"


async def test_nothing_is_written_to_a_closing_socket_or_after_close() -> None:
    conn, transport, _ = connection()
    transport.closing = True
    conn.send(ping(1))
    assert transport.written == b"" and conn.outbox.qsize() == 1
    conn2, transport2, _ = connection()
    conn2.close(1008, "revoked")
    conn2.send(ping(2))
    assert transport2.written == b""
