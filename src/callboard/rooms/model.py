"""The room model: rooms, participants, and who hears what. No sockets, no asyncio, no wall clock.

Theory of operation
- Rooms are keyed by (project_id, name); participant sids (`PA_…`) are unique across rooms; an
  identity is unique within its room: a second join replaces the first, which is told
  DUPLICATE_IDENTITY.
- The model reaches a participant only through its `ParticipantEdge` (queue a signal message,
  queue a data payload, disconnect). Every call returns at once, so the model never waits and
  one slow participant never holds up a room.
- Lifecycle moments go to a `RoomObserver` (contract.py): admit → room_started →
  participant_joined → participant_left → room_finished. `admit` is asked before anything
  changes and may be asked more than once for one connection attempt (the HTTP pre-check, then
  the join itself), so it must not have side effects.
- Time comes from `clock_ms`; `tick(now_ms)` closes rooms whose timers ran out and removes
  participants silent for longer than the ping timeout. The caller decides how often to tick.
  A tick costs what is due, not what is tracked: empty rooms wait in a heap of close deadlines
  (an entry counts only while it is its room's latest one, so re-emptied, joined and finished
  rooms just leave stale entries behind), and only occupied rooms are scanned for ping timeouts.
  Both kinds of due rooms are then handled in the order they were opened, as a full scan would.
- The store is read by the caller and passed in (`JoinAttempt.stored`); when a join creates a
  room, the record to save comes back in `Joined.store_room`. The model never writes.
- Audio tracks: `add_track` is answered `track_published` (TrackInfo `TR_…`, shown to everyone
  in ParticipantUpdates) or refused with a `request_response` (no canPublish, not audio, over the
  per-participant limit); the connection stays. Who hears which track is computed on demand
  (`subscriptions`: auto-subscribe unless the client turned it off, manual choices, the
  publisher's `subscription_permission`); whenever that may change, the `media` listener (the
  WebRTC edge) is told which participants to re-check.
- Data channels have no error reply: bad, oversized, unauthorised or excess packets are dropped
  and counted in `counters` (`data.dropped.<reason>`), never answered.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from google.protobuf import json_format
from livekit.protocol import models
from livekit.protocol import room as room_pb
from livekit.protocol import rtc as signal

from callboard.protocol import ids
from callboard.protocol.errors import InvalidArgument, NotFound
from callboard.protocol.tokens import TokenClaims
from callboard.rooms import data
from callboard.rooms.contract import (
    JoinContext,
    JoinRefused,
    ParticipantView,
    RoomObserver,
    RoomView,
    TrackView,
)
from callboard.rooms.limits import DataRateLimit, RoomLimits
from callboard.rooms.state import (
    DataKind,
    MediaListener,
    NoMedia,
    Participant,
    ParticipantEdge,
    Room,
    State,
    participant_kind,
    permission_from,
)
from callboard.store.base import ApiKey
from callboard.store.base import Room as StoredRoom

log = logging.getLogger("callboard.rooms")

Reason = models.DisconnectReason
Action = signal.LeaveRequest.Action
OK = signal.RequestResponse.Reason.OK
NOT_ALLOWED = signal.RequestResponse.Reason.NOT_ALLOWED
LIMIT_EXCEEDED = signal.RequestResponse.Reason.LIMIT_EXCEEDED
UNSUPPORTED_TYPE = signal.RequestResponse.Reason.UNSUPPORTED_TYPE
TRACK_PREFIX = "TR_"


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class JoinAttempt:
    """A verified token asking to join `room_name`, and the room as the store has it (if at all)."""

    key: ApiKey
    claims: TokenClaims
    room_name: str
    stored: StoredRoom | None = None
    client_protocol: int = 0
    auto_subscribe: bool = True


@dataclass(frozen=True)
class Joined:
    """What the signalling edge needs for the JoinResponse, and a room record to save, if new."""

    sid: str
    room: models.Room
    participant: models.ParticipantInfo
    others: list[models.ParticipantInfo]
    store_room: StoredRoom | None


class _NoEdge:
    """The edge of a participant that is only being checked, never admitted."""

    def send_signal(self, msg: signal.SignalResponse) -> None:
        pass

    def send_data(self, kind: DataKind, payload: bytes) -> bool:
        return False

    def disconnect(
        self, reason: models.DisconnectReason, action: signal.LeaveRequest.Action
    ) -> None:
        pass


class RoomModel:
    def __init__(
        self,
        observer: RoomObserver,
        limits: RoomLimits | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.observer = observer
        self._limits = limits or RoomLimits()
        self.clock_ms = clock_ms
        self.counters: Counter[str] = Counter()
        self._rooms: dict[tuple[str, str], Room] = {}
        self._members: dict[str, tuple[Room, Participant]] = {}  # by participant sid
        self.media: MediaListener = NoMedia()
        # Timers (see the module docstring). `_rank` is each room's place in `_rooms`' order.
        self._occupied: dict[tuple[str, str], Room] = {}
        self._deadlines: list[tuple[int, int, tuple[str, str]]] = []  # heap: (close at, seq, key)
        self._scheduled: dict[tuple[str, str], int] = {}  # key → seq of its live heap entry
        self._rank: dict[tuple[str, str], int] = {}
        self._seq = itertools.count()

    @property
    def limits(self) -> RoomLimits:
        return self._limits

    @limits.setter
    def limits(self, limits: RoomLimits) -> None:
        """New default timeouts move the deadline of every empty room that relies on them."""
        self._limits = limits
        for room in self._rooms.values():
            self._schedule(room)

    # -- joining

    def check(self, attempt: JoinAttempt) -> None:
        """Raise JoinRefused if `attempt` would be refused now; change nothing."""
        room, created = self._room_for(attempt)
        self._admit(room, self._new_participant(attempt, _NoEdge()), attempt, created)

    def join(self, attempt: JoinAttempt, edge: ParticipantEdge) -> Joined:
        """Admit a participant or raise JoinRefused; a same-identity one is replaced."""
        room, created = self._room_for(attempt)
        participant = self._new_participant(attempt, edge)
        self._admit(room, participant, attempt, created)
        store_room = self._open(room, attempt) if room.key not in self._rooms else None
        existing = room.participants.get(participant.identity)
        if existing is not None:
            self._kick(room, existing, Reason.DUPLICATE_IDENTITY)
        self._add(room, participant, attempt, created)
        others = [p.info() for p in room.visible() if p is not participant]
        return Joined(participant.sid, room.info(), participant.info(), others, store_room)

    def _room_for(self, attempt: JoinAttempt) -> tuple[Room, bool]:
        """The room to join, and whether this join creates it (absent from memory and store)."""
        room = self._rooms.get((attempt.key.project_id, attempt.room_name))
        if room is not None:
            return room, False
        if attempt.stored is not None:
            return _room_from_store(attempt.stored, self.clock_ms()), False
        return self._room_from_token(attempt), True

    def _room_from_token(self, attempt: JoinAttempt) -> Room:
        config = _room_config(attempt.claims.room_config)
        now = self.clock_ms()
        return Room(
            project_id=attempt.key.project_id,
            name=attempt.room_name,
            sid=ids.new_id(ids.ROOM),
            created_at_ms=now,
            creator_key=attempt.key.key,
            owner=attempt.key.developer,
            metadata=config.metadata,
            empty_timeout_s=config.empty_timeout,
            departure_timeout_s=config.departure_timeout,
            max_participants=config.max_participants,
            agents=tuple((a.agent_name, a.metadata) for a in config.agents),
            emptied_at_ms=now,
        )

    def _new_participant(self, attempt: JoinAttempt, edge: ParticipantEdge) -> Participant:
        claims, now = attempt.claims, self.clock_ms()
        limits = self.limits
        return Participant(
            sid=ids.new_id(ids.PARTICIPANT),
            identity=claims.identity,
            name=claims.name,
            kind=participant_kind(claims.kind),
            metadata=claims.metadata,
            attributes=dict(claims.attributes),
            permission=permission_from(claims),
            joined_at_ms=now,
            api_key=attempt.key.key,
            owner=attempt.key.developer,
            edge=edge,
            rate=DataRateLimit(limits.data_packets_per_s, limits.data_bytes_per_s, now),
            job=claims.job,
            client_protocol=attempt.client_protocol,
            last_seen_ms=now,
            auto_subscribe=attempt.auto_subscribe,
        )

    def _admit(self, room: Room, new: Participant, attempt: JoinAttempt, created: bool) -> None:
        staying = [p for p in room.participants.values() if p.identity != new.identity]
        if room.max_participants and len(staying) >= room.max_participants:
            raise JoinRefused(
                f"room {room.name!r} is full: it allows {room.max_participants} participants"
            )
        self.observer.admit(_context(room, new, attempt, created))

    def _open(self, room: Room, attempt: JoinAttempt) -> StoredRoom | None:
        """Start tracking `room`; a room new to the store is announced and handed back to save."""
        self._track(room)
        if attempt.stored is not None:
            return None
        self.counters["rooms.started"] += 1
        self.observer.room_started(room.view(), attempt.key)
        return _store_record(room)

    def _add(self, room: Room, p: Participant, attempt: JoinAttempt, created: bool) -> None:
        room.participants[p.identity] = p
        room.ever_joined = True
        self._members[p.sid] = (room, p)
        self._occupied[room.key] = room
        self._scheduled.pop(room.key, None)
        self.counters["participants.joined"] += 1
        if not p.hidden:
            self._broadcast(room, [p.info()], exclude=p)
        self.observer.participant_joined(_context(room, p, attempt, created))

    # -- leaving

    def leave(self, sid: str, reason: models.DisconnectReason = Reason.CLIENT_INITIATED) -> bool:
        """The participant's connection is gone (or it said leave): let it go, tell the others."""
        found = self._find(sid)
        if found is None:
            return False
        self._remove(*found, reason)
        return True

    def _kick(
        self,
        room: Room,
        p: Participant,
        reason: models.DisconnectReason,
        action: signal.LeaveRequest.Action = Action.DISCONNECT,
        announce: bool = True,
    ) -> None:
        p.edge.disconnect(reason, action)
        self._remove(room, p, reason, announce=announce)

    def _remove(
        self, room: Room, p: Participant, reason: models.DisconnectReason, announce: bool = True
    ) -> None:
        del room.participants[p.identity]
        del self._members[p.sid]
        p.state = State.DISCONNECTED
        for track_sid in list(p.tracks):
            self._drop_track(room, p, track_sid)
        p.changed()
        if announce and not p.hidden:
            self._broadcast(room, [p.info(reason)])
        self.media.subscriptions_changed([p.sid, *self._sids(room)])
        if not room.participants:
            room.emptied_at_ms = self.clock_ms()
            del self._occupied[room.key]
            self._schedule(room)
        self.counters["participants.left"] += 1
        self.observer.participant_left(room.view(), p.view(), Reason.Name(reason))

    # -- liveness and lifecycle

    def touch(self, sid: str) -> None:
        """The participant was heard from (any signal message): it is alive."""
        found = self._find(sid)
        if found is not None:
            found[1].last_seen_ms = self.clock_ms()

    def mark_active(self, sid: str) -> None:
        """Its peer connection is up: state ACTIVE, and the others are told."""
        found = self._find(sid)
        if found is None or found[1].state == State.ACTIVE:
            return
        room, p = found
        p.state = State.ACTIVE
        p.changed()
        if not p.hidden:
            self._broadcast(room, [p.info()], exclude=p)

    def tick(self, now_ms: int) -> None:
        """Remove participants silent beyond the ping timeout; close rooms whose timers ran out."""
        due = self._due(now_ms)
        try:
            for room in due:
                self._expire(room, now_ms)
        finally:  # a room left open (not due after all, or an observer raised) keeps a deadline
            for room in due:
                if room.key not in self._scheduled:
                    self._schedule(room)

    def _due(self, now_ms: int) -> list[Room]:
        """Rooms with a silent participant or a passed deadline, in `_rooms` order."""
        ping_timeout_ms = self.limits.ping_timeout_ms
        due = {
            key: room
            for key, room in self._occupied.items()
            if any(now_ms - p.last_seen_ms > ping_timeout_ms for p in room.participants.values())
        }
        heap = self._deadlines
        while heap and heap[0][0] <= now_ms:
            _, seq, key = heapq.heappop(heap)
            if self._scheduled.get(key) == seq:
                del self._scheduled[key]
                due[key] = self._rooms[key]
        return sorted(due.values(), key=lambda room: self._rank[room.key])

    def _expire(self, room: Room, now_ms: int) -> None:
        for p in list(room.participants.values()):
            if now_ms - p.last_seen_ms > self.limits.ping_timeout_ms:
                log.info("participant %s in room %s timed out (no ping)", p.identity, room.name)
                self._kick(room, p, Reason.CONNECTION_TIMEOUT)
        if not room.participants and now_ms >= self.close_at_ms(room):
            why = "departure timeout" if room.ever_joined else "empty timeout"
            self._finish(room, why)

    def close_at_ms(self, room: Room) -> int:
        """When an empty room closes: departure timeout once someone was in, else empty timeout."""
        if room.ever_joined:
            timeout_s = room.departure_timeout_s or self.limits.departure_timeout_s
        else:
            timeout_s = room.empty_timeout_s or self.limits.empty_timeout_s
        return room.emptied_at_ms + timeout_s * 1000

    def _track(self, room: Room) -> None:
        self._rooms[room.key] = room
        self._rank[room.key] = next(self._seq)
        self._schedule(room)

    def _schedule(self, room: Room) -> None:
        """Give an empty tracked room a fresh deadline entry; its older entries go stale."""
        if room.participants or self._rooms.get(room.key) is not room:
            return
        seq = next(self._seq)
        self._scheduled[room.key] = seq
        heapq.heappush(self._deadlines, (self.close_at_ms(room), seq, room.key))
        if len(self._deadlines) > 64 + 2 * len(self._scheduled):  # mostly stale: compact
            self._deadlines = [e for e in self._deadlines if self._scheduled.get(e[2]) == e[1]]
            heapq.heapify(self._deadlines)

    def _finish(self, room: Room, why: str) -> None:
        for p in list(room.participants.values()):
            self._kick(room, p, Reason.ROOM_DELETED, announce=False)
        del self._rooms[room.key]
        del self._rank[room.key]
        self._scheduled.pop(room.key, None)
        self.counters["rooms.finished"] += 1
        self.observer.room_finished(room.view(), why)

    # -- what participants ask for

    def update_own_metadata(self, sid: str, req: signal.UpdateParticipantMetadata) -> None:
        """`update_metadata` from a client: apply if allowed; always answer request_response."""
        found = self._find(sid)
        if found is None:
            return
        room, p = found
        reason, message = self._may_update(p, req)
        if reason == OK:
            _apply(p, req.metadata or None, req.name or None, dict(req.attributes))
            self._announce_change(room, p)
        response = signal.RequestResponse(request_id=req.request_id, reason=reason, message=message)
        p.edge.send_signal(signal.SignalResponse(request_response=response))

    def _may_update(
        self, p: Participant, req: signal.UpdateParticipantMetadata
    ) -> tuple[signal.RequestResponse.Reason, str]:
        if not p.permission.can_update_metadata:
            return NOT_ALLOWED, "token lacks canUpdateOwnMetadata"
        try:
            self._check_sizes(req.metadata, dict(req.attributes))
        except InvalidArgument as exc:
            return LIMIT_EXCEEDED, exc.msg
        return OK, ""

    def _check_sizes(self, metadata: str | None, attributes: Mapping[str, str] | None) -> None:
        size = len(metadata.encode()) if metadata else 0
        if size > self.limits.max_metadata_bytes:
            raise InvalidArgument(
                f"metadata is {size} bytes; the limit is {self.limits.max_metadata_bytes}",
                "metadata",
            )
        size = sum(len(k.encode()) + len(v.encode()) for k, v in (attributes or {}).items())
        if size > self.limits.max_attributes_bytes:
            raise InvalidArgument(
                f"attributes are {size} bytes; the limit is {self.limits.max_attributes_bytes}",
                "attributes",
            )

    def _announce_change(self, room: Room, p: Participant) -> None:
        """A participant changed: everyone hears it, itself included (hidden ones: only itself)."""
        p.changed()
        if p.hidden:
            p.edge.send_signal(_update([p.info()]))
        else:
            self._broadcast(room, [p.info()])

    def on_data(self, sid: str, kind: DataKind, payload: bytes) -> None:
        """A DataPacket arrived on a participant's data channel: screen, stamp, forward."""
        found = self._find(sid)
        if found is None:
            return
        room, p = found
        packet = self._accept(p, kind, payload)
        if isinstance(packet, data.Drop):
            self._dropped(packet, p, room)
            return
        data.stamp(packet, p.identity, p.sid)
        self._route(room, packet, kind, sender=p)

    def _accept(
        self, p: Participant, kind: DataKind, payload: bytes
    ) -> models.DataPacket | data.Drop:
        drop = self._screen(p, kind, payload)
        if drop is not None:
            return drop
        return data.decode(payload) or data.Drop.MALFORMED

    def _screen(self, p: Participant, kind: DataKind, payload: bytes) -> data.Drop | None:
        limit = (
            self.limits.lossy_max_bytes
            if kind == DataKind.LOSSY
            else self.limits.reliable_max_bytes
        )
        if len(payload) > limit:
            return data.Drop.OVERSIZE
        if not p.permission.can_publish_data:
            return data.Drop.NOT_ALLOWED
        if not p.rate.allow(len(payload), self.clock_ms()):
            return data.Drop.RATE_LIMITED
        return None

    def _dropped(self, why: data.Drop, p: Participant, room: Room) -> None:
        self.counters[f"data.dropped.{why}"] += 1
        if why == data.Drop.RATE_LIMITED:
            if not p.rate_limit_logged:
                p.rate_limit_logged = True
                log.warning(
                    "data from %s in room %s exceeds the rate limit: dropping the excess "
                    "(logged once per participant; counted in data.dropped.rate_limited)",
                    p.identity,
                    room.name,
                )
        else:
            log.debug("dropped a data packet from %s in room %s: %s", p.identity, room.name, why)

    def _route(
        self, room: Room, packet: models.DataPacket, kind: DataKind, sender: Participant | None
    ) -> int:
        wanted = data.wanted_identities(packet, self._identity_of_sid)
        receivers = [p for p in room.participants.values() if p is not sender]
        if wanted:
            unknown = wanted - room.participants.keys()
            if unknown:
                self.counters[f"data.dropped.{data.Drop.UNKNOWN_DESTINATION}"] += len(unknown)
            receivers = [p for p in receivers if p.identity in wanted]
        payload = packet.SerializeToString()
        delivered = sum(1 for p in receivers if p.edge.send_data(kind, payload))
        self.counters[f"data.dropped.{data.Drop.RECEIVER_BUSY}"] += len(receivers) - delivered
        self.counters["data.forwarded"] += delivered
        return delivered

    def _identity_of_sid(self, sid: str) -> str | None:
        found = self._find(sid)
        return found[1].identity if found else None

    # -- audio tracks: publish, mute, unpublish, who hears what

    def add_track(self, sid: str, req: signal.AddTrackRequest) -> None:
        """`add_track`: answer track_published (or a request_response saying why not)."""
        found = self._find(sid)
        if found is None:
            return
        room, p = found
        existing = p.cids.get(req.cid)
        if existing is not None:  # asked twice (a retry): the same answer
            p.edge.send_signal(_published(req.cid, p.tracks[existing]))
            return
        refusal = self._may_publish(p, req)
        if refusal is not None:
            self._refuse_track(room, p, req, *refusal)
            return
        info = _track_info(req)
        p.tracks[info.sid] = info
        p.cids[req.cid] = info.sid
        p.published_once = True
        self.counters["tracks.published"] += 1
        p.edge.send_signal(_published(req.cid, info))
        self._announce_change(room, p)
        self._notify("track_published", room.view(), p.view(), _track_view(info))
        self.media.subscriptions_changed(self._sids(room))

    def _may_publish(
        self, p: Participant, req: signal.AddTrackRequest
    ) -> tuple[signal.RequestResponse.Reason, str] | None:
        if not p.permission.can_publish:
            return NOT_ALLOWED, "token lacks canPublish"
        if req.type != models.TrackType.AUDIO:
            kind = models.TrackType.Name(req.type).lower()
            return UNSUPPORTED_TYPE, f"callboard relays audio only; {kind} tracks are refused"
        allowed = p.permission.can_publish_sources
        if allowed and req.source not in allowed:
            source = models.TrackSource.Name(req.source)
            return NOT_ALLOWED, f"token does not allow publishing {source}"
        if len(p.tracks) >= self.limits.max_tracks_per_participant:
            limit = self.limits.max_tracks_per_participant
            return LIMIT_EXCEEDED, f"at most {limit} published tracks per participant"
        return None

    def _refuse_track(
        self,
        room: Room,
        p: Participant,
        req: signal.AddTrackRequest,
        reason: signal.RequestResponse.Reason,
        message: str,
    ) -> None:
        log.warning("%s in room %s may not publish %r: %s", p.identity, room.name, req.cid, message)
        self.counters[f"tracks.refused.{signal.RequestResponse.Reason.Name(reason).lower()}"] += 1
        response = signal.RequestResponse(reason=reason, message=message, add_track=req)
        p.edge.send_signal(signal.SignalResponse(request_response=response))

    def track_sid_for(self, sid: str, cid: str) -> str:
        """The track sid given to the client's track `cid` ("" if none)."""
        found = self._find(sid)
        return found[1].cids.get(cid, "") if found else ""

    def unpublish(self, sid: str, track_sid: str) -> bool:
        """The client stopped sending the track (or the server unpublished it)."""
        found = self._find(sid)
        if found is None or track_sid not in found[1].tracks:
            return False
        room, p = found
        self._drop_track(room, p, track_sid)
        unpublished = signal.TrackUnpublishedResponse(track_sid=track_sid)
        p.edge.send_signal(signal.SignalResponse(track_unpublished=unpublished))
        self._announce_change(room, p)
        self.media.subscriptions_changed(self._sids(room))
        return True

    def _drop_track(self, room: Room, p: Participant, track_sid: str) -> None:
        info = p.tracks.pop(track_sid)
        for cid, tsid in list(p.cids.items()):
            if tsid == track_sid:
                del p.cids[cid]
        self.counters["tracks.unpublished"] += 1
        self.media.track_removed(track_sid)
        self._notify("track_unpublished", room.view(), p.view(), _track_view(info))

    def set_muted(self, sid: str, track_sid: str, muted: bool, by_server: bool = False) -> bool:
        """Mute or unmute a published track; a server-side mute is also told to the publisher."""
        found = self._find(sid)
        if found is None or track_sid not in found[1].tracks:
            return False
        room, p = found
        info = p.tracks[track_sid]
        if info.muted != muted:
            info.muted = muted
            self.media.track_muted(track_sid, muted)
            self._announce_change(room, p)
        if by_server:
            mute = signal.MuteTrackRequest(sid=track_sid, muted=muted)
            p.edge.send_signal(signal.SignalResponse(mute=mute))
        return True

    def track_muted(self, track_sid: str) -> bool:
        for _room, p in self._members.values():
            if track_sid in p.tracks:
                return bool(p.tracks[track_sid].muted)
        return False

    def room_members(self, sid: str) -> list[str]:
        """The sids of everyone in participant `sid`'s room (empty if it is gone)."""
        found = self._find(sid)
        return self._sids(found[0]) if found else []

    def has_track(self, track_sid: str) -> bool:
        return any(track_sid in p.tracks for _room, p in self._members.values())

    def publisher_of(self, project_id: str, room_name: str, track_sid: str) -> str:
        """The sid of the participant publishing `track_sid` in the room (NotFound if none)."""
        for p in self._room(project_id, room_name).participants.values():
            if track_sid in p.tracks:
                return p.sid
        raise NotFound(f"track {track_sid!r} not found in room {room_name!r}")

    def update_subscription(self, sid: str, req: signal.UpdateSubscription) -> None:
        """Manual subscribe / unsubscribe (overrides auto-subscribe for those tracks)."""
        found = self._find(sid)
        if found is None:
            return
        track_sids = list(req.track_sids)
        for pt in req.participant_tracks:
            track_sids.extend(pt.track_sids)
        for track_sid in track_sids:
            found[1].chosen[track_sid] = bool(req.subscribe)
        self.media.subscriptions_changed([sid])

    def set_subscription_permission(self, sid: str, req: signal.SubscriptionPermission) -> None:
        """Who may subscribe to this participant's tracks."""
        found = self._find(sid)
        if found is None:
            return
        room, p = found
        if req.all_participants:
            p.allowed = None
        else:
            p.allowed = {
                tp.participant_sid or tp.participant_identity: (
                    None if tp.all_tracks else frozenset(tp.track_sids)
                )
                for tp in req.track_permissions
            }
        self.media.subscriptions_changed(self._sids(room))

    def subscriptions(self, sid: str) -> dict[str, str]:
        """What participant `sid` should receive now: track sid → publisher sid."""
        found = self._find(sid)
        if found is None:
            return {}
        room, me = found
        if not me.permission.can_subscribe:
            return {}
        wanted: dict[str, str] = {}
        for other in room.participants.values():
            if other is me:
                continue
            for track_sid in other.tracks:
                if me.chosen.get(track_sid, me.auto_subscribe) and other.may_receive(me, track_sid):
                    wanted[track_sid] = other.sid
        return wanted

    def _notify(self, name: str, *args: object) -> None:
        """An optional observer method (older observers do not have it)."""
        method = getattr(self.observer, name, None)
        if method is not None:
            method(*args)

    def _sids(self, room: Room) -> list[str]:
        return [p.sid for p in room.participants.values()]

    # -- the RoomService side (Twirp handlers call these through the manager)

    def open_room(
        self, stored: StoredRoom, key: ApiKey | None = None, announce: bool = True
    ) -> RoomView:
        """Track a room that exists only in the store (CreateRoom, restart) so its timers run."""
        room = self._rooms.get((stored.project_id, stored.name))
        if room is not None:
            return room.view()
        room = _room_from_store(stored, self.clock_ms())
        self._track(room)
        if announce:
            self.counters["rooms.started"] += 1
            self.observer.room_started(room.view(), key)
        return room.view()

    def list_rooms(self, project_id: str) -> list[RoomView]:
        return [r.view() for r in self._rooms.values() if r.project_id == project_id]

    def get_room(self, project_id: str, name: str) -> RoomView | None:
        room = self._rooms.get((project_id, name))
        return room.view() if room else None

    def list_participants(self, project_id: str, room_name: str) -> list[ParticipantView]:
        return [p.view() for p in self._room(project_id, room_name).participants.values()]

    def participant_infos(self, project_id: str, room_name: str) -> list[models.ParticipantInfo]:
        return [p.info() for p in self._room(project_id, room_name).participants.values()]

    def get_participant(self, project_id: str, room_name: str, identity: str) -> ParticipantView:
        return self._participant(project_id, room_name, identity)[1].view()

    def participant_info(
        self, project_id: str, room_name: str, identity: str
    ) -> models.ParticipantInfo:
        return self._participant(project_id, room_name, identity)[1].info()

    def remove_participant(self, project_id: str, room_name: str, identity: str) -> ParticipantView:
        """Kick: leave{DISCONNECT, PARTICIPANT_REMOVED} to it; the others are told."""
        room, p = self._participant(project_id, room_name, identity)
        self._kick(room, p, Reason.PARTICIPANT_REMOVED)
        return p.view()

    def update_participant(
        self,
        project_id: str,
        room_name: str,
        identity: str,
        *,
        metadata: str | None = None,
        name: str | None = None,
        attributes: Mapping[str, str] | None = None,
        permission: models.ParticipantPermission | None = None,
    ) -> models.ParticipantInfo:
        """Change what is given (None = unchanged; an empty attribute value deletes the key)."""
        room, p = self._participant(project_id, room_name, identity)
        self._check_sizes(metadata, attributes)
        _apply(p, metadata, name, attributes)
        if permission is not None:
            p.permission = models.ParticipantPermission()
            p.permission.CopyFrom(permission)
        self._announce_change(room, p)
        return p.info()

    def mute_published_track(
        self, project_id: str, room_name: str, identity: str, track_sid: str, muted: bool
    ) -> models.TrackInfo:
        """MutePublishedTrack: the publisher is told (`mute`), everyone sees it, audio stops."""
        _room, p = self._participant(project_id, room_name, identity)
        if not self.set_muted(p.sid, track_sid, muted, by_server=True):
            raise NotFound(f"track {track_sid!r} not found for participant {identity!r}")
        info = models.TrackInfo()
        info.CopyFrom(p.tracks[track_sid])
        return info

    def update_subscriptions(
        self, project_id: str, room_name: str, identity: str, req: signal.UpdateSubscription
    ) -> None:
        """UpdateSubscriptions: as if the participant had sent `subscription` itself."""
        _room, p = self._participant(project_id, room_name, identity)
        self.update_subscription(p.sid, req)

    def send_data(
        self,
        project_id: str,
        room_name: str,
        payload: bytes,
        kind: DataKind = DataKind.RELIABLE,
        destination_identities: tuple[str, ...] | list[str] = (),
        topic: str | None = None,
    ) -> int:
        """Data from the server (no sender identity); returns how many participants it reached."""
        room = self._room(project_id, room_name)
        limit = (
            self.limits.lossy_max_bytes
            if kind == DataKind.LOSSY
            else self.limits.reliable_max_bytes
        )
        packet = data.server_packet(payload, int(kind), destination_identities, topic)
        if packet.ByteSize() > limit:
            raise InvalidArgument(
                f"data packet is {packet.ByteSize()} bytes; the limit for this kind is {limit}",
                "data",
            )
        return self._route(room, packet, kind, sender=None)

    def update_room_metadata(self, project_id: str, room_name: str, metadata: str) -> RoomView:
        """Set the room's metadata; everyone in it gets a room_update."""
        room = self._room(project_id, room_name)
        self._check_sizes(metadata, None)
        room.metadata = metadata
        msg = signal.SignalResponse(room_update=signal.RoomUpdate(room=room.info()))
        for p in room.participants.values():
            p.edge.send_signal(msg)
        return room.view()

    def close_room(self, project_id: str, room_name: str, why: str = "room deleted") -> bool:
        """Disconnect everyone (leave with ROOM_DELETED) and finish the room; False if unknown."""
        room = self._rooms.get((project_id, room_name))
        if room is None:
            return False
        self._finish(room, why)
        return True

    def close_all(self, why: str = "server shutting down") -> None:
        """Shutdown: everyone gets leave{SERVER_SHUTDOWN}; rooms stay in the store."""
        for room in list(self._rooms.values()):
            for p in list(room.participants.values()):
                self._kick(room, p, Reason.SERVER_SHUTDOWN, announce=False)

    # -- look-ups

    def participant_count(self) -> int:
        return len(self._members)

    def room_count(self) -> int:
        return len(self._rooms)

    def _find(self, sid: str) -> tuple[Room, Participant] | None:
        return self._members.get(sid)

    def _room(self, project_id: str, name: str) -> Room:
        room = self._rooms.get((project_id, name))
        if room is None:
            raise NotFound(f"room {name!r} not found")
        return room

    def _participant(
        self, project_id: str, room_name: str, identity: str
    ) -> tuple[Room, Participant]:
        room = self._room(project_id, room_name)
        p = room.participants.get(identity)
        if p is None:
            raise NotFound(f"participant {identity!r} not found in room {room_name!r}")
        return room, p

    def _broadcast(
        self, room: Room, infos: list[models.ParticipantInfo], exclude: Participant | None = None
    ) -> None:
        msg = _update(infos)
        for p in room.participants.values():
            if p is not exclude:
                p.edge.send_signal(msg)


