"""RtcSession over a fake WebSocket: message order, the client messages it handles, how it ends.

No network: the session's peer connection is created but never negotiated (no offer), or given an
offer it cannot answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import WSMessage, WSMsgType, web
from livekit.protocol import models
from livekit.protocol import rtc as pb

from callboard.protocol.tokens import TokenClaims, VideoGrant
from callboard.rooms.model import JoinAttempt
from callboard.rtc import session as session_mod
from callboard.rtc.manager import RoomManager
from callboard.rtc.session import RtcSession
from callboard.settings import Settings
from callboard.store.base import ApiKey
from callboard.store.sqlite import SqliteStore
from tests.support.rtc import FakeEdge

Reason = models.DisconnectReason
_END = WSMessage(WSMsgType.CLOSED, None, None)


class FakeWs:
    """Enough of aiohttp's WebSocketResponse for a session: feed messages in, read frames out."""

    def __init__(self, stuck: bool = False) -> None:
        self.incoming: asyncio.Queue[WSMessage] = asyncio.Queue()
        self.sent: list[pb.SignalResponse] = []
        self.closed: tuple[int, bytes] | None = None
        self.stuck = stuck

    async def send_bytes(self, data: bytes) -> None:
        if self.stuck:
            await asyncio.Event().wait()
        if self.closed:
            raise ConnectionResetError("closed")
        self.sent.append(pb.SignalResponse.FromString(data))

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        if self.closed is None:
            self.closed = (code, message)
            self.incoming.put_nowait(_END)
        return True

    def __aiter__(self) -> FakeWs:
        return self

    async def __anext__(self) -> WSMessage:
        msg = await self.incoming.get()
        if msg.type == WSMsgType.CLOSED:
            raise StopAsyncIteration
        return msg

    def feed(self, request: pb.SignalRequest | bytes | str) -> None:
        if isinstance(request, str):
            self.incoming.put_nowait(WSMessage(WSMsgType.TEXT, request, None))
            return
        data = request if isinstance(request, bytes) else request.SerializeToString()
        self.incoming.put_nowait(WSMessage(WSMsgType.BINARY, data, None))

    def kinds(self) -> list[str]:
        return [str(m.WhichOneof("message")) for m in self.sent]


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[RoomManager]:
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    manager = RoomManager(Settings(), store)
    try:
        yield manager
    finally:
        await manager.stop(timeout_s=0.1)
        await store.close()


KEY = ApiKey("APIk", "s", "P_1", "", 0)


def attempt(identity: str, room: str = "r1", room_config: Any = None) -> JoinAttempt:
    grant = VideoGrant(room_join=True, room=room)
    claims = TokenClaims(
        api_key="APIk", identity=identity, expires_at_s=0, video=grant, room_config=room_config
    )
    return JoinAttempt(KEY, claims, room)


async def start(
    manager: RoomManager, identity: str, request: pb.JoinRequest | None = None, **kw: Any
) -> tuple[RtcSession, FakeWs, asyncio.Task[None]]:
    ws = FakeWs(**kw)
    session = RtcSession(
        manager, cast(web.WebSocketResponse, ws), attempt(identity), request or pb.JoinRequest()
    )
    task = asyncio.get_running_loop().create_task(session.run())
    await until(lambda: ws.closed or (session.sid if ws.stuck else ws.sent))
    return session, ws, task


