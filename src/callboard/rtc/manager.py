"""The room model on the event loop: timers, the store, live connections and their counts.

`RoomManager` is what the rest of the server holds (`app["rooms"]`). It owns the I/O-free
`RoomModel`, ticks it, writes rooms to the store when a join creates one (and deletes them when
they finish), keeps the live sessions, peer connections and tasks it started (so tests and
operators can check that none leak: `stats()`), and offers the RoomService operations.

The observer (dispatch, webhooks, event log) can be replaced at any time: `manager.observer = …`.
Its notifications are shielded: an exception in one is logged, never allowed to leave the model
half-updated. `admit` is the exception: its JoinRefused is how a join is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from aiortc import RTCIceServer
from livekit.protocol import models
from livekit.protocol import rtc as pb

from callboard.protocol import ids
from callboard.protocol.errors import NotFound
from callboard.rooms.contract import (
    JoinContext,
    ParticipantView,
    RoomObserver,
    RoomView,
    TrackView,
)
from callboard.rooms.limits import RoomLimits
from callboard.rooms.model import JoinAttempt, Joined, RoomModel, wall_clock_ms
from callboard.rooms.null import NullObserver
from callboard.rooms.state import DataKind, ParticipantEdge
from callboard.rtc import ice
from callboard.rtc.media import MediaRouter
from callboard.rtc.peer import PeerEdge
from callboard.rtc.signal import SignalSettings
from callboard.settings import Settings
from callboard.store.base import ApiKey, Store
from callboard.store.base import Room as StoredRoom

if TYPE_CHECKING:
    from callboard.rtc.session import RtcSession

log = logging.getLogger("callboard.rooms")

TICK_INTERVAL_S = 0.2


def limits_from(settings: Settings) -> RoomLimits:
    return RoomLimits(
        data_packets_per_s=settings.rtc_data_packets_per_s,
        data_bytes_per_s=settings.rtc_data_bytes_per_s,
        ping_timeout_ms=ping_timeout_s(settings) * 1000,
        empty_timeout_s=settings.room_empty_timeout_s,
        departure_timeout_s=settings.room_departure_timeout_s,
    )


def ping_timeout_s(settings: Settings) -> int:
    """At least one interval more than the ping interval, or every client would time out."""
    return max(settings.rtc_ping_timeout_s, settings.rtc_ping_interval_s + 1)


class _Shielded:
    """The observer as the model sees it: notifications logged-not-raised, store kept in step."""

    def __init__(self, manager: RoomManager) -> None:
        self._manager = manager

    def admit(self, ctx: JoinContext) -> None:
        self._manager.observer.admit(ctx)

    def room_started(self, room: RoomView, key: ApiKey | None) -> None:
        self._call("room_started", room, key)

    def participant_joined(self, ctx: JoinContext) -> None:
        self._call("participant_joined", ctx)

    def participant_left(self, room: RoomView, participant: ParticipantView, reason: str) -> None:
        self._call("participant_left", room, participant, reason)

    def track_published(self, room: RoomView, p: ParticipantView, track: TrackView) -> None:
        self._optional("track_published", room, p, track)

    def track_unpublished(self, room: RoomView, p: ParticipantView, track: TrackView) -> None:
        self._optional("track_unpublished", room, p, track)

    def _optional(self, name: str, *args: Any) -> None:
        if getattr(self._manager.observer, name, None) is not None:
            self._call(name, *args)

    def room_finished(self, room: RoomView, reason: str) -> None:
        log.info("room %s (%s) finished: %s", room.name, room.sid, reason)
        self._manager.spawn(self._manager.store.delete_room(room.project_id, room.name))
        self._call("room_finished", room, reason)

    def _call(self, name: str, *args: Any) -> None:
        try:
            getattr(self._manager.observer, name)(*args)
        except Exception:
            log.exception("room observer failed in %s", name)


class RoomManager:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        observer: RoomObserver | None = None,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        node_id: str = "",
    ) -> None:
        self.settings = settings
        self.store = store
        self.observer: RoomObserver = observer or NullObserver()
        self.model = RoomModel(_Shielded(self), limits_from(settings), clock_ms)
        self.ice_servers = ice.parse_ice_servers(settings.ice_servers)
        self.signal = SignalSettings(
            ping_interval_s=settings.rtc_ping_interval_s,
            ping_timeout_s=ping_timeout_s(settings),
            node_id=node_id or ids.new_id("ND_"),
            ice_servers=tuple(ice.for_clients(self.ice_servers)),
        )
        self.media = MediaRouter(self)
        self.model.media = self.media
        self.sessions: dict[str, RtcSession] = {}  # by participant sid
        self.peers: set[PeerEdge] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None

    # -- lifecycle

    def start(self) -> None:
        """Track the rooms the store holds (their timers run again) and start ticking."""
        for project in self.store.list_projects():
            for stored in self.store.list_rooms(project.project_id):
                self.model.open_room(stored, announce=False)
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def stop(self, timeout_s: float = 3.0) -> None:
        """Tell everyone the server is going away, let the sessions end, close what is left."""
        self.model.close_all()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.sessions:
                    await asyncio.sleep(0.02)
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        for peer in list(self.peers):
            await self.close_peer(peer)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL_S)
            try:
                self.model.tick(self.model.clock_ms())
                self.media.tick()
            except Exception:
                log.exception("room timers failed")

    # -- what sessions use

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """A task the manager keeps (counted in stats, cancelled at stop)."""
        task = asyncio.get_running_loop().create_task(coro, name=name or None)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("room task %s failed", task.get_name(), exc_info=task.exception())

    def new_peer(
        self, on_data: Callable[[DataKind, bytes], None], on_connected: Callable[[], None]
    ) -> PeerEdge:
        peer = PeerEdge(
            self.server_ice_servers(),
            node_ip=self.settings.rtc_node_ip,
            on_data=on_data,
            on_connected=on_connected,
        )
        self.peers.add(peer)
        return peer

    def server_ice_servers(self) -> list[RTCIceServer]:
        return ice.for_server(self.ice_servers)

    async def close_peer(self, peer: PeerEdge) -> None:
        try:
            await peer.close()
        except Exception:
            log.exception("closing a peer connection failed")
        finally:
            self.peers.discard(peer)

    def join(self, attempt: JoinAttempt, edge: ParticipantEdge) -> Joined:
        """Admit (or raise JoinRefused); a room this join creates is saved to the store."""
        joined = self.model.join(attempt, edge)
        if joined.store_room is not None:
            self.spawn(self.store.save_room(joined.store_room), f"save room {attempt.room_name}")
        return joined

    def stats(self) -> dict[str, int]:
        counts = {
            "rooms": self.model.room_count(),
            "participants": self.model.participant_count(),
            "sessions": len(self.sessions),
            "peer_connections": len(self.peers),
            "tasks": len(self.tasks),
            "forward_tracks": sum(len(p.section_tracks) for p in self.peers),
            **self.media.stats(),
        }
        counts.update(self.model.counters)
        return counts

    # -- RoomService operations (Twirp handlers call these; NotFound / InvalidArgument raised)

    def open_room(self, stored: StoredRoom, key: ApiKey | None = None) -> RoomView:
        """After CreateRoom: track the stored room so its empty_timeout runs; room_started."""
        return self.model.open_room(stored, key)

    def list_participants(self, project_id: str, room: str) -> list[ParticipantView]:
        return self.model.list_participants(project_id, room)

    def participant_infos(self, project_id: str, room: str) -> list[models.ParticipantInfo]:
        return self.model.participant_infos(project_id, room)

    def get_participant(self, project_id: str, room: str, identity: str) -> ParticipantView:
        return self.model.get_participant(project_id, room, identity)

    def participant_info(self, project_id: str, room: str, identity: str) -> models.ParticipantInfo:
        return self.model.participant_info(project_id, room, identity)

    def remove_participant(self, project_id: str, room: str, identity: str) -> ParticipantView:
        return self.model.remove_participant(project_id, room, identity)

    def update_participant(
        self,
        project_id: str,
        room: str,
        identity: str,
        *,
        metadata: str | None = None,
        name: str | None = None,
        attributes: Mapping[str, str] | None = None,
        permission: models.ParticipantPermission | None = None,
    ) -> models.ParticipantInfo:
        return self.model.update_participant(
            project_id,
            room,
            identity,
            metadata=metadata,
            name=name,
            attributes=attributes,
            permission=permission,
        )

    def mute_published_track(
        self, project_id: str, room: str, identity: str, track_sid: str, muted: bool
    ) -> models.TrackInfo:
        return self.model.mute_published_track(project_id, room, identity, track_sid, muted)

    def update_subscriptions(
        self, project_id: str, room: str, identity: str, req: pb.UpdateSubscription
    ) -> None:
        self.model.update_subscriptions(project_id, room, identity, req)

    def send_data(
        self,
        project_id: str,
        room: str,
        payload: bytes,
        kind: DataKind = DataKind.RELIABLE,
        destination_identities: tuple[str, ...] | list[str] = (),
        topic: str | None = None,
    ) -> int:
        return self.model.send_data(project_id, room, payload, kind, destination_identities, topic)

    async def update_room_metadata(self, project_id: str, room: str, metadata: str) -> RoomView:
        """Live rooms tell their participants (room_update); the stored record is updated too."""
        stored = self.store.get_room(project_id, room)
        live = self.model.get_room(project_id, room) is not None
        view = self.model.update_room_metadata(project_id, room, metadata) if live else None
        if stored is not None:
            stored = dataclasses.replace(stored, metadata=metadata)
            await self.store.save_room(stored)
            view = view or _stored_view(stored)
        if view is None:
            raise NotFound(f"room {room!r} not found")
        return view

    def close_room(self, project_id: str, room: str, reason: str = "room deleted") -> bool:
        """Disconnect everyone (leave, ROOM_DELETED), finish the room; False if it was not live.

        Finishing deletes the stored room and tells the observer `room_finished`."""
        return self.model.close_room(project_id, room, reason)


def _stored_view(stored: StoredRoom) -> RoomView:
    return RoomView(
        project_id=stored.project_id,
        name=stored.name,
        sid=stored.sid,
        created_at_ms=stored.created_at_ms,
        metadata=stored.metadata,
        empty_timeout_s=stored.empty_timeout_s,
        departure_timeout_s=stored.departure_timeout_s,
        max_participants=stored.max_participants,
        creator_key=stored.creator_key,
        owner=stored.owner,
    )
