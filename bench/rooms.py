"""Rooms benchmark: the real LiveKit SDK against callboard, next to a bare aiortc floor, in one run.

What is measured (issue 4, "Benchmark"), against `callboard server --dev` (a subprocess on
127.0.0.1, its database in a temporary directory):

- Connect time: `await rtc.Room().connect(url, token)` of the real `livekit` rtc SDK (signalling,
  ICE, DTLS and SCTP: the call returns once the room is usable), sequentially, two participants per
  room, each room fresh.
- Data latency: two SDK participants in one room; one sends reliable 8-byte payloads carrying
  `time.perf_counter()`, one at a time, and the other's `data_received` handler stamps the arrival
  (both in this process: one clock), at most 200 a second (the server's default data rate limit
  is 500 packets/s per participant). The path is SDK -> server (aiortc) -> SDK, two SCTP hops.
  The floor is two aiortc RTCPeerConnections in this process talking directly: a reliable data
  channel echo, whose round trip is also two SCTP hops through aiortc; its one-way time is shown
  too. The ratio is callboard's one-way p50/p99 over the floor's echo p50/p99.
- Capacity: rooms of 2 participants, each sending `--data-hz` small reliable messages per second
  to the other, stepped up (`--steps`) on a fresh server until a join fails, delivery drops below
  99 %, the server process uses >= 90 % of a core (it is one Python process: one core is its
  ceiling), message p99 exceeds 500 ms, a client connection drops, this process saturates,
  `--max-rooms` is reached or the time budget runs out. The CPU every other process on the
  machine used during each step is shown too (a shared machine makes every figure noisier). These
  clients are light aiortc clients speaking /rtc/v1 (join_request with a publisher offer carrying
  `_reliable` and `_lossy` data channels, trickle, ping) rather than the real SDK: every SDK room
  carries its own libwebrtc threads, and this process also has to host all of them. They live in
  this process and, on a small machine, compete with the server for CPU; both processes' CPU use
  is printed per step. Server RSS per participant is (RSS at N - RSS at 0) / participants, with
  RSS from /proc/<pid>/status and CPU from /proc/<pid>/stat.

WebRTC needs a non-loopback interface, so run it inside a network namespace:
`bash scripts/netns.sh .venv/bin/python bench/rooms.py [--quick] [--json]`. Every server is a
subprocess of this one, stopped by its pid; every wait is bounded, and the whole run is bounded by
`max_run_s`. Progress goes to stderr; the table (or, with --json, one JSON object) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import datetime
import gzip
import json
import logging
import os
import platform
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from livekit import api as lkapi
from livekit import rtc
from livekit.protocol import models
from livekit.protocol import rtc as pb

from callboard.rtc.sdp import parse_trickle
from common import bounded_gather, free_port, log, raise_nofile

T = TypeVar("T")

HOST = "127.0.0.1"
API_KEY, API_SECRET, ADMIN_TOKEN = "devkey", "secret", "dev-admin"
STAMP = struct.Struct("!d")  # the payload: time.perf_counter() at the sender
JOIN_TIMEOUT_S = 20.0
MESSAGE_TIMEOUT_S = 5.0
PACE_HZ = 200.0  # latency messages per second: below the server's per-participant limit (500/s)
JOIN_CONCURRENCY = 8
SERVER_CPU_LIMIT_PCT = 90.0  # of one core
BENCH_CPU_LIMIT_PCT = 95.0
MIN_DELIVERY = 0.99
MAX_MESSAGE_P99_MS = 500.0  # a room whose messages take longer than this is not being held
NOISY_PCT = 25.0  # other processes' CPU, % of one core, above which a step is flagged as noisy
NOFILE_WANTED = 8192


class BenchError(Exception):
    """The benchmark could not measure what it set out to (a server failed, a message was lost)."""


# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Config:
    connect_rooms: int = 20
    latency_count: int = 1000
    latency_warmup: int = 100
    steps: tuple[int, ...] = (5, 10, 20, 40, 60, 80, 100, 150, 200, 250, 300)
    max_rooms: int = 300
    data_hz: float = 10.0
    hold_s: float = 10.0
    log_level: str = "info"
    quick: bool = False
    max_run_s: float = 900.0


QUICK = Config(connect_rooms=3, latency_count=100, latency_warmup=20, steps=(2, 5), max_rooms=5,
               hold_s=2.0, quick=True, max_run_s=55.0)


def parse_args(argv: list[str] | None = None) -> tuple[Config, bool]:
    p = argparse.ArgumentParser(description="callboard rooms benchmark against a bare aiortc floor")
    p.add_argument("--quick", action="store_true", help="small numbers for a smoke run (< 60 s)")
    p.add_argument("--connect-rooms", type=int, help="rooms joined by two SDK clients, for connect")
    p.add_argument("--latency-count", type=int, help="messages measured for latency (each side)")
    p.add_argument("--steps", help="room counts for the capacity steps, e.g. 5,10,20,40")
    p.add_argument("--max-rooms", type=int, help="never go beyond this many rooms")
    p.add_argument("--data-hz", type=float, help="messages per second per participant (capacity)")
    p.add_argument("--hold", type=float, help="seconds each capacity step is measured")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="callboard's log level (default: info, the server's default)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    steps = tuple(int(s) for s in args.steps.split(",")) if args.steps else None
    overrides = {
        "connect_rooms": args.connect_rooms, "latency_count": args.latency_count, "steps": steps,
        "max_rooms": args.max_rooms, "data_hz": args.data_hz, "hold_s": args.hold,
        "log_level": args.log_level,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if cfg.connect_rooms < 1 or cfg.latency_count < 1 or cfg.data_hz <= 0 or cfg.hold_s <= 0:
        p.error("counts, --data-hz and --hold must be positive")
    if not cfg.steps or min(cfg.steps) < 1 or list(cfg.steps) != sorted(set(cfg.steps)):
        p.error("--steps must be increasing positive room counts")
    return cfg, args.json


# --------------------------------------------------------------------------------------------------
# Figures


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"count": len(seconds), "p50_ms": percentile(seconds, 50) * 1000,
            "p99_ms": percentile(seconds, 99) * 1000, "max_ms": max(seconds) * 1000}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


class CpuMeter:
    """CPU seconds of a process (all threads) over an interval, as % of one core."""

    def __init__(self, pid: int | str) -> None:
        self.path = Path(f"/proc/{pid}/stat")
        self.start_cpu_s, self.start_s = self.cpu_s(), time.monotonic()

    def cpu_s(self) -> float:
        fields = self.path.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def pct(self) -> float:
        elapsed = time.monotonic() - self.start_s
        return 100 * (self.cpu_s() - self.start_cpu_s) / elapsed if elapsed > 0 else 0.0


class MachineCpuMeter:
    """Busy CPU of the whole machine (all cores, /proc/stat) over an interval, in % of one core."""

    def __init__(self) -> None:
        self.start_busy_s, self.start_s = self.busy_s(), time.monotonic()

    @staticmethod
    def busy_s() -> float:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def pct(self) -> float:
        elapsed = time.monotonic() - self.start_s
        return 100 * (self.busy_s() - self.start_busy_s) / elapsed if elapsed > 0 else 0.0


class LoopLag:
    """How late this event loop wakes a 20 ms sleeper: late means the loop is busy."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.02)
            self.lags.append(time.perf_counter() - start - 0.02)

    def stop(self) -> dict[str, Any]:
        self.task.cancel()
        return summary_ms(self.lags)


