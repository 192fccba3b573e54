"""Bad input on /rtc/v1: a clear answer each time; the room, the others and the server stay intact.

Refusals before the upgrade are checked with a raw HTTP client (status and text); what happens
after the upgrade with a raw WebSocket client speaking the protocol badly on purpose, next to a
real SDK participant who must not notice anything but the offender's departure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
import pytest
from livekit import rtc
from livekit.protocol import models
from livekit.protocol import rtc as pb

from callboard.server.app import DEV_ADMIN_TOKEN
from tests.support.rtc import (
    RtcServer,
    connect,
    eventually,
    in_process_app,
    join_request_param,
    needs_netns,
    rtc_server,
    token,
)

pytestmark = [needs_netns, in_process_app]
WS_HEADERS = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RtcServer]:
    async with rtc_server(tmp_path) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(
    http: aiohttp.ClientSession, server: RtcServer, path: str, jwt: str | None, **query: str
) -> tuple[int, str]:
    headers = dict(WS_HEADERS)
    if jwt is not None:
        headers["Authorization"] = f"Bearer {jwt}"
    async with http.get(server.http_url + path, headers=headers, params=query) as resp:
        return resp.status, await resp.text()


def signed(claims: dict[str, object]) -> str:
    """A token livekit-api refuses to make (no identity, no room)."""
    now = int(time.time())
    return jwt.encode({"iss": "devkey", "nbf": now, "exp": now + 600, **claims}, "secret")


def expired_token() -> str:
    payload = jwt.decode(token("late"), options={"verify_signature": False})
    payload["exp"] = int(time.time()) - 3600
    payload["nbf"] = payload["exp"] - 60
    return jwt.encode(payload, "secret", algorithm="HS256")


# -- refused before the upgrade


@pytest.mark.parametrize(
    ("jwt", "status", "text"),
    [
        (None, 401, "missing access token"),
        ("not-a-jwt", 401, "malformed token"),
        (token("mallory", secret="wrong-secret"), 401, "invalid token signature"),
        (token("ghost", key="APInobody"), 401, "unknown API key"),
        (token("x", room_join=False), 403, "roomJoin"),
        (signed({"sub": "x", "video": {"roomJoin": True}}), 403, "names no room"),
        (signed({"video": {"roomJoin": True, "room": "room-1"}}), 401, "no identity"),
    ],
)
async def test_bad_tokens_are_refused_with_a_reason(
    server: RtcServer, http: aiohttp.ClientSession, jwt: str | None, status: int, text: str
) -> None:
    for path in ("/rtc/v1", "/rtc/v1/validate", "/rtc/validate"):
        got = await get(http, server, path, jwt, join_request=join_request_param())
        assert got[0] == status and text in got[1], (path, got)
    assert server.rooms.stats()["rooms"] == 0


async def test_an_expired_token_is_refused_and_the_sdk_shows_why(
    server: RtcServer, http: aiohttp.ClientSession
) -> None:
    status, text = await get(http, server, "/rtc/v1", expired_token(), join_request="x")
    assert (status, "expired" in text) == (401, True)
    with pytest.raises(rtc.ConnectError, match="expired"):
        await rtc.Room().connect(server.url, expired_token())


async def test_a_token_for_another_room_is_refused(
    server: RtcServer, http: aiohttp.ClientSession
) -> None:
    jwt = token("alice", "room-1")
    status, text = await get(
        http, server, "/rtc/v1", jwt, join_request=join_request_param(), room="room-2"
    )
    assert status == 403 and "not 'room-2'" in text
    assert (await get(http, server, "/rtc/v1/validate", jwt, room="room-1"))[0] == 200


async def test_the_access_token_query_parameter_works_too(
    server: RtcServer, http: aiohttp.ClientSession
) -> None:
    status, text = await get(http, server, "/rtc/v1/validate", None, access_token=token("alice"))
    assert (status, text) == (200, "success")


@pytest.mark.parametrize(
    ("join_request", "text"),
    [
        ("", "empty"),
        ("!!!*", "not base64url"),
        (join_request_param()[:-12], ""),
        ("CAE", "carries no JoinRequest"),
    ],
)
async def test_malformed_join_requests_are_400(
    server: RtcServer, http: aiohttp.ClientSession, join_request: str, text: str
) -> None:
    status, body = await get(http, server, "/rtc/v1", token("alice"), join_request=join_request)
    assert status == 400 and text in body and "join_request" in body
    assert server.rooms.stats()["rooms"] == 0


async def test_missing_join_request_and_the_legacy_endpoint(
    server: RtcServer, http: aiohttp.ClientSession
) -> None:
    status, body = await get(http, server, "/rtc/v1", token("alice"))
    assert status == 400 and "missing join_request" in body
    status, body = await get(http, server, "/rtc", token("alice"), room="room-1")
    assert status == 404 and "/rtc/v1" in body
    plain = {"Authorization": f"Bearer {token('alice')}"}
    params = {"join_request": join_request_param()}
    async with http.get(server.http_url + "/rtc/v1", headers=plain, params=params) as resp:
        assert resp.status == 400 and "WebSocket" in await resp.text()


async def test_the_stats_endpoint_needs_the_admin_credential(
    server: RtcServer, http: aiohttp.ClientSession
) -> None:
    url = server.http_url + "/callboard/v1/rtc/stats"
    async with http.get(url) as resp:
        assert resp.status == 401
    async with http.get(url, headers={"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}) as resp:
        assert (await resp.json())["peer_connections"] == 0


async def test_another_projects_token_joins_another_room(
    server: RtcServer, http: aiohttp.ClientSession
) -> None:
    other = await server.store.create_project("other")
    key = await server.store.add_key(other.project_id)
    alice = await connect(server, "alice")
    mallory = await connect(server, "mallory", key=key.key, secret=key.secret)
    try:
        await asyncio.sleep(0.3)
        assert alice.remote_identities == set() and mallory.remote_identities == set()
        await mallory.room.local_participant.publish_data(b"psst")
        await asyncio.sleep(0.3)
        assert alice.data == []
        assert await alice.room.sid != await mallory.room.sid
    finally:
        await alice.close()
        await mallory.close()


# -- misbehaving after the upgrade


async def raw_join(
    http: aiohttp.ClientSession, server: RtcServer, identity: str, **kw: object
) -> aiohttp.ClientWebSocketResponse:
    url = f"{server.url}/rtc/v1?join_request={join_request_param(**kw)}"  # type: ignore[arg-type]
    return await http.ws_connect(url, headers={"Authorization": f"Bearer {token(identity)}"})


async def next_response(ws: aiohttp.ClientWebSocketResponse) -> pb.SignalResponse | None:
    msg = await asyncio.wait_for(ws.receive(), 5)
    if msg.type != aiohttp.WSMsgType.BINARY:
        return None
    return pb.SignalResponse.FromString(msg.data)


async def test_a_non_protobuf_signal_request_closes_with_a_reason(
    server: RtcServer, http: aiohttp.ClientSession
) -> None:
    alice = await connect(server, "alice")
    try:
        ws = await raw_join(http, server, "garbler")
        assert (await next_response(ws)).WhichOneof("message") == "join"  # type: ignore[union-attr]
        await eventually(lambda: alice.remote_identities == {"garbler"})
        await ws.send_bytes(b"\xff\xfe definitely not protobuf")
        messages = [m async for m in ws]
        leave = pb.SignalResponse.FromString(messages[-1].data) if messages else None
        assert leave is not None and leave.WhichOneof("message") == "leave"
        assert ws.close_code == 1007
        await eventually(lambda: alice.left == ["garbler"])
        await alice.room.local_participant.publish_data(b"fine")  # alice is unaffected
        assert alice.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
    finally:
        await alice.close()


async def test_a_text_frame_closes_with_a_reason(
    server: RtcServer, http: aiohttp.ClientSession
) -> None:
    ws = await raw_join(http, server, "texter")
    await next_response(ws)
    await ws.send_str('{"ping": 1}')
    async for _ in ws:
        pass
    assert ws.close_code == 1007
    await eventually(lambda: server.rooms.stats()["participants"] == 0)


async def test_an_sdp_the_server_cannot_answer_gets_leave_and_joins_nothing(
    server: RtcServer, http: aiohttp.ClientSession
) -> None:
    ws = await raw_join(http, server, "broken", offer_sdp="v=0\r\nthis is not SDP\r\n")
    first = await next_response(ws)
    assert first is not None and first.WhichOneof("message") == "leave"
    assert first.leave.reason == models.DisconnectReason.JOIN_FAILURE
    async for _ in ws:
        pass
    assert ws.close_code == 1000
    await eventually(lambda: server.rooms.stats()["peer_connections"] == 0)
    assert server.rooms.stats()["rooms"] == 0


async def test_a_reconnect_request_is_told_to_rejoin(
    server: RtcServer, http: aiohttp.ClientSession
) -> None:
    ws = await raw_join(http, server, "alice", reconnect=True)
    first = await next_response(ws)
    assert first is not None and first.leave.action == pb.LeaveRequest.Action.RECONNECT
    assert server.rooms.stats()["participants"] == 0


async def test_a_client_that_goes_silent_is_removed_after_the_ping_timeout(
    server: RtcServer, http: aiohttp.ClientSession
) -> None:
    alice = await connect(server, "alice")
    try:
        ws = await raw_join(http, server, "ghost")
        await next_response(ws)
        await eventually(lambda: alice.remote_identities == {"ghost"})
        started = time.monotonic()
        await eventually(lambda: alice.left == ["ghost"], timeout_s=8)
        assert time.monotonic() - started >= 2  # ping timeout is 3 s in these tests
        leave = [m async for m in ws if m.type == aiohttp.WSMsgType.BINARY]
        reasons = [pb.SignalResponse.FromString(m.data).leave.reason for m in leave]
        assert models.DisconnectReason.CONNECTION_TIMEOUT in reasons
        assert alice.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
    finally:
        await alice.close()


async def test_a_client_whose_socket_drops_is_removed_at_once(
    server: RtcServer, http: aiohttp.ClientSession
) -> None:
    alice = await connect(server, "alice")
    try:
        ws = await raw_join(http, server, "dropper")
        await next_response(ws)
        await eventually(lambda: alice.remote_identities == {"dropper"})
        assert ws._response.connection is not None
        ws._response.connection.transport.abort()  # type: ignore[union-attr]
        await eventually(lambda: alice.left == ["dropper"], timeout_s=2)
    finally:
        await alice.close()


async def test_oversized_packets_are_dropped_and_the_room_goes_on(server: RtcServer) -> None:
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    try:
        await eventually(lambda: bob.remote_identities == {"alice"})
        local = alice.room.local_participant
        # The SDK itself refuses reliable packets over the SCTP message size (64000 bytes), so
        # only a lossy one can exceed a server limit (LiveKit's 15 KiB) from the real client.
        await local.publish_data(b"y" * (20 * 1024), reliable=False)
        await local.publish_data(b"x" * 63_000, reliable=True)
        await local.publish_data(b"small")
        await eventually(lambda: [len(p.data) for p in bob.data] == [63_000, 5])
        assert server.rooms.stats().get("data.dropped.oversize") == 1
    finally:
        await alice.close()
        await bob.close()


async def test_a_data_flood_is_rate_limited_and_the_room_goes_on(tmp_path: Path) -> None:
    async with rtc_server(tmp_path, rtc_data_packets_per_s=50.0) as server:
        alice = await connect(server, "alice")
        bob = await connect(server, "bob")
        try:
            await eventually(lambda: bob.remote_identities == {"alice"})
            started = time.monotonic()
            for i in range(400):
                await alice.room.local_participant.publish_data(f"{i}".encode(), reliable=False)
            flood_s = time.monotonic() - started
            await eventually(lambda: server.rooms.stats().get("data.dropped.rate_limited", 0) > 0)
            await asyncio.sleep(1.2)  # the bucket refills
            await alice.room.local_participant.publish_data(b"after-the-flood")
            await eventually(lambda: bob.data and bob.data[-1].data == b"after-the-flood")
            # one second of burst plus the rate over the flood's duration, and the last packet
            assert len(bob.data) <= 50 * (1 + flood_s + 0.5) + 1
        finally:
            await alice.close()
            await bob.close()
