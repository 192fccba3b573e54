"""/agent against a real server: the worker protocol, and the bad input it must survive."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import jwt
import pytest
from google.protobuf import json_format
from livekit.protocol import agent as pb

from callboard.client.worker import worker_token
from tests.support.clients import light_worker, lk_api, project_get
from tests.support.server import DEV_KEY, DEV_SECRET, ServerProcess


async def _connect(
    http: aiohttp.ClientSession, server: ServerProcess, token: str | None = None
) -> aiohttp.ClientWebSocketResponse:
    token = token or worker_token(DEV_KEY, DEV_SECRET)
    return await http.ws_connect(
        f"{server.ws_url}/agent", headers={"Authorization": f"Bearer {token}"}, max_msg_size=0
    )


def _register(agent_name: str = "") -> bytes:
    msg = pb.WorkerMessage()
    msg.register.agent_name = agent_name
    return msg.SerializeToString()


async def _closed(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the server closes; return its close code."""
    async with asyncio.timeout(10):
        async for _ in ws:
            pass
    return ws.close_code


async def _rejected(
    http: aiohttp.ClientSession, server: ServerProcess, headers: dict[str, str]
) -> tuple[int, str]:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"{server.ws_url}/agent", headers=headers)
    async with http.get(
        f"{server.http_url}/agent",
        headers={
            **headers,
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    ) as resp:
        assert resp.status == info.value.status
        return resp.status, await resp.text()


async def test_register_returns_worker_id_and_server_info(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    ws = await _connect(http, server)
    await ws.send_bytes(_register("my-agent"))
    reply = pb.ServerMessage()
    reply.ParseFromString(await ws.receive_bytes(timeout=5))
    assert reply.WhichOneof("message") == "register"
    assert reply.register.worker_id.startswith("AW_") and len(reply.register.worker_id) == 15
    assert reply.register.server_info.version.startswith("callboard-")
    status, body = await project_get(http, server, "/workers")
    assert status == 200
    assert [w["id"] for w in body["workers"]] == [reply.register.worker_id]
    assert body["workers"][0]["agent_name"] == "my-agent"
    await ws.close()


async def test_plain_http_get_is_404(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.http_url}/agent") as resp:
        assert resp.status == 404


@pytest.mark.parametrize(
    ("make_token", "status", "reason"),
    [
        (lambda: None, 401, "missing access token"),
        (lambda: worker_token(DEV_KEY, "not-the-secret"), 401, "invalid token signature"),
        (lambda: worker_token("APInosuchkey", DEV_SECRET), 401, "unknown API key"),
        (
            lambda: jwt.encode(
                {"iss": DEV_KEY, "exp": int(time.time()) - 3600, "video": {"agent": True}},
                DEV_SECRET,
            ),
            401,
            "expired",
        ),
        (lambda: jwt.encode({"iss": DEV_KEY, "video": {"agent": True}}, DEV_SECRET), 401, "exp"),
        (
            lambda: jwt.encode(
                {"iss": DEV_KEY, "exp": int(time.time()) + 60, "video": {"roomJoin": True}},
                DEV_SECRET,
            ),
            403,
            "agent grant",
        ),
        (lambda: "not.a.jwt", 401, "malformed token"),
    ],
    ids=[
        "missing",
        "bad-signature",
        "unknown-key",
        "expired",
        "no-exp",
        "no-agent-grant",
        "garbage",
    ],
)
async def test_bad_credentials_rejected_before_upgrade(
    server: ServerProcess, http: aiohttp.ClientSession, make_token: object, status: int, reason: str
) -> None:
    token = make_token()  # type: ignore[operator]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    got_status, body = await _rejected(http, server, headers)
    assert got_status == status
    assert reason in body
    assert reason in server.log()  # visible in the server log at once


async def test_access_token_query_parameter_is_accepted(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    token = worker_token(DEV_KEY, DEV_SECRET)
    ws = await http.ws_connect(f"{server.ws_url}/agent?access_token={token}")
    await ws.send_bytes(_register())
    reply = pb.ServerMessage()
    reply.ParseFromString(await ws.receive_bytes(timeout=5))
    assert reply.register.worker_id
    await ws.close()


async def test_protojson_worker_gets_protojson_replies(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    ws = await _connect(http, server)
    await ws.send_str('{"register": {"agentName": "json-agent"}}')
    text = await ws.receive_str(timeout=5)
    reply = json_format.Parse(text, pb.ServerMessage())
    assert reply.register.worker_id.startswith("AW_")
    await ws.send_str('{"ping": {"timestamp": "123"}}')
    pong = json_format.Parse(await ws.receive_str(timeout=5), pb.ServerMessage())
    assert pong.pong.last_timestamp == 123 and pong.pong.timestamp > 0
    await ws.close()


async def test_ping_before_register_is_answered(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    ws = await _connect(http, server)
    await ws.send_bytes(pb.WorkerMessage(ping=pb.WorkerPing(timestamp=42)).SerializeToString())
    reply = pb.ServerMessage()
    reply.ParseFromString(await ws.receive_bytes(timeout=5))
    assert reply.pong.last_timestamp == 42
    await ws.close()


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"\xff\xff\xff\xff\x0f", 1003, "not a protobuf"),
        ("this is not json", 1003, "text frame is not"),
        (
            pb.WorkerMessage(update_worker=pb.UpdateWorkerStatus(load=0.5)).SerializeToString(),
            1008,
            "expected register first",
        ),
    ],
    ids=["malformed-protobuf", "text-not-protojson", "message-before-register"],
)
async def test_bad_frames_close_with_code_and_reason(
    server: ServerProcess, http: aiohttp.ClientSession, payload: bytes | str, code: int, reason: str
) -> None:
    ws = await _connect(http, server)
    if isinstance(payload, bytes):
        await ws.send_bytes(payload)
    else:
        await ws.send_str(payload)
    close_code = await _closed(ws)
    assert close_code == code
    assert reason in server.log()
    await _server_still_serves(server, http)


async def test_oversized_frame_closes_1009(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    ws = await _connect(http, server)
    await ws.send_bytes(_register())
    await ws.receive_bytes(timeout=5)
    await ws.send_bytes(b"\x00" * (3 * 1024 * 1024))
    close_code = await _closed(ws)
    assert close_code == 1009
    await _server_still_serves(server, http)


async def test_second_register_closes(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    ws = await _connect(http, server)
    await ws.send_bytes(_register())
    await ws.receive_bytes(timeout=5)
    await ws.send_bytes(_register())
    close_code = await _closed(ws)
    assert close_code == 1008
    assert "second register" in server.log()


async def test_no_register_in_time_closes(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    ws = await _connect(http, server)  # the test server waits 2 s for register
    close_code = await _closed(ws)
    assert close_code == 1008
    assert "no register within 2 s" in server.log()


async def test_websocket_pings_do_not_stretch_the_register_deadline(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    ws = await _connect(http, server)  # pings, is answered, and never registers

    async def keep_pinging() -> None:
        while True:
            await ws.ping(b"still here")
            await asyncio.sleep(0.3)

    pinger = asyncio.create_task(keep_pinging())
    started = time.monotonic()
    close_code = await _closed(ws)
    pinger.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
        await pinger
    assert close_code == 1008 and time.monotonic() - started < 4
    assert "no register within 2 s" in server.log()


async def test_update_job_for_another_workers_job_closes_offender_only(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    owner = await light_worker(http, server, "a")
    intruder = await light_worker(http, server, "b")
    async with lk_api(server) as lkapi:
        from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

        await lkapi.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="a", room="r1")
        )
    assignment = await owner.next("assignment")
    job_id = assignment.assignment.job.id
    await intruder.send(intruder.proto.job_update(job_id, pb.JobStatus.JS_FAILED, "forged"))
    async with asyncio.timeout(10):
        await intruder._reader  # type: ignore[misc]
    assert intruder.close_code == 1008
    _, body = await project_get(http, server, "/workers")
    assert [w["agent_name"] for w in body["workers"]] == ["a"]
    assert body["workers"][0]["jobs"] == [job_id]  # the owner's job is untouched
    await owner.close()


async def test_crashing_worker_leaves_others_and_store_intact(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    steady = await light_worker(http, server, "steady")
    doomed = await _connect(http, server)
    await doomed.send_bytes(_register("doomed"))
    await doomed.receive_bytes(timeout=5)
    doomed._response.connection.transport.abort()  # type: ignore[union-attr]  # a crash, no close
    async with lk_api(server) as lkapi:
        from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

        await lkapi.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="steady", room="r2")
        )
    msg = await steady.next("assignment")
    assert msg.assignment.job.room.name == "r2"
    await steady.close()


async def _server_still_serves(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    worker = await light_worker(http, server, "after")
    assert worker.proto.worker_id.startswith("AW_")
    await worker.close()


@pytest.fixture
def quick_pings(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server that pings a quiet worker after 0.5 s and drops a silent one after 1 s."""
    proc = ServerProcess(db=tmp_path / "pings.db", env={"CALLBOARD_PING_INTERVAL_S": "0.5"})
    proc.start()
    yield proc
    proc.stop()


async def test_a_worker_that_never_answers_pings_is_pinged_then_dropped(
    quick_pings: ServerProcess, http: aiohttp.ClientSession
) -> None:
    server = quick_pings
    ws = await http.ws_connect(
        f"{server.ws_url}/agent", autoping=False,
        headers={"Authorization": f"Bearer {worker_token(DEV_KEY, DEV_SECRET)}"},
    )
    await ws.send_bytes(_register("mute"))
    reply = pb.ServerMessage()
    reply.ParseFromString(await ws.receive_bytes(timeout=5))
    worker_id = reply.register.worker_id
    started = time.monotonic()
    kinds = []
    async with asyncio.timeout(10):
        while (msg := await ws.receive()).type not in (
            aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR
        ):
            kinds.append(msg.type)
    silent_for = time.monotonic() - started
    assert kinds and set(kinds) == {aiohttp.WSMsgType.PING}  # pinged, never answered
    assert 0.9 <= silent_for <= 5, silent_for  # dropped after 2-2.5 intervals of silence
    _, body = await project_get(http, server, "/workers")
    assert body["workers"] == []
    _, log = await project_get(http, server, "/events?kind=worker.disconnected")
    (line,) = [e for e in log["events"] if worker_id in e["message"]]
    assert "silent for" in line["message"] and "no pong" in line["message"]
    assert server.log().count(f"worker {worker_id} from") == 1  # logged once, as a drop


async def test_a_worker_that_answers_pings_stays_and_its_pings_are_answered(
    quick_pings: ServerProcess, http: aiohttp.ClientSession
) -> None:
    server = quick_pings
    steady = await light_worker(http, server, "steady")  # aiohttp answers pings by itself
    probe = await http.ws_connect(
        f"{server.ws_url}/agent", autoping=False,
        headers={"Authorization": f"Bearer {worker_token(DEV_KEY, DEV_SECRET)}"},
    )
    await probe.send_bytes(_register("probe"))
    await probe.receive_bytes(timeout=5)
    await probe.ping(b"are you there")
    async with asyncio.timeout(5):
        while (msg := await probe.receive()).type is not aiohttp.WSMsgType.PONG:
            assert msg.type is aiohttp.WSMsgType.PING  # the server's own, meanwhile
    assert msg.data == b"are you there"
    await probe.close()
    await asyncio.sleep(2.5)  # five intervals: dropped after two if the pongs went unseen
    _, body = await project_get(http, server, "/workers")
    assert [w["agent_name"] for w in body["workers"]] == ["steady"]
    assert "silent for" not in server.log()
    await steady.close()