# --------------------------------------------------------------------------------------------------
# The server process


@dataclass
class Server:
    """One `callboard server --dev` subprocess: started, probed, measured and stopped by its pid."""

    workdir: Path
    tag: str
    log_level: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"callboard-{self.tag}.log"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError("callboard server is not running")
        return self.proc.pid

    def start(self, timeout_s: float = 30.0) -> None:
        argv = [sys.executable, "-m", "callboard.cli.main", "server", "--dev", "--host", HOST,
                "--port", str(self.port), "--db", str(self.workdir / f"callboard-{self.tag}.db"),
                "--log-level", self.log_level]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"server exited at start:\n{self.log_tail()}")
            if self._healthy():
                log(f"callboard server up (pid {self.pid}, port {self.port})")
                return
            time.sleep(0.05)
        raise BenchError(f"server did not answer in {timeout_s:g} s:\n{self.log_tail()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.http_url + "/", timeout=1) as resp:
                return bool(resp.read() == b"OK")
        except OSError:
            return False

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise BenchError(f"no VmRSS for pid {self.pid}")

    async def stats(self, http: aiohttp.ClientSession) -> dict[str, int]:
        """Live counts from GET /callboard/v1/rtc/stats (admin credential)."""
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with http.get(self.http_url + "/callboard/v1/rtc/stats", headers=headers,
                            timeout=aiohttp.ClientTimeout(total=10)) as resp:
            if resp.status != 200:
                raise BenchError(f"rtc stats -> HTTP {resp.status}")
            counts: dict[str, int] = await resp.json()
            return counts

    def stop(self, timeout_s: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log(f"server (pid {proc.pid}) ignored SIGTERM; killing it")
            proc.kill()
            proc.wait(timeout=timeout_s)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running_server(workdir: Path, tag: str, cfg: Config) -> Iterator[Server]:
    server = Server(workdir, tag, cfg.log_level)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def join_token(identity: str, room: str) -> str:
    grants = lkapi.VideoGrants(room_join=True, room=room)
    return (lkapi.AccessToken(API_KEY, API_SECRET).with_identity(identity).with_grants(grants)
            .with_ttl(datetime.timedelta(hours=1)).to_jwt())


# --------------------------------------------------------------------------------------------------
# 1. Connect time with the real SDK


async def sdk_connect_times(server: Server, cfg: Config) -> tuple[list[float], int]:
    """Seconds per `Room.connect`, two per fresh room; and how many connects failed."""
    times: list[float] = []
    failures = 0
    for i in range(cfg.connect_rooms):
        rooms: list[rtc.Room] = []
        for who in ("a", "b"):
            room = rtc.Room()
            rooms.append(room)
            start = time.perf_counter()
            try:
                await asyncio.wait_for(
                    room.connect(server.url, join_token(f"{who}{i}", f"connect-{i}")),
                    JOIN_TIMEOUT_S)
            except (TimeoutError, rtc.ConnectError) as exc:
                failures += 1
                log(f"SDK connect failed: {exc!r}")
                continue
            times.append(time.perf_counter() - start)
        for room in rooms:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.disconnect(), 5)
    return times, failures


# --------------------------------------------------------------------------------------------------
# 2. Data latency: SDK through callboard, and the bare aiortc floor


class Arrivals:
    """The next expected arrival: its future is resolved with the receive time."""

    def __init__(self) -> None:
        self.waiting: asyncio.Future[float] | None = None

    def expect(self) -> asyncio.Future[float]:
        self.waiting = asyncio.get_running_loop().create_future()
        return self.waiting

    def arrived(self, payload: bytes) -> None:
        now = time.perf_counter()
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(now - STAMP.unpack(payload[:STAMP.size])[0])


async def measure_sequential(send: Callable[[bytes], Awaitable[None]], arrivals: Arrivals,
                             count: int, warmup: int) -> list[float]:
    """One message at a time, at most PACE_HZ: send a timestamp, wait for its arrival, keep the
    elapsed time."""
    samples: list[float] = []
    next_s = time.perf_counter()
    for i in range(warmup + count):
        await asyncio.sleep(max(0.0, next_s - time.perf_counter()))
        next_s = time.perf_counter() + 1 / PACE_HZ
        arrival = arrivals.expect()
        await send(STAMP.pack(time.perf_counter()))
        try:
            elapsed = await asyncio.wait_for(arrival, MESSAGE_TIMEOUT_S)
        except TimeoutError:
            raise BenchError(f"message {i} did not arrive in {MESSAGE_TIMEOUT_S:g} s") from None
        if i >= warmup:
            samples.append(elapsed)
    return samples


async def sdk_data_latency(server: Server, cfg: Config) -> list[float]:
    alice, bob = rtc.Room(), rtc.Room()
    arrivals = Arrivals()
    bob.on("data_received", lambda packet: arrivals.arrived(packet.data))
    try:
        for who, room in (("alice", alice), ("bob", bob)):
            await asyncio.wait_for(room.connect(server.url, join_token(who, "latency")),
                                   JOIN_TIMEOUT_S)
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while "alice" not in {p.identity for p in bob.remote_participants.values()}:
            if time.monotonic() > deadline:
                raise BenchError("bob never saw alice join")
            await asyncio.sleep(0.02)

        async def send(payload: bytes) -> None:
            await alice.local_participant.publish_data(payload, reliable=True)

        return await measure_sequential(send, arrivals, cfg.latency_count, cfg.latency_warmup)
    finally:
        for room in (alice, bob):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.disconnect(), 5)