async def until(predicate: Any, timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_join_response_comes_first_and_pings_are_answered(manager: RoomManager) -> None:
    _, ws, task = await start(manager, "alice")
    join = ws.sent[0].join
    assert (join.participant.identity, join.ping_interval, join.ping_timeout) == ("alice", 5, 15)
    ws.feed(pb.SignalRequest(ping_req=pb.Ping(timestamp=42)))
    ws.feed(pb.SignalRequest(ping=7))
    await until(lambda: len(ws.sent) == 3)
    assert ws.sent[1].pong_resp.last_ping_timestamp == 42 and ws.sent[2].pong > 0
    ws.feed(pb.SignalRequest(leave=pb.LeaveRequest()))
    await task
    assert manager.stats()["participants"] == 0 and manager.stats()["sessions"] == 0
    assert manager.stats()["peer_connections"] == 0


async def test_update_metadata_is_answered(manager: RoomManager) -> None:
    _, ws, task = await start(manager, "alice")
    ws.feed(pb.SignalRequest(update_metadata=pb.UpdateParticipantMetadata(request_id=9, name="A")))
    await until(lambda: "request_response" in ws.kinds())
    response = ws.sent[-1].request_response
    assert (response.request_id, response.reason) == (9, pb.RequestResponse.Reason.NOT_ALLOWED)
    await ws.close()
    await task


async def test_the_others_hear_about_a_join_and_a_vanished_socket(manager: RoomManager) -> None:
    bob = FakeEdge()
    manager.join(attempt("bob"), bob)
    _, ws, task = await start(manager, "alice")
    assert [p.identity for p in bob.updates()] == ["alice"]
    await ws.close()  # no leave: the socket just went away
    await task
    assert bob.updates()[-1].disconnect_reason == Reason.SIGNAL_CLOSE


async def test_garbage_and_text_frames_close_with_1007(manager: RoomManager) -> None:
    for bad in (b"\xff\xff garbage", '{"leave": {}}'):
        _, ws, task = await start(manager, "alice")
        ws.feed(bad)
        await task
        assert ws.closed is not None and ws.closed[0] == 1007
        assert ws.kinds()[-1] == "leave"
    assert manager.stats()["participants"] == 0


async def test_a_bad_candidate_and_unknown_messages_are_ignored(
    manager: RoomManager, caplog: pytest.LogCaptureFixture
) -> None:
    _, ws, task = await start(manager, "alice")
    for _ in range(3):
        ws.feed(pb.SignalRequest(trickle=pb.TrickleRequest(candidateInit="{not json")))
    ws.feed(pb.SignalRequest(sync_state=pb.SyncState()))
    ws.feed(pb.SignalRequest(add_track=pb.AddTrackRequest(cid="c1")))
    ws.feed(pb.SignalRequest(ping_req=pb.Ping(timestamp=1)))
    await until(lambda: "pong_resp" in ws.kinds())
    assert sum("bad candidate" in r.message for r in caplog.records) == 1
    assert manager.stats()["participants"] == 1
    await ws.close()
    await task


async def test_an_offer_it_cannot_answer_joins_nothing(manager: RoomManager) -> None:
    offer = pb.SessionDescription(type="offer", sdp="v=0\r\n", id=1)
    _, ws, task = await start(manager, "alice", pb.JoinRequest(publisher_offer=offer))
    await task
    assert ws.kinds() == ["leave"] and ws.sent[0].leave.reason == Reason.JOIN_FAILURE
    assert manager.stats()["rooms"] == 0


async def test_a_refused_join_after_the_upgrade_says_leave(manager: RoomManager) -> None:
    manager.join(attempt("alice", room_config={"maxParticipants": 1}), FakeEdge())
    _, ws, task = await start(manager, "bob")
    await task
    assert ws.kinds() == ["leave"] and ws.closed is not None and b"full" in ws.closed[1]


async def test_a_kick_sends_leave_then_closes(manager: RoomManager) -> None:
    _, ws, task = await start(manager, "alice")
    manager.remove_participant("P_1", "r1", "alice")
    await task
    assert ws.kinds()[-1] == "leave"
    assert ws.sent[-1].leave.reason == Reason.PARTICIPANT_REMOVED
    assert ws.closed == (1000, b"participant_removed")


async def test_a_client_that_does_not_read_is_cut_off(
    manager: RoomManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_mod, "MAX_OUTBOX", 10)
    monkeypatch.setattr(session_mod, "SENDER_DRAIN_S", 0.05)
    _, ws, task = await start(manager, "slow", stuck=True)
    for i in range(20):
        manager.join(attempt(f"p{i}"), FakeEdge())  # each join is an update for "slow"
    await until(lambda: ws.closed is not None)
    assert ws.closed is not None and ws.closed[0] == 1008
    await task
    assert manager.model.participant_count() == 20
