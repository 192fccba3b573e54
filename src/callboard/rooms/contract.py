"""What the room layer tells the rest of the server, and what it asks of it.

The room model (`rooms/`) owns rooms, participants and data routing; the WebRTC edge (`rtc/`)
carries signalling and media. Neither knows about dispatch or webhooks: they report lifecycle
moments to a `RoomObserver` (in `server/`), which turns them into dispatches, job triggers,
webhooks and event-log lines. The observer may also refuse a join (a superseded agent attempt).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from callboard.protocol.tokens import TokenClaims
from callboard.store.base import ApiKey


@dataclass(frozen=True)
class RoomView:
    project_id: str
    name: str
    sid: str
    created_at_ms: int
    metadata: str = ""
    empty_timeout_s: int = 0
    departure_timeout_s: int = 0
    max_participants: int = 0
    num_participants: int = 0
    creator_key: str = ""  # the key that created the room (API call or first joining token)
    owner: str = ""  # that key's developer ("" = production)


@dataclass(frozen=True)
class ParticipantView:
    sid: str
    identity: str
    name: str
    kind: int  # livekit ParticipantInfo.Kind
    metadata: str
    attributes: Mapping[str, str]
    joined_at_ms: int
    api_key: str  # the key that signed the participant's token
    owner: str  # that key's developer
    state: str = "joined"  # joining | joined | active | disconnected
    job_id: str = ""  # set for agents joining with a job token
    dispatch_id: str = ""
    attempt: int = 0
    permissions: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class JoinContext:
    """Everything known about a join at the moment it is admitted."""

    room: RoomView
    participant: ParticipantView
    claims: TokenClaims
    key: ApiKey
    created_room: bool  # this join created the room
    room_config: Mapping[str, Any] | None  # the token's roomConfig claim (protobuf JSON), if any


class JoinRefused(Exception):
    """The observer refuses a join; `reason` goes back to the client (and the log)."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class TrackView:
    sid: str
    name: str
    kind: str  # audio (the only kind relayed)
    source: int  # livekit TrackSource
    muted: bool
    mime_type: str = "audio/opus"


class RoomObserver(Protocol):
    """Lifecycle moments. `track_published` / `track_unpublished` are optional: the manager
    calls them only on observers that define them (older implementers stay valid)."""

    def admit(self, ctx: JoinContext) -> None:
        """Raise JoinRefused to refuse (e.g. an agent whose job attempt was superseded)."""

    def room_started(self, room: RoomView, key: ApiKey | None) -> None: ...

    def participant_joined(self, ctx: JoinContext) -> None: ...

    def participant_left(
        self, room: RoomView, participant: ParticipantView, reason: str
    ) -> None: ...

    def room_finished(self, room: RoomView, reason: str) -> None: ...