async def _wait_open(channel: RTCDataChannel) -> None:
    if channel.readyState == "open":
        return
    opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_open() -> None:
        if not opened.done():
            opened.set_result(None)

    channel.on("open", on_open)
    await asyncio.wait_for(opened, JOIN_TIMEOUT_S)


async def floor_latency(cfg: Config) -> tuple[list[float], list[float]]:
    """Two aiortc peers in this process, one reliable channel: one-way and echo seconds."""
    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    one_way, echoed = Arrivals(), Arrivals()
    b_channel: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()

    @b.on("datachannel")
    def on_channel(channel: RTCDataChannel) -> None:
        def on_message(message: bytes | str) -> None:
            if isinstance(message, bytes):
                one_way.arrived(message)
                channel.send(message)  # the echo

        channel.on("message", on_message)
        if not b_channel.done():
            b_channel.set_result(channel)

    try:
        channel = a.createDataChannel("_reliable")

        def on_echo(message: bytes | str) -> None:
            if isinstance(message, bytes):
                echoed.arrived(message)

        channel.on("message", on_echo)
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        await _wait_open(channel)
        await asyncio.wait_for(b_channel, JOIN_TIMEOUT_S)

        async def send(payload: bytes) -> None:
            channel.send(payload)

        one = await measure_sequential(send, one_way, cfg.latency_count, cfg.latency_warmup)
        rtt = await measure_sequential(send, echoed, cfg.latency_count, cfg.latency_warmup)
        return one, rtt
    finally:
        await a.close()
        await b.close()


