"""Room tests with the real LiveKit rtc SDK against a callboard server running in the test's loop.

The server runs in-process (same event loop as the SDK clients) so a test can reach the room
model directly (kick, send from the server, count peer connections and tasks). WebRTC needs a
non-loopback interface: run these through `scripts/test.sh`, which makes a network namespace
with a veth pair; `needs_netns` skips them anywhere else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import gzip
import inspect
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from livekit import api, rtc
from livekit.protocol import models
from livekit.protocol import rtc as pb

from callboard.rooms.contract import JoinContext, JoinRefused, ParticipantView, RoomView
from callboard.rooms.state import DataKind
from callboard.rtc.manager import RoomManager
from callboard.server.app import (
    DEV_ADMIN_TOKEN,
    DEV_KEY,
    DEV_SECRET,
    create_app,
    ensure_dev_project,
)
from callboard.settings import Settings
from callboard.store.base import ApiKey
from callboard.store.sqlite import SqliteStore
from tests.support.server import free_port

needs_netns = pytest.mark.skipif(
    os.environ.get("CALLBOARD_IN_TEST_NETNS") != "1",
    reason="WebRTC needs the network namespace that scripts/test.sh makes",
)
# The app uses plain string keys (its own choice); in-process that warning would fail the test.
in_process_app = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")

# Short timers so lifecycle tests take seconds.
FAST_ROOMS = {
    "rtc_ping_interval_s": 1,
    "rtc_ping_timeout_s": 3,
    "room_departure_timeout_s": 1,
    "room_empty_timeout_s": 2,
}


@dataclass
class RtcServer:
    app: web.Application
    runner: web.AppRunner
    store: SqliteStore
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rooms(self) -> RoomManager:
        manager: RoomManager = self.app["rooms"]
        return manager

    @property
    def project_id(self) -> str:
        project = self.store.get_project("dev")
        assert project is not None
        return project.project_id


@contextlib.asynccontextmanager
async def rtc_server(tmp_path: Path, **overrides: Any) -> AsyncIterator[RtcServer]:
    settings = dataclasses.replace(
        Settings(dev=True, db=str(tmp_path / "rooms.db"), port=free_port()),
        **{**FAST_ROOMS, **overrides},
    )
    store = SqliteStore(settings.db)
    await store.open()
    await ensure_dev_project(store)
    app = create_app(settings, store, DEV_ADMIN_TOKEN)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.port).start()
    try:
        yield RtcServer(app, runner, store, settings.port)
    finally:
        await runner.cleanup()
        await store.close()


def token(
    identity: str,
    room: str = "room-1",
    *,
    key: str = DEV_KEY,
    secret: str = DEV_SECRET,
    name: str = "",
    kind: str = "",
    room_config: Any = None,
    attributes: dict[str, str] | None = None,
    ttl_s: int = 600,
    **grants: Any,
) -> str:
    grants = {"room_join": True, "room": room, "can_update_own_metadata": True, **grants}
    builder = (
        api.AccessToken(key, secret).with_identity(identity).with_grants(api.VideoGrants(**grants))
    )
    builder = builder.with_ttl(datetime.timedelta(seconds=ttl_s))
    if name:
        builder = builder.with_name(name)
    if kind:
        builder = builder.with_kind(kind)
    if attributes:
        builder = builder.with_attributes(attributes)
    if room_config is not None:
        builder = builder.with_room_config(room_config)
    return builder.to_jwt()


@dataclass
class Client:
    """A real SDK room plus what it has seen, recorded by its event handlers."""

    identity: str
    room: rtc.Room = field(default_factory=rtc.Room)
    data: list[rtc.DataPacket] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    attributes: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    disconnected: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        room = self.room
        room.on("data_received", self.data.append)
        room.on("participant_connected", lambda p: self.joined.append(p.identity))
        room.on("participant_disconnected", lambda p: self.left.append(p.identity))
        room.on(
            "participant_attributes_changed",
            lambda changed, p: self.attributes.append((p.identity, dict(p.attributes))),
        )
        room.on("disconnected", self.disconnected.append)

    @property
    def remote_identities(self) -> set[str]:
        return {p.identity for p in self.room.remote_participants.values()}

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.room.disconnect()


async def connect(server: RtcServer, identity: str, room: str = "room-1", **kw: Any) -> Client:
    client = Client(identity)
    await client.room.connect(server.url, token(identity, room, **kw))
    return client


async def eventually(predicate: Callable[[], Any], timeout_s: float = 10.0) -> None:
    """Wait for a condition the other side makes true (the predicate may be async)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout_s}s")


def join_request_param(
    offer_sdp: str = "", *, reconnect: bool = False, compress: bool = True
) -> str:
    """The join_request query value a LiveKit SDK would send (unpadded base64url)."""
    request = pb.JoinRequest(
        client_info=models.ClientInfo(sdk=models.ClientInfo.SDK.PYTHON, protocol=17),
        reconnect=reconnect,
    )
    if offer_sdp:
        request.publisher_offer.CopyFrom(pb.SessionDescription(type="offer", sdp=offer_sdp, id=1))
    inner = request.SerializeToString()
    wrapped = pb.WrappedJoinRequest(
        compression=pb.WrappedJoinRequest.Compression.GZIP if compress else 0,
        join_request=gzip.compress(inner) if compress else inner,
    )
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode().rstrip("=")


# -- fakes for driving the room model without I/O (unit tests)


@dataclass
class FakeEdge:
    signals: list[pb.SignalResponse] = field(default_factory=list)
    data: list[tuple[DataKind, bytes]] = field(default_factory=list)
    leaves: list[tuple[int, int]] = field(default_factory=list)
    open: bool = True

    def send_signal(self, msg: pb.SignalResponse) -> None:
        self.signals.append(msg)

    def send_data(self, kind: DataKind, payload: bytes) -> bool:
        if self.open:
            self.data.append((kind, payload))
        return self.open

    def disconnect(self, reason: models.DisconnectReason, action: pb.LeaveRequest.Action) -> None:
        self.leaves.append((reason, action))

    def updates(self) -> list[models.ParticipantInfo]:
        return [p for m in self.signals if m.HasField("update") for p in m.update.participants]

    def packets(self) -> list[models.DataPacket]:
        return [models.DataPacket.FromString(payload) for _, payload in self.data]

    def of(self, kind: str) -> list[pb.SignalResponse]:
        return [m for m in self.signals if m.WhichOneof("message") == kind]


@dataclass
class Recorder:
    events: list[tuple[str, Any]] = field(default_factory=list)
    refuse: str = ""

    def admit(self, ctx: JoinContext) -> None:
        self.events.append(("admit", ctx))
        if self.refuse:
            raise JoinRefused(self.refuse)

    def room_started(self, room: RoomView, key: ApiKey | None) -> None:
        self.events.append(("room_started", room))

    def participant_joined(self, ctx: JoinContext) -> None:
        self.events.append(("joined", ctx))

    def participant_left(self, room: RoomView, participant: ParticipantView, reason: str) -> None:
        self.events.append(("left", (participant.identity, reason)))

    def room_finished(self, room: RoomView, reason: str) -> None:
        self.events.append(("finished", (room.name, reason)))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events if kind != "admit"]