def _update(infos: list[models.ParticipantInfo]) -> signal.SignalResponse:
    return signal.SignalResponse(update=signal.ParticipantUpdate(participants=infos))


def _published(cid: str, info: models.TrackInfo) -> signal.SignalResponse:
    return signal.SignalResponse(track_published=signal.TrackPublishedResponse(cid=cid, track=info))


def _track_info(req: signal.AddTrackRequest) -> models.TrackInfo:
    return models.TrackInfo(
        sid=ids.new_id(TRACK_PREFIX),
        type=models.TrackType.AUDIO,
        name=req.name,
        muted=req.muted,
        source=req.source,
        mime_type="audio/opus",
        disable_dtx=req.disable_dtx,
        stereo=req.stereo,
        stream=req.stream,
        audio_features=list(req.audio_features),
    )


def _track_view(info: models.TrackInfo) -> TrackView:
    return TrackView(
        sid=info.sid,
        name=info.name,
        kind="audio",
        source=int(info.source),
        muted=bool(info.muted),
        mime_type=info.mime_type,
    )


def _apply(
    p: Participant, metadata: str | None, name: str | None, attributes: Mapping[str, str] | None
) -> None:
    if metadata is not None:
        p.metadata = metadata
    if name is not None:
        p.name = name
    for key, value in (attributes or {}).items():
        if value:
            p.attributes[key] = value
        else:
            p.attributes.pop(key, None)