# --------------------------------------------------------------------------------------------------
# 3. Capacity with light aiortc clients speaking /rtc/v1


def join_request_param(offer_sdp: str) -> str:
    """The join_request query value the LiveKit SDK sends (gzip-wrapped, unpadded base64url)."""
    request = pb.JoinRequest(
        client_info=models.ClientInfo(sdk=models.ClientInfo.SDK.PYTHON, protocol=17),
        publisher_offer=pb.SessionDescription(type="offer", sdp=offer_sdp, id=1),
    )
    wrapped = pb.WrappedJoinRequest(compression=pb.WrappedJoinRequest.Compression.GZIP,
                                    join_request=gzip.compress(request.SerializeToString()))
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode().rstrip("=")


@dataclass
class Tally:
    """Messages sent and received, and one-way latencies, for one capacity step's window.

    A message counts when its send time (the stamp) falls inside the window, wherever its arrival
    falls, so messages in flight at either edge neither count as lost nor as extra.
    """

    recording: bool = False
    window_start_s: float = 0.0
    window_end_s: float = float("inf")
    sent: int = 0
    received: int = 0
    latencies: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.recording, self.sent, self.received, self.latencies = True, 0, 0, []
        self.window_start_s, self.window_end_s = time.perf_counter(), float("inf")

    def stop(self) -> None:
        self.recording, self.window_end_s = False, time.perf_counter()

    def on_packet(self, raw: bytes) -> None:
        now = time.perf_counter()
        packet = models.DataPacket.FromString(raw)
        if not packet.HasField("user"):
            return
        sent_s = STAMP.unpack(packet.user.payload[:STAMP.size])[0]
        if self.window_start_s <= sent_s <= self.window_end_s:
            self.received += 1
            self.latencies.append(now - sent_s)


