"""The /rtc/v1 wire itself, seen by a hand-made client: message order, trickle JSON, node IP.

The client here is aiortc driven by hand over a raw WebSocket, so every SignalResponse can be
inspected; the SDK-level behaviour is in test_rtc_rooms.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from livekit.protocol import rtc as pb

from callboard.rtc.sdp import parse_trickle
from tests.support.rtc import (
    connect,
    eventually,
    in_process_app,
    join_request_param,
    needs_netns,
    rtc_server,
    token,
)

pytestmark = [needs_netns, in_process_app]


@pytest.fixture
async def client_pc() -> AsyncIterator[RTCPeerConnection]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        yield pc
    finally:
        await pc.close()


async def offer_of(pc: RTCPeerConnection) -> str:
    pc.createDataChannel("_reliable")
    pc.createDataChannel("_lossy", ordered=False, maxRetransmits=0)
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


async def first_messages(
    ws: aiohttp.ClientWebSocketResponse, count: int
) -> list[pb.SignalResponse]:
    out = []
    while len(out) < count:
        msg = await asyncio.wait_for(ws.receive(), 5)
        out.append(pb.SignalResponse.FromString(msg.data))
    return out


async def until_quiet(
    ws: aiohttp.ClientWebSocketResponse, quiet_s: float = 0.3
) -> list[pb.SignalResponse]:
    """Everything the server sends until it has been silent for `quiet_s`."""
    out = []
    while True:
        try:
            msg = await asyncio.wait_for(ws.receive(), quiet_s)
        except TimeoutError:
            return out
        out.append(pb.SignalResponse.FromString(msg.data))


async def test_join_then_answer_then_trickle_and_a_working_peer_connection(
    tmp_path: Path, client_pc: RTCPeerConnection
) -> None:
    async with (
        rtc_server(tmp_path, rtc_node_ip="10.99.0.2") as server,
        aiohttp.ClientSession() as http,
    ):
        url = f"{server.url}/rtc/v1?join_request={join_request_param(await offer_of(client_pc))}"
        ws = await http.ws_connect(url, headers={"Authorization": f"Bearer {token('hand')}"})
        join, answer, *trickles = await until_quiet(ws)
        assert [join.WhichOneof("message"), answer.WhichOneof("message")] == ["join", "answer"]
        assert join.join.ping_interval == 1 and join.join.ping_timeout == 3
        assert join.join.participant.identity == "hand" and join.join.room.name == "room-1"
        assert answer.answer.type == "answer" and "a=candidate" not in answer.answer.sdp
        assert answer.answer.id == 1  # echoes the offer's id

        await client_pc.setRemoteDescription(RTCSessionDescription(answer.answer.sdp, "answer"))
        assert trickles and all(t.WhichOneof("message") == "trickle" for t in trickles)
        for t in trickles:
            init = json.loads(t.trickle.candidateInit)
            assert set(init) == {"candidate", "sdpMid", "sdpMLineIndex"}
            candidate = parse_trickle(t.trickle.candidateInit)
            assert candidate is not None and candidate.ip == "10.99.0.2"  # the node IP
            await client_pc.addIceCandidate(candidate)
        await eventually(lambda: client_pc.connectionState == "connected")

        ping = pb.SignalRequest(ping_req=pb.Ping(timestamp=1234, rtt=5))
        await ws.send_bytes(ping.SerializeToString())
        await eventually(lambda: server.rooms.stats()["participants"] == 1)
        pong = await _next_of(ws, "pong_resp")
        assert pong.pong_resp.last_ping_timestamp == 1234 and pong.pong_resp.timestamp > 0
        await ws.send_bytes(pb.SignalRequest(leave=pb.LeaveRequest()).SerializeToString())
        await eventually(lambda: server.rooms.stats()["peer_connections"] == 0)
        assert server.rooms.stats()["participants"] == 0


async def _next_of(ws: aiohttp.ClientWebSocketResponse, kind: str) -> pb.SignalResponse:
    while True:
        msg = await asyncio.wait_for(ws.receive(), 5)
        response = pb.SignalResponse.FromString(msg.data)
        if response.WhichOneof("message") == kind:
            return response


async def test_the_sdk_connects_with_a_node_ip(tmp_path: Path) -> None:
    async with rtc_server(tmp_path, rtc_node_ip="10.99.0.2") as server:
        alice = await connect(server, "alice")
        bob = await connect(server, "bob")
        try:
            await alice.room.local_participant.publish_data(b"via-node-ip")
            await eventually(lambda: [p.data for p in bob.data] == [b"via-node-ip"])
        finally:
            await alice.close()
            await bob.close()


async def test_ice_servers_reach_the_client(tmp_path: Path) -> None:
    turn = "turn:alice:s3cret@turn.invalid:3478?transport=udp"
    async with rtc_server(tmp_path, ice_servers=(turn,)) as server, aiohttp.ClientSession() as http:
        url = f"{server.url}/rtc/v1?join_request={join_request_param()}"
        ws = await http.ws_connect(url, headers={"Authorization": f"Bearer {token('x')}"})
        (join,) = await first_messages(ws, 1)
        (server_entry,) = join.join.ice_servers
        assert list(server_entry.urls) == ["turn:turn.invalid:3478?transport=udp"]
        assert (server_entry.username, server_entry.credential) == ("alice", "s3cret")
        await ws.close()
