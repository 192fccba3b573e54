"""Audio relay benchmark: server CPU per relayed Opus stream, latency the server adds, and how many
2-party voice rooms one node relays before its CPU saturates. Run inside a network namespace:

    bash scripts/netns.sh .venv/bin/python bench/audio.py [--quick] [--json]

Load comes from a light, bounded generator in this process, not from the real SDK (which would
spend the 2 cores encoding Opus and measure itself): aiortc clients that speak LiveKit's /rtc/v1
signalling, publish pre-encoded Opus (packets only packetised, never encoded) and receive with
callboard's own pass-through adapter (never decoded). Each 20 ms packet carries its send time, so
the receiver measures end-to-end latency without decoding anything.

Measured in one run, side by side:
- direct: the same aiortc sender → aiortc receiver, peer to peer (no server): the floor latency.
- relayed: sender → `callboard server` (a subprocess) → receiver; latency minus the direct one is
  what the server adds.
- server CPU per relayed stream (pass-through): /proc/<pid>/stat CPU time of the server process
  over a window, divided by streams (2 per room: each party hears the other).
- decode + re-encode: the Opus codec work a transcoding relay would do per stream (aiortc's own
  OpusDecoder + OpusEncoder on the same packets, in this process, for the same window length): a
  lower bound on what relaying with re-encoding would cost, next to the pass-through total.
- saturation: rooms are added in steps until the server process uses ≥ 90% of one core (aiortc is
  single-threaded Python) or receivers lose > 5% of packets; the last healthy step is reported.
Every server is a subprocess stopped by its pid; every wait is bounded; the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fractions
import gzip
import json
import math
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame
from livekit import api
from livekit.protocol import models
from livekit.protocol import rtc as pb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from callboard.rtc.relay import pass_through  # noqa: E402
from callboard.rtc.sdp import parse_trickle  # noqa: E402
from common import free_port  # noqa: E402

KEY, SECRET = "devkey", "secret"  # LiveKit's dev credentials: PyJWT warns about their length
warnings.filterwarnings("ignore", message=".*HMAC key.*")
FRAME_S = 0.020
TIME_BASE = fractions.Fraction(1, 48000)
STAMP = struct.Struct("!dI")  # send time (perf_counter), sequence


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- pre-encoded Opus ---------------------------------------------------------------------------


def opus_packets(seconds: float = 1.0, hz: float = 440.0) -> list[bytes]:
    """A tone encoded once with aiortc's encoder: real Opus packets to loop."""
    encoder = OpusEncoder()
    packets: list[bytes] = []
    for i in range(int(seconds / FRAME_S)):
        t = (np.arange(960) + i * 960) / 48000
        wave = (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(wave, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts, frame.time_base = 48000, i * 960, TIME_BASE
        payloads, _ = encoder.encode(frame)
        packets.extend(payloads)
    return packets


class PacedOpus(MediaStreamTrack):
    """Pre-encoded Opus, one packet every 20 ms; each payload starts with its send time."""

    kind = "audio"

    def __init__(self, packets: list[bytes]) -> None:
        super().__init__()
        self.packets = packets
        self.seq = 0
        self.start = time.perf_counter()

    async def recv(self) -> Any:
        due = self.start + self.seq * FRAME_S
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        body = self.packets[self.seq % len(self.packets)]
        payload = STAMP.pack(time.perf_counter(), self.seq) + body[STAMP.size :]
        packet = av.Packet(payload)
        packet.pts, packet.time_base = self.seq * 960, TIME_BASE
        self.seq += 1
        return packet


@dataclass
class Ear:
    """Counts packets and their latency, from the pass-through receiver (nothing decoded)."""

    latencies_ms: list[float] = field(default_factory=list)
    received: int = 0
    recording: bool = True

    def deliver(self, payload: bytes, timestamp: int) -> None:
        if len(payload) < STAMP.size:
            return
        sent, _seq = STAMP.unpack_from(payload)
        self.received += 1
        if self.recording:
            self.latencies_ms.append((time.perf_counter() - sent) * 1000)


def hook_receiver(pc: RTCPeerConnection, track: MediaStreamTrack, ear: Ear) -> None:
    for transceiver in pc.getTransceivers():
        if transceiver.receiver.track is track:
            pass_through(transceiver.receiver, ear.deliver)


# -- a minimal LiveKit /rtc/v1 client on aiortc ---------------------------------------------------


def token(identity: str, room: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    return api.AccessToken(KEY, SECRET).with_identity(identity).with_grants(grants).to_jwt()


def join_param(offer_sdp: str) -> str:
    request = pb.JoinRequest(
        client_info=models.ClientInfo(sdk=models.ClientInfo.SDK.PYTHON, protocol=17),
        connection_settings=pb.ConnectionSettings(auto_subscribe=True),
    )
    request.publisher_offer.CopyFrom(pb.SessionDescription(type="offer", sdp=offer_sdp, id=1))
    wrapped = pb.WrappedJoinRequest(
        compression=pb.WrappedJoinRequest.Compression.GZIP,
        join_request=gzip.compress(request.SerializeToString()),
    )
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode().rstrip("=")


class LkClient:
    """Joins, publishes one PacedOpus track, hears everyone through `ear`."""

    def __init__(self, url: str, identity: str, room: str, packets: list[bytes]) -> None:
        self.url, self.identity, self.room = url, identity, room
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = PacedOpus(packets)
        self.ear = Ear()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.session: aiohttp.ClientSession | None = None
        self.offer_id = 1
        self.tasks: list[asyncio.Task[None]] = []
        self.published = asyncio.Event()
        self.negotiating = False  # an offer awaits its answer
        self.again = False  # and another one is needed after it
        self.pc.on("track", lambda track: hook_receiver(self.pc, track, self.ear))

    async def connect(self) -> None:
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.createDataChannel("_reliable")
        self.negotiating = True  # the join request carries the first offer
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.session = aiohttp.ClientSession()
        query = f"join_request={join_param(self.pc.localDescription.sdp)}"
        headers = {"Authorization": f"Bearer {token(self.identity, self.room)}"}
        self.ws = await self.session.ws_connect(f"{self.url}/rtc/v1?{query}", headers=headers)
        self.tasks.append(asyncio.create_task(self._read()))
        self.tasks.append(asyncio.create_task(self._ping()))
        await self._send(pb.SignalRequest(add_track=pb.AddTrackRequest(
            cid=self.track.id, name="mic", type=models.TrackType.AUDIO,
            source=models.TrackSource.MICROPHONE)))  # fmt: skip
        await asyncio.wait_for(self.published.wait(), 10)

    async def _send(self, request: pb.SignalRequest) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(request.SerializeToString())

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            await self._on(pb.SignalResponse.FromString(msg.data))

    async def _on(self, msg: pb.SignalResponse) -> None:
        kind = msg.WhichOneof("message")
        if kind == "answer":
            await self.pc.setRemoteDescription(RTCSessionDescription(msg.answer.sdp, "answer"))
            self.negotiating = False
            if self.again:
                self.again = False
                await self._offer()
        elif kind == "trickle":
            candidate = parse_trickle(msg.trickle.candidateInit)
            if candidate is not None:
                await self.pc.addIceCandidate(candidate)
        elif kind == "track_published":
            self.pc.addTransceiver(self.track, direction="sendonly")
            await self._offer()
            self.published.set()
        elif kind == "media_sections_requirement":
            for _ in range(msg.media_sections_requirement.num_audios):
                self.pc.addTransceiver("audio", direction="recvonly")
            await self._offer()

    async def _offer(self) -> None:
        """One offer at a time: a need that arises meanwhile is met after the answer."""
        if self.negotiating:
            self.again = True
            return
        self.negotiating = True
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.offer_id += 1
        offer = pb.SessionDescription(type="offer", sdp=self.pc.localDescription.sdp,
                                      id=self.offer_id)  # fmt: skip
        await self._send(pb.SignalRequest(offer=offer))

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = int(time.time() * 1000)
            await self._send(pb.SignalRequest(ping_req=pb.Ping(timestamp=now)))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._send(pb.SignalRequest(leave=pb.LeaveRequest()))
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.track.stop()
        await self.pc.close()
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()


# -- the server under test ----------------------------------------------------------------------


@contextlib.contextmanager
def server_process(tmp: Path) -> Any:
    port = free_port()
    cmd = [str(ROOT / ".venv/bin/callboard"), "server", "--dev", "--port", str(port),
           "--db", str(tmp / "bench.db"), "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "CALLBOARD_RTC_PING_TIMEOUT_S": "30"}
    with open(tmp / "server.log", "w") as server_log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=server_log, env=env)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("server did not start")
        yield proc, f"ws://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    values = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- measurements -------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def direct_latency(packets: list[bytes], seconds: float) -> list[float]:
    """aiortc → aiortc, no server: the floor every relayed number is compared with."""
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    ear = Ear()
    receiver.on("track", lambda track: hook_receiver(receiver, track, ear))
    sender.addTransceiver(PacedOpus(packets), direction="sendonly")
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
    await asyncio.sleep(1.0)
    ear.latencies_ms.clear()
    await asyncio.sleep(seconds)
    await sender.close()
    await receiver.close()
    return list(ear.latencies_ms)


@dataclass
class Step:
    rooms: int
    streams: int
    server_cpu_pct: float
    generator_cpu_pct: float  # this process: the aiortc clients making the load
    machine_busy_pct: float  # all cores, every process (the machine is shared)
    cpu_ms_per_stream_s: float  # server CPU ms per second of one relayed stream
    loss_pct: float
    p50_ms: float
    p95_ms: float


async def open_rooms(url: str, packets: list[bytes], first: int, count: int) -> list[LkClient]:
    clients: list[LkClient] = []
    for r in range(first, first + count):
        for who in ("caller", "agent"):
            client = LkClient(url, f"{who}-{r}", f"room-{r}", packets)
            await client.connect()
            clients.append(client)
    return clients


async def settle(clients: list[LkClient], timeout_s: float = 60.0) -> None:
    """Every new client's media flows (ICE + DTLS of the newest ones done) and 1 s has passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(c.ear.received for c in clients):
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)


async def measure(pid: int, clients: list[LkClient], window_s: float) -> Step:
    await settle(clients)
    for c in clients:
        c.ear.latencies_ms.clear()
        c.ear.received = 0
    cpu0, own0, t0, m0 = cpu_s(pid), time.process_time(), time.monotonic(), machine_busy()
    await asyncio.sleep(window_s)
    cpu1, own1, t1, m1 = cpu_s(pid), time.process_time(), time.monotonic(), machine_busy()
    streams = len(clients)  # each client hears its one peer
    expected = streams * (t1 - t0) / FRAME_S
    received = sum(c.ear.received for c in clients)
    latencies = [v for c in clients for v in c.ear.latencies_ms]
    cpu_pct = (cpu1 - cpu0) / (t1 - t0) * 100
    return Step(
        rooms=streams // 2,
        streams=streams,
        server_cpu_pct=round(cpu_pct, 1),
        generator_cpu_pct=round((own1 - own0) / (t1 - t0) * 100, 1),
        machine_busy_pct=round((m1[0] - m0[0]) / max(1.0, m1[1] - m0[1]) * 100, 1),
        cpu_ms_per_stream_s=round((cpu1 - cpu0) * 1000 / (t1 - t0) / streams, 2),
        loss_pct=round(max(0.0, 1 - received / expected) * 100, 1),
        p50_ms=round(pct(latencies, 0.5), 2),
        p95_ms=round(pct(latencies, 0.95), 2),
    )


def transcode_cost_ms_per_stream_s(packets: list[bytes], seconds: float) -> float:
    """What a decode + re-encode relay pays per stream, codec work only (aiortc's codecs)."""
    decoder, encoder = OpusDecoder(), OpusEncoder()
    frames = int(seconds / FRAME_S)
    start = time.process_time()
    for i in range(frames):
        for frame in decoder.decode(JitterFrame(packets[i % len(packets)], i * 960)):
            encoder.encode(frame)
    spent = time.process_time() - start
    return spent * 1000 / seconds


async def run(args: argparse.Namespace) -> dict[str, Any]:
    packets = opus_packets()
    window = 3.0 if args.quick else 6.0
    log("direct (no server) latency…")
    direct = await direct_latency(packets, window)
    steps: list[Step] = []
    with tempfile.TemporaryDirectory() as tmp, server_process(Path(tmp)) as (proc, url):
        clients: list[LkClient] = []
        try:
            rooms = 0
            for target in args.steps:
                log(f"{target} rooms…")
                clients += await open_rooms(url, packets, rooms, target - rooms)
                rooms = target
                step = await measure(proc.pid, clients, window)
                log(f"  {step}")
                steps.append(step)
                if step.server_cpu_pct >= 90 or step.loss_pct > 5:
                    break
                if step.generator_cpu_pct >= 90:
                    log("  the load generator itself is saturated: stopping here")
                    break
        finally:
            for client in clients:
                await client.close()
    one = steps[0]
    transcode = transcode_cost_ms_per_stream_s(packets, window)
    healthy = [s for s in steps if s.server_cpu_pct < 90 and s.loss_pct <= 5]
    best = healthy[-1] if healthy else None
    per_stream = statistics.median(s.cpu_ms_per_stream_s for s in steps)
    return {
        "direct_p50_ms": round(pct(direct, 0.5), 2),
        "direct_p95_ms": round(pct(direct, 0.95), 2),
        "relayed_p50_ms": one.p50_ms,
        "relayed_p95_ms": one.p95_ms,
        "added_p50_ms": round(one.p50_ms - pct(direct, 0.5), 2),
        "passthrough_server_cpu_ms_per_stream_s": per_stream,
        "transcode_codec_cpu_ms_per_stream_s": round(transcode, 2),
        "transcode_over_passthrough": round((per_stream + transcode) / per_stream, 2),
        "steps": [s.__dict__ for s in steps],
        "max_healthy_rooms": best.rooms if best else 0,
        "rooms_at_one_core_estimate": int(1000 / (2 * per_stream)) if per_stream else 0,
        "saturated": bool(steps and steps[-1] not in healthy),
        "generator_bound": bool(steps and steps[-1].generator_cpu_pct >= 90),
    }


def print_table(result: dict[str, Any]) -> None:
    print("audio relay (Opus pass-through), one callboard node")
    print(f"  latency p50/p95, direct aiortc→aiortc : {result['direct_p50_ms']} / "
          f"{result['direct_p95_ms']} ms")  # fmt: skip
    print(f"  latency p50/p95, through callboard    : {result['relayed_p50_ms']} / "
          f"{result['relayed_p95_ms']} ms  (server adds {result['added_p50_ms']} ms "
          "at p50)")  # fmt: skip
    print(f"  server CPU per relayed stream         : "
          f"{result['passthrough_server_cpu_ms_per_stream_s']} ms per second of audio")  # fmt: skip
    print(f"  + decode & re-encode (codec work only): "
          f"{result['transcode_codec_cpu_ms_per_stream_s']} ms per second of audio")  # fmt: skip
    print(f"  ratio transcoding / pass-through      : ≥ {result['transcode_over_passthrough']}x")
    print("  rooms  streams  server CPU  load-gen CPU  machine  ms/stream·s  loss  p50 ms  p95 ms")
    for s in result["steps"]:
        print(f"  {s['rooms']:5d}  {s['streams']:7d}  {s['server_cpu_pct']:9.1f}%  "
              f"{s['generator_cpu_pct']:11.1f}%  {s['machine_busy_pct']:6.1f}%  "
              f"{s['cpu_ms_per_stream_s']:11.2f}  {s['loss_pct']:4.1f}%  {s['p50_ms']:6.2f}  "
              f"{s['p95_ms']:6.2f}")  # fmt: skip
    print(f"  largest healthy step (loss ≤ 5%, server < 90%): {result['max_healthy_rooms']} "
          f"2-party rooms; a later step broke down: {result['saturated']}; load generator "
          f"saturated: {result['generator_bound']}")  # fmt: skip
    print(f"  one core at the measured per-stream cost ≈ {result['rooms_at_one_core_estimate']} "
          "rooms (aiortc is single-threaded: one server process uses one core)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, few steps")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--steps",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="room counts to step through (default 1,10,20,40,60,80,100,120)",
    )
    args = parser.parse_args()
    if os.environ.get("CALLBOARD_IN_TEST_NETNS") != "1":
        sys.exit("run inside the namespace: bash scripts/netns.sh .venv/bin/python "
                 "bench/audio.py")  # fmt: skip
    if args.steps is None:
        args.steps = [1, 3] if args.quick else [1, 10, 20, 40, 60, 80, 100, 120]
    result = asyncio.run(asyncio.wait_for(run(args), timeout=600))
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