class LightClient:
    """A participant made of one aiortc peer connection and a raw /rtc/v1 WebSocket."""

    def __init__(self, identity: str, room: str, tally: Tally) -> None:
        self.identity, self.room, self.tally = identity, room, tally
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.reliable = self.pc.createDataChannel("_reliable")
        self.pc.createDataChannel("_lossy", ordered=False, maxRetransmits=0)
        self.reliable.on("message", self._on_message)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def _on_message(self, message: bytes | str) -> None:
        if isinstance(message, bytes):
            self.tally.on_packet(message)

    async def join(self, http: aiohttp.ClientSession, url: str) -> float:
        """Signal, connect, and wait for the reliable channel to open; returns the seconds taken."""
        start = time.perf_counter()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        query = join_request_param(self.pc.localDescription.sdp)
        self.ws = await http.ws_connect(
            f"{url}/rtc/v1?join_request={query}", max_msg_size=0,
            headers={"Authorization": f"Bearer {join_token(self.identity, self.room)}"})
        self.tasks.append(asyncio.create_task(self._read(self.ws)))
        await _wait_open(self.reliable)
        return time.perf_counter() - start

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for raw in ws:
            if raw.type is not aiohttp.WSMsgType.BINARY:
                continue
            msg = pb.SignalResponse.FromString(raw.data)
            kind = msg.WhichOneof("message")
            if kind == "join":
                interval_s = max(1, msg.join.ping_interval)
                self.tasks.append(asyncio.create_task(self._ping(ws, interval_s)))
            elif kind == "answer":
                answer = RTCSessionDescription(msg.answer.sdp, "answer")
                await self.pc.setRemoteDescription(answer)
            elif kind == "trickle":
                candidate = parse_trickle(msg.trickle.candidateInit)
                if candidate is not None:
                    await self.pc.addIceCandidate(candidate)

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse, interval_s: int) -> None:
        while not ws.closed:
            ping = pb.SignalRequest(ping_req=pb.Ping(timestamp=int(time.time() * 1000)))
            await ws.send_bytes(ping.SerializeToString())
            await asyncio.sleep(interval_s)

    def start_sending(self, data_hz: float) -> None:
        self.tasks.append(asyncio.create_task(self._send(data_hz)))

    async def _send(self, data_hz: float) -> None:
        period_s = 1 / data_hz
        await asyncio.sleep(period_s * (hash(self.identity) % 1000) / 1000)  # spread the senders
        next_s = time.perf_counter()
        while True:
            if self.reliable.readyState == "open":
                packet = models.DataPacket(
                    kind=models.DataPacket.Kind.RELIABLE,
                    user=models.UserPacket(payload=STAMP.pack(time.perf_counter()), topic="bench"))
                self.reliable.send(packet.SerializeToString())
                if self.tally.recording:
                    self.tally.sent += 1
            next_s += period_s
            await asyncio.sleep(max(0.0, next_s - time.perf_counter()))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.ws is not None and not self.ws.closed:
            leave = pb.SignalRequest(leave=pb.LeaveRequest())
            with contextlib.suppress(Exception):
                await self.ws.send_bytes(leave.SerializeToString())
                await asyncio.wait_for(self.ws.close(), 2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 5)
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task


@dataclass
class Fleet:
    """Every light client of the capacity run, added room by room."""

    http: aiohttp.ClientSession
    server: Server
    data_hz: float
    tally: Tally = field(default_factory=Tally)
    clients: list[LightClient] = field(default_factory=list)
    rooms: int = 0

    async def grow(self, rooms: int) -> tuple[list[float], int]:
        """Add rooms up to `rooms`; returns the new joins' seconds and how many failed."""
        fresh = [LightClient(f"p{r}-{side}", f"cap-{r}", self.tally)
                 for r in range(self.rooms, rooms) for side in ("a", "b")]
        self.clients.extend(fresh)
        self.rooms = rooms

        async def join(client: LightClient) -> float | None:
            try:
                return await asyncio.wait_for(client.join(self.http, self.server.url),
                                              JOIN_TIMEOUT_S)
            except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
                log(f"light join of {client.identity} failed: {exc!r}")
                return None

        def joining(client: LightClient) -> Callable[[], Awaitable[float | None]]:
            return lambda: join(client)

        results = await bounded_gather([joining(c) for c in fresh], JOIN_CONCURRENCY)
        times = [t for t in results if t is not None]
        for client in fresh:
            client.start_sending(self.data_hz)
        return times, len(results) - len(times)

    async def close(self) -> None:
        await bounded_gather([c.close for c in self.clients], 50)


