"""The records the room model keeps, and how they look outside (views) and on the wire (protobuf).

`Room` and `Participant` are mutable and private to the model; everything handed out is a frozen
`RoomView` / `ParticipantView` (contract.py) or a fresh protobuf, so no caller can change the model
behind its back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from livekit.protocol import models
from livekit.protocol import rtc as signal

from callboard.protocol.tokens import JobClaim, TokenClaims
from callboard.rooms.contract import ParticipantView, RoomView
from callboard.rooms.limits import DataRateLimit

State = models.ParticipantInfo.State
Kind = models.ParticipantInfo.Kind

_KINDS: dict[str, Kind] = {
    "": Kind.STANDARD,
    "standard": Kind.STANDARD,
    "ingress": Kind.INGRESS,
    "egress": Kind.EGRESS,
    "sip": Kind.SIP,
    "agent": Kind.AGENT,
    "connector": Kind.CONNECTOR,
    "bridge": Kind.BRIDGE,
}
_STATE_NAMES: dict[State, str] = {
    State.JOINING: "joining",
    State.JOINED: "joined",
    State.ACTIVE: "active",
    State.DISCONNECTED: "disconnected",
}
_PERMISSION_FLAGS = (
    "can_subscribe",
    "can_publish",
    "can_publish_data",
    "hidden",
    "can_update_metadata",
    "agent",
)


class DataKind(IntEnum):
    """Which data channel a packet travels on (values of livekit DataPacket.Kind)."""

    RELIABLE = 0
    LOSSY = 1


class ParticipantEdge(Protocol):
    """How the model reaches one participant's connection. Every call returns at once (queues)."""

    def send_signal(self, msg: signal.SignalResponse) -> None: ...

    def send_data(self, kind: DataKind, payload: bytes) -> bool:
        """False when the packet could not be queued (channel not open, receiver too slow)."""
        ...

    def disconnect(
        self, reason: models.DisconnectReason, action: signal.LeaveRequest.Action
    ) -> None:
        """Send `leave{reason, action}` and close. The model has already let the participant go."""
        ...


class MediaListener(Protocol):
    """The media edge, told when who-hears-what may have changed (it asks the model what now)."""

    def subscriptions_changed(self, sids: list[str]) -> None: ...

    def track_muted(self, track_sid: str, muted: bool) -> None: ...

    def track_removed(self, track_sid: str) -> None: ...


class NoMedia:
    def subscriptions_changed(self, sids: list[str]) -> None:
        pass

    def track_muted(self, track_sid: str, muted: bool) -> None:
        pass

    def track_removed(self, track_sid: str) -> None:
        pass


def participant_kind(claim: str) -> Kind:
    """The token's `kind` claim as ParticipantInfo.Kind; unknown kinds are standard participants."""
    return _KINDS.get(claim.strip().lower(), Kind.STANDARD)


def permission_from(claims: TokenClaims) -> models.ParticipantPermission:
    video = claims.video
    return models.ParticipantPermission(
        can_subscribe=video.can_subscribe,
        can_publish=video.can_publish,
        can_publish_data=video.can_publish_data,
        hidden=video.hidden,
        can_update_metadata=video.can_update_own_metadata,
        agent=video.agent,
    )