def _context(room: Room, p: Participant, attempt: JoinAttempt, created: bool) -> JoinContext:
    return JoinContext(
        room=room.view(),
        participant=p.view(),
        claims=attempt.claims,
        key=attempt.key,
        created_room=created,
        room_config=attempt.claims.room_config,
    )


def _room_config(claim: Mapping[str, object] | None) -> room_pb.RoomConfiguration:
    """The token's roomConfig claim (protobuf JSON); a malformed one refuses the join."""
    config = room_pb.RoomConfiguration()
    if not claim:
        return config
    try:
        json_format.ParseDict(dict(claim), config, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise JoinRefused(f"malformed roomConfig claim in the token: {exc}", 400) from None
    return config


def _room_from_store(stored: StoredRoom, now_ms: int) -> Room:
    return Room(
        project_id=stored.project_id,
        name=stored.name,
        sid=stored.sid,
        created_at_ms=stored.created_at_ms,
        creator_key=stored.creator_key,
        owner=stored.owner,
        metadata=stored.metadata,
        empty_timeout_s=stored.empty_timeout_s,
        departure_timeout_s=stored.departure_timeout_s,
        max_participants=stored.max_participants,
        agents=stored.agents,
        emptied_at_ms=now_ms,
    )


def _store_record(room: Room) -> StoredRoom:
    return StoredRoom(
        project_id=room.project_id,
        name=room.name,
        sid=room.sid,
        created_at_ms=room.created_at_ms,
        creator_key=room.creator_key,
        owner=room.owner,
        metadata=room.metadata,
        empty_timeout_s=room.empty_timeout_s,
        departure_timeout_s=room.departure_timeout_s,
        max_participants=room.max_participants,
        agents=room.agents,
    )