@dataclass
class Step:
    rooms: int
    participants: int
    live_participants: int
    peer_connections: int
    join_failures: int
    lost: int
    joins: dict[str, Any]
    sent: int
    received: int
    latency: dict[str, Any]
    server_cpu_pct: float
    bench_cpu_pct: float
    others_cpu_pct: float
    bench_loop_lag: dict[str, Any]
    server_data: dict[str, int]
    server_rss_kib: int
    kib_per_participant: float

    @property
    def delivery(self) -> float:
        return self.received / self.sent if self.sent else 0.0

    def failure(self) -> str | None:
        """Why the rooms of this step were not held (joins, delivery or latency); None if held."""
        if self.join_failures:
            return f"{self.join_failures} join(s) failed"
        if self.lost:
            return f"{self.lost} client connection(s) lost"
        if self.live_participants < self.participants:
            return f"only {self.live_participants} of {self.participants} participants in rooms"
        if self.delivery < MIN_DELIVERY:
            return f"delivery {100 * self.delivery:.1f} % < {100 * MIN_DELIVERY:g} %"
        p99 = self.latency["p99_ms"]
        if p99 is None or p99 > MAX_MESSAGE_P99_MS:
            return f"message p99 {p99 or 0:.0f} ms > {MAX_MESSAGE_P99_MS:g} ms"
        return None

    def saturation(self) -> str | None:
        """Why a bigger step would only measure a CPU shortage; None if there is room to grow."""
        if self.server_cpu_pct >= SERVER_CPU_LIMIT_PCT:
            return f"server CPU saturated ({self.server_cpu_pct:.0f} % of a core)"
        if self.bench_cpu_pct >= BENCH_CPU_LIMIT_PCT:
            return f"client process saturated ({self.bench_cpu_pct:.0f} % of a core)"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "delivery": self.delivery}


async def measure_step(fleet: Fleet, rooms: int, rss_0_kib: int, cfg: Config) -> Step:
    server = fleet.server
    log(f"capacity: growing to {rooms} rooms")
    join_times, failures = await fleet.grow(rooms)
    await asyncio.sleep(1.0)  # let the last joins' updates settle before measuring
    before = await server.stats(fleet.http)
    server_cpu, bench_cpu, machine_cpu = CpuMeter(server.pid), CpuMeter("self"), MachineCpuMeter()
    lag = LoopLag()
    fleet.tally.start()
    await asyncio.sleep(cfg.hold_s)
    fleet.tally.stop()
    server_pct, bench_pct, machine_pct = server_cpu.pct(), bench_cpu.pct(), machine_cpu.pct()
    lags = lag.stop()
    rss = server.rss_kib()
    await asyncio.sleep(1.0)  # messages sent at the end of the window still arrive
    stats = await server.stats(fleet.http)
    data = {k: stats[k] - before.get(k, 0) for k in stats if k.startswith("data.")}
    participants = 2 * rooms
    tally = fleet.tally
    lost = sum(c.reliable.readyState != "open" for c in fleet.clients) - failures
    step = Step(rooms, participants, stats.get("participants", 0),
                stats.get("peer_connections", 0), failures, lost, summary_ms(join_times),
                tally.sent, tally.received, summary_ms(tally.latencies), server_pct, bench_pct,
                max(0.0, machine_pct - server_pct - bench_pct), lags, data, rss,
                (rss - rss_0_kib) / participants)
    log(f"capacity: {rooms} rooms: delivery {100 * step.delivery:.2f} %, server CPU "
        f"{server_pct:.0f} %, bench CPU {bench_pct:.0f} %, others {step.others_cpu_pct:.0f} %, "
        f"loop lag p99 {lags['p99_ms']:.0f} ms, RSS {rss / 1024:.0f} MiB, server data {data}")
    return step


async def capacity(server: Server, cfg: Config, deadline_s: float) -> dict[str, Any]:
    steps: list[Step] = []
    stop_reason = f"reached --max-rooms {cfg.max_rooms}"
    # No connection limit: every client's WebSocket holds a connection (aiohttp's default cap: 100).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        fleet = Fleet(http, server, cfg.data_hz)
        await asyncio.sleep(1.0)
        rss_0 = server.rss_kib()
        try:
            for rooms in (r for r in cfg.steps if r <= cfg.max_rooms):
                budget_s = cfg.hold_s + 3 + JOIN_TIMEOUT_S * (rooms - fleet.rooms) / 50
                if steps and time.monotonic() + budget_s > deadline_s:
                    stop_reason = "time budget"
                    break
                steps.append(await measure_step(fleet, rooms, rss_0, cfg))
                reason = steps[-1].failure() or steps[-1].saturation()
                if reason:
                    stop_reason = reason
                    break
            else:
                if cfg.steps[-1] < cfg.max_rooms:
                    stop_reason = "last step"
        finally:
            await fleet.close()
    held = [s for s in steps if s.failure() is None]
    per_room = held[-1].server_cpu_pct / held[-1].rooms if held else 0.0
    return {
        "client": "light aiortc clients speaking /rtc/v1 (in this process)",
        "data_hz": cfg.data_hz, "hold_s": cfg.hold_s, "rss_0_kib": rss_0,
        "steps": [s.as_dict() for s in steps], "stop_reason": stop_reason,
        "rooms_held": held[-1].rooms if held else 0,
        "kib_per_participant": held[-1].kib_per_participant if held else None,
        "server_cpu_pct_per_room": per_room if held else None,
        "rooms_at_server_cpu_limit": round(SERVER_CPU_LIMIT_PCT / per_room) if per_room else None,
    }


