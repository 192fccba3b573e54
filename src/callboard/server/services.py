"""Room and dispatch operations shared by every surface (Twirp today; tokens and SIP later).

Each one validates, changes the store and the dispatch core, and returns once the records are
committed: a caller is never told "done" about something a crash could still lose.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from callboard.dispatch.model import (
    DispatchCreated,
    DispatchDeleted,
    DispatchRecord,
    DispatchSpec,
    JobRecord,
    JobType,
    RoomClosed,
    RoomRef,
)
from callboard.protocol import ids
from callboard.protocol.errors import InvalidArgument, NotFound
from callboard.server.auth import Caller
from callboard.server.hub import Hub
from callboard.store.base import Room

log = logging.getLogger("callboard.services")

MAX_METADATA_BYTES = 512 * 1024
MAX_ATTRIBUTES_BYTES = 64 * 1024
MAX_NAME_CHARS = 256
_CONTROL = re.compile(r"[\x00-\x1f]")


@dataclass(frozen=True)
class AgentRequest:
    agent_name: str
    metadata: str = ""


@dataclass(frozen=True)
class RoomConfig:
    """What a caller may set on a room it creates (CreateRoom); defaults for one made on the fly."""

    metadata: str = ""
    empty_timeout_s: int = 0
    departure_timeout_s: int = 0
    max_participants: int = 0
    agents: Sequence[AgentRequest] = ()


def validate_name(value: str, what: str, *, allow_empty: bool = False) -> None:
    if not value and not allow_empty:
        raise InvalidArgument(f"{what} is required", what)
    if len(value) > MAX_NAME_CHARS:
        raise InvalidArgument(
            f"{what} is {len(value)} characters; the limit is {MAX_NAME_CHARS}", what
        )
    if not value.isprintable() and _CONTROL.search(value):  # isprintable: the usual fast answer
        raise InvalidArgument(f"{what} contains control characters", what)


def validate_metadata(value: str, what: str = "metadata") -> None:
    size = len(value.encode())
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(f"{what} is {size} bytes; the limit is {MAX_METADATA_BYTES}", what)


def validate_attributes(attributes: dict[str, str]) -> None:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())
    if size > MAX_ATTRIBUTES_BYTES:
        raise InvalidArgument(
            f"attributes are {size} bytes; the limit is {MAX_ATTRIBUTES_BYTES}", "attributes"
        )


async def create_room(
    hub: Hub,
    caller: Caller,
    name: str,
    config: RoomConfig = RoomConfig(),
    *,
    before_ack: Callable[[Room], object] | None = None,
) -> tuple[Room, bool]:
    """Create the room if missing (returning it and True), else return the existing one and False.

    A new room dispatches its configured agents, or, with none configured, one automatic dispatch
    (agent name "") that only unnamed workers receive. `before_ack` runs before the final flush,
    so what it records (the live room's room.started) is committed when this returns.
    """
    room, created = ensure_room(hub, caller, name, config)
    if created:
        ref = RoomRef(caller.project_id, room.name, room.sid)
        for agent in room_agents(config.agents):
            dispatch_agent(hub, caller, ref, agent, source="room")
    if before_ack is not None:
        before_ack(room)
    await hub.store.flush()
    return room, created


def ensure_room(
    hub: Hub, caller: Caller, name: str, config: RoomConfig = RoomConfig()
) -> tuple[Room, bool]:
    """The room, created (True) if missing; no dispatch, no flush.

    Look-up and submission happen with no await in between, so concurrent creates of one name
    get one room (one sid): the store shows a submitted room before it is committed.
    """
    validate_name(name, "room")
    validate_metadata(config.metadata)
    existing = hub.store.get_room(caller.project_id, name)
    if existing is not None:
        return existing, False
    room = Room(
        project_id=caller.project_id,
        name=name,
        sid=ids.new_id(ids.ROOM),
        created_at_ms=hub.clock_ms(),
        creator_key=caller.key.key,
        owner=caller.owner,
        metadata=config.metadata,
        empty_timeout_s=config.empty_timeout_s,
        departure_timeout_s=config.departure_timeout_s,
        max_participants=config.max_participants,
        agents=tuple((a.agent_name, a.metadata) for a in config.agents),
    )
    hub.store.submit_room(room)
    return room, True


def room_agents(agents: Sequence[AgentRequest]) -> list[AgentRequest]:
    """What a new room dispatches: its configured agents (each name once), or, with none, one
    automatic dispatch (agent name "") that only unnamed workers receive — LiveKit's rule."""
    first: dict[str, AgentRequest] = {}
    for agent in agents:
        first.setdefault(agent.agent_name, agent)
    return list(first.values()) or [AgentRequest("")]


def dispatch_agent(
    hub: Hub, caller: Caller, room: RoomRef, agent: AgentRequest, source: str
) -> str:
    """Create a ROOM dispatch owned by the caller's key (its developer, or production); no flush:
    callers that acknowledge it (Twirp) await `hub.store.flush()` themselves."""
    spec = DispatchSpec(
        dispatch_id=ids.new_id(ids.DISPATCH),
        project_id=caller.project_id,
        owner=caller.owner,
        api_key=caller.key.key,
        agent_name=agent.agent_name,
        room=room,
        metadata=agent.metadata,
        job_type=JobType.ROOM,
        source=source,
        created_at_ms=hub.clock_ms(),
    )
    hub.feed(DispatchCreated(spec, spec.created_at_ms))
    return spec.dispatch_id


async def create_dispatch(
    hub: Hub,
    caller: Caller,
    room_name: str,
    agent: AgentRequest,
    *,
    before_ack: Callable[[Room], object] | None = None,
) -> DispatchRecord:
    """The room (created if missing) gets a dispatch; `before_ack` as in `create_room`."""
    validate_name(room_name, "room")
    validate_name(agent.agent_name, "agent_name", allow_empty=True)
    validate_metadata(agent.metadata)
    room, _ = ensure_room(hub, caller, room_name)
    ref = RoomRef(caller.project_id, room.name, room.sid)
    dispatch_id = dispatch_agent(hub, caller, ref, agent, source="api")
    if before_ack is not None:
        before_ack(room)
    try:
        await hub.store.flush()
    except Exception as exc:
        # The caller hears "failed" and may retry: a dispatch left running would put a second
        # agent in the room. Its worker, if it has one already, is told to stop.
        why = f"its record could not be stored: {exc}"
        hub.feed(DispatchDeleted(dispatch_id, why, hub.clock_ms()))
        raise
    record = hub.core.dispatch(dispatch_id)
    assert record is not None
    return record


def find_dispatch(hub: Hub, caller: Caller, dispatch_id: str) -> DispatchRecord:
    """A live dispatch of the caller's project, else not_found (another project's id included)."""
    record = hub.core.dispatch(dispatch_id)
    if record is None or record.spec.project_id != caller.project_id or record.deleted:
        raise NotFound(f"dispatch {dispatch_id!r} not found")
    return record


async def delete_dispatch(
    hub: Hub, caller: Caller, dispatch_id: str, room_name: str
) -> DispatchRecord:
    record = find_dispatch(hub, caller, dispatch_id)
    if room_name and record.spec.room.name != room_name:
        raise NotFound(f"dispatch {dispatch_id!r} not found in room {room_name!r}")
    hub.feed(DispatchDeleted(dispatch_id, "deleted through the API", hub.clock_ms()))
    await hub.store.flush()
    return hub.core.dispatch(dispatch_id) or record


def list_dispatches(
    hub: Hub, caller: Caller, room_name: str, dispatch_id: str = ""
) -> list[DispatchRecord]:
    records = hub.core.dispatches(caller.project_id, room_name or None)
    live = [r for r in records if not r.deleted]
    if dispatch_id:
        live = [r for r in live if r.spec.dispatch_id == dispatch_id]
    return live


def jobs_of(hub: Hub, record: DispatchRecord) -> list[JobRecord]:
    return list(hub.core.jobs_of_dispatch(record.spec.dispatch_id))


ROOM_DELETED = "room deleted through the API"


async def delete_room(
    hub: Hub, caller: Caller, name: str, close_live: Callable[[], bool] | None = None
) -> None:
    """Delete the room; `close_live` first disconnects everyone in it if it is live (True then).

    Its dispatches end (JobTermination to their workers) before this returns.
    """
    stored = hub.store.get_room(caller.project_id, name) is not None
    live = close_live() if close_live is not None else False
    if not stored and not live:
        raise NotFound(f"room {name!r} not found")
    hub.feed(RoomClosed(caller.project_id, name, ROOM_DELETED, hub.clock_ms()))
    await hub.store.delete_room(caller.project_id, name)
    await hub.store.flush()