@dataclass(eq=False)
class Participant:
    sid: str
    identity: str
    name: str
    kind: Kind
    metadata: str
    attributes: dict[str, str]
    permission: models.ParticipantPermission
    joined_at_ms: int
    api_key: str
    owner: str
    edge: ParticipantEdge
    rate: DataRateLimit
    job: JobClaim | None = None
    client_protocol: int = 0
    state: State = State.JOINED
    version: int = 1
    last_seen_ms: int = 0
    rate_limit_logged: bool = False
    auto_subscribe: bool = True
    tracks: dict[str, models.TrackInfo] = field(default_factory=dict)  # by track sid
    cids: dict[str, str] = field(default_factory=dict)  # client track id → track sid
    published_once: bool = False
    # Manual subscriptions (SignalRequest `subscription`, UpdateSubscriptions): track sid → on/off.
    chosen: dict[str, bool] = field(default_factory=dict)
    # Who may subscribe to this participant's tracks (`subscription_permission`): None = everyone;
    # else subscriber sid or identity → the track sids allowed (None = all of them).
    allowed: dict[str, frozenset[str] | None] | None = None

    def may_receive(self, subscriber: Participant, track_sid: str) -> bool:
        if self.allowed is None:
            return True
        for who in (subscriber.sid, subscriber.identity):
            if who in self.allowed:
                tracks = self.allowed[who]
                return tracks is None or track_sid in tracks
        return False

    @property
    def hidden(self) -> bool:
        return bool(self.permission.hidden)

    def changed(self) -> None:
        """Bump the version: clients ignore a ParticipantInfo older than the one they hold."""
        self.version += 1

    def info(
        self, disconnect_reason: models.DisconnectReason = models.UNKNOWN_REASON
    ) -> models.ParticipantInfo:
        return models.ParticipantInfo(
            sid=self.sid,
            identity=self.identity,
            name=self.name,
            state=self.state,
            metadata=self.metadata,
            attributes=self.attributes,
            joined_at=self.joined_at_ms // 1000,
            joined_at_ms=self.joined_at_ms,
            version=self.version,
            permission=self.permission,
            is_publisher=bool(self.tracks),
            tracks=list(self.tracks.values()),
            kind=self.kind,
            disconnect_reason=disconnect_reason,
            client_protocol=self.client_protocol,
        )

    def view(self) -> ParticipantView:
        job = self.job
        return ParticipantView(
            sid=self.sid,
            identity=self.identity,
            name=self.name,
            kind=self.kind,
            metadata=self.metadata,
            attributes=dict(self.attributes),
            joined_at_ms=self.joined_at_ms,
            api_key=self.api_key,
            owner=self.owner,
            state=_STATE_NAMES.get(self.state, "joined"),
            job_id=job.job_id if job else "",
            dispatch_id=job.dispatch_id if job else "",
            attempt=job.attempt if job else 0,
            permissions={f: bool(getattr(self.permission, f)) for f in _PERMISSION_FLAGS},
        )


@dataclass(eq=False)
class Room:
    project_id: str
    name: str
    sid: str
    created_at_ms: int
    creator_key: str = ""
    owner: str = ""
    metadata: str = ""
    empty_timeout_s: int = 0
    departure_timeout_s: int = 0
    max_participants: int = 0
    agents: tuple[tuple[str, str], ...] = ()
    participants: dict[str, Participant] = field(default_factory=dict)  # by identity
    ever_joined: bool = False
    emptied_at_ms: int = 0  # when it last became empty (its creation, at first)

    @property
    def key(self) -> tuple[str, str]:
        return (self.project_id, self.name)

    def visible(self) -> list[Participant]:
        return [p for p in self.participants.values() if not p.hidden]

    def info(self) -> models.Room:
        return models.Room(
            sid=self.sid,
            name=self.name,
            empty_timeout=self.empty_timeout_s,
            departure_timeout=self.departure_timeout_s,
            max_participants=self.max_participants,
            creation_time=self.created_at_ms // 1000,
            creation_time_ms=self.created_at_ms,
            metadata=self.metadata,
            num_participants=len(self.visible()),
        )

    def view(self) -> RoomView:
        return RoomView(
            project_id=self.project_id,
            name=self.name,
            sid=self.sid,
            created_at_ms=self.created_at_ms,
            metadata=self.metadata,
            empty_timeout_s=self.empty_timeout_s,
            departure_timeout_s=self.departure_timeout_s,
            max_participants=self.max_participants,
            num_participants=len(self.visible()),
            creator_key=self.creator_key,
            owner=self.owner,
        )
