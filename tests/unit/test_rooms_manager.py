"""RoomManager: the room model on the loop, with a real SQLite store and fake edges (no WebRTC)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from livekit.protocol import models

from callboard.protocol.errors import NotFound
from callboard.protocol.tokens import TokenClaims, VideoGrant
from callboard.rooms.contract import JoinContext, RoomView
from callboard.rooms.model import JoinAttempt
from callboard.rtc.manager import RoomManager, limits_from, ping_timeout_s
from callboard.settings import Settings
from callboard.store.base import ApiKey
from callboard.store.base import Room as StoredRoom
from callboard.store.sqlite import SqliteStore
from tests.support.rtc import FakeEdge, Recorder


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(str(tmp_path / "m.db"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def key(store: SqliteStore) -> ApiKey:
    project = await store.create_project("p")
    return await store.add_key(project.project_id, developer="jack")


@pytest.fixture
async def manager(store: SqliteStore) -> AsyncIterator[RoomManager]:
    manager = RoomManager(Settings(), store, Recorder())
    try:
        yield manager
    finally:
        await manager.stop(timeout_s=0.1)


def attempt(
    key: ApiKey, identity: str, room: str = "r1", store: SqliteStore | None = None
) -> JoinAttempt:
    video = VideoGrant(room_join=True, room=room)
    claims = TokenClaims(api_key=key.key, identity=identity, expires_at_s=0, video=video)
    stored = store.get_room(key.project_id, room) if store else None
    return JoinAttempt(key, claims, room, stored)


def test_settings_become_limits_and_a_ping_timeout_longer_than_the_interval() -> None:
    settings = Settings(rtc_ping_interval_s=10, rtc_ping_timeout_s=4, rtc_data_packets_per_s=7.0)
    assert ping_timeout_s(settings) == 11
    limits = limits_from(settings)
    assert limits.ping_timeout_ms == 11_000 and limits.data_packets_per_s == 7.0
    assert limits.empty_timeout_s == 300 and limits.departure_timeout_s == 20


def test_a_bad_ice_server_setting_fails_at_start(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="ICE server 'stun:'"):
        RoomManager(Settings(ice_servers=("stun:",)), store)


async def test_a_join_that_creates_a_room_stores_it(
    manager: RoomManager, store: SqliteStore, key: ApiKey
) -> None:
    joined = manager.join(attempt(key, "alice"), FakeEdge())
    assert joined.store_room is not None
    await _settle(manager, store)
    stored = store.get_room(key.project_id, "r1")
    assert stored is not None and (stored.sid, stored.creator_key, stored.owner) == (
        joined.room.sid,
        key.key,
        "jack",
    )


async def test_a_finished_room_leaves_the_store(
    manager: RoomManager, store: SqliteStore, key: ApiKey
) -> None:
    manager.join(attempt(key, "alice"), FakeEdge())
    await _settle(manager, store)
    assert manager.close_room(key.project_id, "r1") is True
    await _settle(manager, store)
    assert store.get_room(key.project_id, "r1") is None
    assert manager.close_room(key.project_id, "r1") is False


async def test_stored_rooms_are_tracked_at_start_without_room_started(
    store: SqliteStore, key: ApiKey
) -> None:
    await store.save_room(StoredRoom(key.project_id, "api-room", "RM_api", 0, empty_timeout_s=5))
    observer = Recorder()
    manager = RoomManager(Settings(), store, observer)
    manager.start()
    try:
        assert manager.model.get_room(key.project_id, "api-room") is not None
        assert observer.kinds() == []
    finally:
        await manager.stop(timeout_s=0.1)
    assert manager.stats()["tasks"] == 0


async def test_update_room_metadata_live_and_stored_only(
    manager: RoomManager, store: SqliteStore, key: ApiKey
) -> None:
    await store.save_room(StoredRoom(key.project_id, "cold", "RM_cold", 0))
    view = await manager.update_room_metadata(key.project_id, "cold", "m1")
    assert view.metadata == "m1" and store.get_room(key.project_id, "cold").metadata == "m1"  # type: ignore[union-attr]
    edge = FakeEdge()
    manager.join(attempt(key, "alice", "cold", store), edge)
    view = await manager.update_room_metadata(key.project_id, "cold", "m2")
    assert view.metadata == "m2" and edge.of("room_update")
    with pytest.raises(NotFound):
        await manager.update_room_metadata(key.project_id, "nowhere", "m")


class _Broken(Recorder):
    def participant_joined(self, ctx: JoinContext) -> None:
        raise RuntimeError("observer bug")

    def room_finished(self, room: RoomView, reason: str) -> None:
        raise RuntimeError("observer bug")


async def test_observer_bugs_are_logged_not_raised(
    manager: RoomManager, key: ApiKey, caplog: pytest.LogCaptureFixture
) -> None:
    manager.observer = _Broken()
    edge = FakeEdge()
    manager.join(attempt(key, "alice"), edge)
    assert manager.close_room(key.project_id, "r1") is True
    assert edge.leaves == [(models.DisconnectReason.ROOM_DELETED, 0)]
    assert sum("room observer failed" in r.message for r in caplog.records) == 2


async def test_the_api_operations_pass_through(manager: RoomManager, key: ApiKey) -> None:
    alice, bob = FakeEdge(), FakeEdge()
    manager.join(attempt(key, "alice"), alice)
    manager.join(attempt(key, "bob"), bob)
    project = key.project_id
    assert [p.identity for p in manager.list_participants(project, "r1")] == ["alice", "bob"]
    assert manager.get_participant(project, "r1", "bob").owner == "jack"
    assert [i.identity for i in manager.participant_infos(project, "r1")] == ["alice", "bob"]
    assert manager.participant_info(project, "r1", "alice").identity == "alice"
    manager.update_participant(project, "r1", "alice", name="Alice")
    assert bob.updates()[-1].name == "Alice"
    assert manager.send_data(project, "r1", b"hi", destination_identities=["alice"]) == 1
    manager.remove_participant(project, "r1", "bob")
    assert bob.leaves == [(models.DisconnectReason.PARTICIPANT_REMOVED, 0)]
    stats = manager.stats()
    assert (stats["rooms"], stats["participants"], stats["data.forwarded"]) == (1, 1, 1)
    view = manager.open_room(dataclasses.replace(_stored(key), name="opened"))
    assert view.name == "opened"


def _stored(key: ApiKey) -> StoredRoom:
    return StoredRoom(key.project_id, "x", "RM_x", 0)


async def _settle(manager: RoomManager, store: SqliteStore) -> None:
    """Let the manager's store tasks run, then wait for the commit."""
    while manager.tasks:
        await asyncio.sleep(0)
    await store.flush()