# --------------------------------------------------------------------------------------------------
# The run


def latency_figures(via: list[float], one: list[float], rtt: list[float]) -> dict[str, Any]:
    callboard, floor_rtt = summary_ms(via), summary_ms(rtt)
    return {
        "callboard": callboard, "floor_echo": floor_rtt, "floor_one_way": summary_ms(one),
        "ratio_p50": ratio(callboard["p50_ms"], floor_rtt["p50_ms"]),
        "ratio_p99": ratio(callboard["p99_ms"], floor_rtt["p99_ms"]),
    }


async def run(cfg: Config) -> dict[str, Any]:
    started = time.monotonic()
    deadline_s = started + cfg.max_run_s
    with tempfile.TemporaryDirectory(prefix="callboard-bench-rooms-") as tmp:
        workdir = Path(tmp)
        log("floor: two aiortc peer connections in this process")
        floor_one, floor_rtt = await floor_latency(cfg)
        with running_server(workdir, "sdk", cfg) as server:
            log(f"connect: {cfg.connect_rooms} rooms x 2 real SDK clients")
            connect_times, connect_failures = await sdk_connect_times(server, cfg)
            log(f"latency: {cfg.latency_count} reliable messages SDK -> callboard -> SDK")
            via = await sdk_data_latency(server, cfg)
        with running_server(workdir, "capacity", cfg) as server:
            cap = await capacity(server, cfg, deadline_s)
    return {
        "config": {**dataclasses.asdict(cfg), "steps": list(cfg.steps)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "livekit_sdk": rtc.__version__},
        "connect": {**summary_ms(connect_times), "failures": connect_failures},
        "latency": latency_figures(via, floor_one, floor_rtt),
        "capacity": cap,
        "elapsed_s": time.monotonic() - started,
    }


# --------------------------------------------------------------------------------------------------
# Output


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def render(result: dict[str, Any]) -> str:
    cfg, machine, conn = result["config"], result["machine"], result["connect"]
    lat, cap = result["latency"], result["capacity"]
    out = [
        f"callboard rooms benchmark{' (--quick)' if cfg['quick'] else ''}: {machine['cpus']} CPUs, "
        f"Python {machine['python']}, livekit SDK {machine['livekit_sdk']}, "
        f"{result['elapsed_s']:.0f} s",
        f"The clients run in the benchmark process on the same {machine['cpus']} CPUs as the "
        "server, so they compete with it for CPU.",
        "",
        f"{'':44}{'p50 ms':>10}{'p99 ms':>10}{'n':>7}",
        f"{'connect, real SDK Room.connect':44}{_ms(conn['p50_ms']):>10}{_ms(conn['p99_ms']):>10}"
        f"{conn['count']:>7}   failures: {conn['failures']}",
    ]
    rows = [("data one-way, SDK -> callboard -> SDK", lat["callboard"]),
            ("floor: aiortc echo round trip (2 hops)", lat["floor_echo"]),
            ("floor: aiortc one-way (1 hop)", lat["floor_one_way"])]
    for name, fig in rows:
        out.append(f"{name:44}{_ms(fig['p50_ms']):>10}{_ms(fig['p99_ms']):>10}{fig['count']:>7}")
    out.append(f"{'ratio callboard / floor echo':44}{_x(lat['ratio_p50']):>10}"
               f"{_x(lat['ratio_p99']):>10}")
    out += ["", f"Capacity: rooms of 2 participants, each sending {cap['data_hz']:g} reliable "
            f"msg/s to the other, {cap['hold_s']:g} s per step; clients: {cap['client']}.",
            f"{'rooms':>6}{'joined':>8}{'fail':>6}{'lost':>6}{'join p50':>10}{'join p99':>10}"
            f"{'delivery':>10}{'msg p50':>9}{'msg p99':>9}{'srv CPU':>9}{'bench CPU':>11}"
            f"{'others':>8}{'srv RSS':>9}{'KiB/part':>10}"]
    for s in cap["steps"]:
        out.append(
            f"{s['rooms']:>6}{s['live_participants']:>8}{s['join_failures']:>6}{s['lost']:>6}"
            f"{_ms(s['joins']['p50_ms']):>10}{_ms(s['joins']['p99_ms']):>10}"
            f"{100 * s['delivery']:>9.2f}%{_ms(s['latency']['p50_ms']):>9}"
            f"{_ms(s['latency']['p99_ms']):>9}{s['server_cpu_pct']:>8.0f}%"
            f"{s['bench_cpu_pct']:>10.0f}%{s['others_cpu_pct']:>7.0f}%"
            f"{s['server_rss_kib'] / 1024:>6.0f}MiB"
            f"{s['kib_per_participant']:>10.0f}")
    per = cap["kib_per_participant"]
    out += ["", f"server RSS with no rooms: {cap['rss_0_kib'] / 1024:.0f} MiB; held "
            f"{cap['rooms_held']} rooms ({2 * cap['rooms_held']} participants); "
            f"{'-' if per is None else f'{per:.0f}'} KiB server RSS per participant",
            f"stopped: {cap['stop_reason']}",
            *_noise(cap["steps"]),
            f"server CPU per room: {_ms(cap['server_cpu_pct_per_room'])} % of a core at the "
            f"largest held step; linear extrapolation to {SERVER_CPU_LIMIT_PCT:g} % of one core: "
            f"~{cap['rooms_at_server_cpu_limit']} rooms (a server with a core to itself)",
            "CPU in % of one core (srv: the server process, bench: this process with all clients, "
            "others: every other process on the machine); joined: participants the server counts; "
            "lost: clients whose connection dropped; held: joins ok, none lost, delivery >= "
            f"{100 * MIN_DELIVERY:g} %, message p99 <= {MAX_MESSAGE_P99_MS:g} ms"]
    return "\n".join(out)


def _noise(steps: list[dict[str, Any]]) -> list[str]:
    noisy = [s for s in steps if s["others_cpu_pct"] > NOISY_PCT]
    if not noisy:
        return []
    worst = max(s["others_cpu_pct"] for s in noisy)
    return [f"noisy machine: other processes used more than {NOISY_PCT:g} % of a core in "
            f"{len(noisy)} of {len(steps)} steps (up to {worst:.0f} %)"]


_said = {"lost": False}


def quiet_aiortc(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """aiortc's own tasks fail with ConnectionError when a peer connection drops: the step counts
    those as lost connections, so say it once here instead of once per task."""
    if isinstance(context.get("exception"), ConnectionError):
        if not _said["lost"]:
            log("aiortc: a peer connection dropped (counted per step as lost connections)")
            _said["lost"] = True
        return
    loop.default_exception_handler(context)


async def bounded(cfg: Config) -> dict[str, Any]:
    """The whole run, bounded in time; SIGTERM or SIGINT cancel it, so its servers are stopped."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(quiet_aiortc)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    return await asyncio.wait_for(run(cfg), cfg.max_run_s + 60)


def main(argv: list[str] | None = None) -> int:
    cfg, as_json = parse_args(argv)
    if os.environ.get("CALLBOARD_IN_TEST_NETNS") != "1":
        log("warning: not inside scripts/netns.sh; WebRTC needs a non-loopback interface")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    warnings.filterwarnings("ignore", message="The HMAC key")  # the dev secret is short
    raise_nofile(NOFILE_WANTED)
    try:
        result = asyncio.run(bounded(cfg))
    except asyncio.CancelledError:
        log("benchmark stopped by a signal; its servers are stopped")
        return 1
    except (BenchError, TimeoutError) as exc:
        log(f"benchmark failed: {exc!r}")
        return 1
    print(json.dumps(result, indent=2) if as_json else render(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
