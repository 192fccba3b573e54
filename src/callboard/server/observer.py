"""What rooms mean for the rest of the server: dispatches, job triggers, event-log lines, webhooks.

The room layer (`rooms/`, `rtc/`) knows nothing of dispatch; it reports lifecycle moments to a
`RoomObserver` (rooms/contract.py). `RoomEvents` is that observer:

- admit: an agent joining with a job token (`claims.job`) is let in only while that job is the
  live attempt of its dispatch, in the dispatch's own project and room — so a superseded attempt
  (its worker came back too late and the job was dispatched again), a finished job, or a token
  taken to another room never puts a second agent of one dispatch in the room. A token whose
  `roomConfig` cannot be read is refused too. `admit` may run twice per join: it changes nothing.
- token dispatch: a join that creates its room dispatches every agent of the token's
  `roomConfig.agents`, or with none listed one automatic dispatch (agent name ""), as LiveKit
  does. A join into an existing room dispatches each named agent the room has no live dispatch
  for — where LiveKit silently ignores the token (livekit#4390) — and says so in the event log;
  `strict_token_dispatch` restores LiveKit's behaviour. Either way a room never gets two
  dispatches of one agent name from tokens. The dispatches belong to the key that signed the
  joining token (its developer, or production).
- JT_PARTICIPANT: each non-agent participant's join is fed to the dispatch core, which starts a
  participant job for every live dispatch of the room whose agent has JT_PARTICIPANT workers.
- room_finished ends the room's dispatches and jobs (JobTermination to their workers). The room
  record itself is deleted by the room manager.
- `SupersededAgents` (a hub listener): when a job is dispatched again, the earlier attempt's agent
  still in the room is removed.
- Every moment is an event-log line (`room.started`, `participant.joined`, …) and a webhook.

The decisions are plain functions (`job_refusal`, `plan_token_dispatch`), unit-tested alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from google.protobuf import json_format
from livekit.protocol import models
from livekit.protocol import room as room_pb
from livekit.protocol import webhook as whpb

from callboard.dispatch.model import (
    Action,
    DispatchRecord,
    JobRecord,
    JobState,
    ParticipantJoined,
    ParticipantRef,
    PublisherJoined,
    RecordEvent,
    RoomClosed,
    RoomRef,
    SaveJob,
)
from callboard.protocol import convert
from callboard.protocol.errors import InvalidArgument, NotFound
from callboard.protocol.tokens import JobClaim
from callboard.rooms.contract import (
    JoinContext,
    JoinRefused,
    ParticipantView,
    RoomView,
    TrackView,
)
from callboard.server import services, webhooks
from callboard.server.auth import Caller
from callboard.server.hub import Hub
from callboard.store.base import ApiKey

log = logging.getLogger("callboard.observer")

AGENT = models.ParticipantInfo.Kind.AGENT
LIVEKIT_4390 = "LiveKit ignores it: livekit#4390; strict_token_dispatch restores that"


# -- decisions ------------------------------------------------------------------------------------


def job_refusal(
    claim: JobClaim,
    project_id: str,
    room_name: str,
    dispatch: DispatchRecord | None,
    job: JobRecord | None,
    attempts: Sequence[JobRecord],
) -> str | None:
    """Why a job token may not join `room_name` of `project_id` now, or None when it may.

    `attempts` are the dispatch's jobs (every attempt, every participant's).
    """
    if dispatch is None or dispatch.deleted or dispatch.spec.project_id != project_id:
        return f"job token for dispatch {claim.dispatch_id}, which is not live in this project"
    if dispatch.spec.room.name != room_name:
        return f"job token is for room {dispatch.spec.room.name!r}, not {room_name!r}"
    if job is None or job.dispatch_id != claim.dispatch_id or job.attempt != claim.attempt:
        return f"job {claim.job_id} (attempt {claim.attempt}) is not a job of this dispatch"
    if job.state.is_terminal:
        return f"job {claim.job_id} has ended ({job.state.value}): its agent may not rejoin"
    if not job.state.holds_worker:
        return f"job {claim.job_id} is not assigned to a worker"
    later = [a for a in attempts if _same_lineage(a, job) and a.attempt > job.attempt]
    if later:
        return f"job {claim.job_id} was superseded by attempt {later[-1].attempt}"
    return None


def _same_lineage(a: JobRecord, b: JobRecord) -> bool:
    """Attempts of one job: the room's job, or one participant's."""
    who_a = a.participant.identity if a.participant else None
    who_b = b.participant.identity if b.participant else None
    return a.job_type == b.job_type and who_a == who_b


def token_agents(room_config: Mapping[str, Any] | None) -> list[services.AgentRequest]:
    """`roomConfig.agents` of a token (protobuf JSON of RoomConfiguration), validated.

    Raises InvalidArgument when the claim is not a RoomConfiguration or an agent entry is bad.
    """
    if not room_config:
        return []
    config = room_pb.RoomConfiguration()
    try:
        json_format.ParseDict(dict(room_config), config, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise InvalidArgument(f"malformed roomConfig claim in the token: {exc}") from None
    agents = [services.AgentRequest(a.agent_name, a.metadata) for a in config.agents]
    for agent in agents:
        services.validate_name(agent.agent_name, "roomConfig.agents.agentName", allow_empty=True)
        services.validate_metadata(agent.metadata, "roomConfig.agents.metadata")
    return agents


@dataclass(frozen=True)
class TokenPlan:
    dispatch: list[services.AgentRequest]
    ignored: list[str]  # named agents not dispatched because of strict_token_dispatch
    existing_room: bool


def plan_token_dispatch(
    created_room: bool,
    requested: Sequence[services.AgentRequest],
    live_agent_names: set[str],
    strict: bool,
) -> TokenPlan:
    """What a join's token dispatches (see the module docstring for the rules)."""
    if created_room:
        wanted = services.room_agents(requested)
        todo = [a for a in wanted if a.agent_name not in live_agent_names]
        return TokenPlan(todo, [], existing_room=False)
    named = [a for a in services.room_agents(requested) if a.agent_name] if requested else []
    missing = [a for a in named if a.agent_name not in live_agent_names]
    if strict:
        return TokenPlan([], [a.agent_name for a in missing], existing_room=True)
    return TokenPlan(missing, [], existing_room=True)


# -- the observer ---------------------------------------------------------------------------------


class RoomEvents:
    """The server's RoomObserver: see the module docstring."""

    def __init__(
        self, hub: Hub, sink: webhooks.EventSink | None = None, *, strict: bool | None = None
    ) -> None:
        self.hub = hub
        self.sink = sink
        self.strict = hub.settings.strict_token_dispatch if strict is None else strict

    # -- admit

    def admit(self, ctx: JoinContext) -> None:
        claim = ctx.claims.job
        if claim is not None:
            self._admit_job(ctx, claim)
        elif ctx.participant.kind != AGENT:
            try:
                token_agents(ctx.room_config)
            except InvalidArgument as exc:
                raise JoinRefused(exc.msg, 400) from None

    def _admit_job(self, ctx: JoinContext, claim: JobClaim) -> None:
        core = self.hub.core
        why = job_refusal(
            claim,
            ctx.key.project_id,
            ctx.room.name,
            core.dispatch(claim.dispatch_id),
            core.job(claim.job_id),
            core.jobs_of_dispatch(claim.dispatch_id),
        )
        if why is not None:
            raise JoinRefused(why, 403)

    # -- lifecycle

    def room_started(self, room: RoomView, key: ApiKey | None) -> None:
        by = f" by key {key.key}" if key is not None else ""
        self._record(room, "room.started", f"room {room.name} ({room.sid}) started{by}")
        if self._wants(room):
            self._emit(room, whpb.WebhookEvent(event=webhooks.ROOM_STARTED))

    def participant_joined(self, ctx: JoinContext) -> None:
        room, p = ctx.room, ctx.participant
        self._record_participant(room, p, "participant.joined", f"{_who(p)} joined")
        if self._wants(room):
            info = convert.participant_view_info(p)
            event = whpb.WebhookEvent(event=webhooks.PARTICIPANT_JOINED, participant=info)
            self._emit(room, event)
        if p.kind == AGENT:
            return
        self._token_dispatch(ctx)
        ref = _participant_ref(p)
        self.hub.feed(ParticipantJoined(room.project_id, room.name, ref, self.hub.clock_ms()))

    def participant_left(self, room: RoomView, participant: ParticipantView, reason: str) -> None:
        message = f"{_who(participant)} left ({reason})"
        self._record_participant(room, participant, "participant.left", message)
        if self._wants(room):
            info = convert.participant_view_info(participant, reason)
            self._emit(room, whpb.WebhookEvent(event=webhooks.PARTICIPANT_LEFT, participant=info))

    def track_published(self, room: RoomView, p: ParticipantView, track: TrackView) -> None:
        """Webhook and event-log line; a non-agent's publish may start JT_PUBLISHER jobs (the
        core starts at most one live job per participant and dispatch)."""
        self._track_event(room, p, track, webhooks.TRACK_PUBLISHED, "published")
        if p.kind != AGENT:
            ref = _participant_ref(p)
            self.hub.feed(PublisherJoined(room.project_id, room.name, ref, self.hub.clock_ms()))

    def track_unpublished(self, room: RoomView, p: ParticipantView, track: TrackView) -> None:
        self._track_event(room, p, track, webhooks.TRACK_UNPUBLISHED, "unpublished")

    def _track_event(
        self, room: RoomView, p: ParticipantView, track: TrackView, kind: str, verb: str
    ) -> None:
        message = f"{_who(p)} {verb} audio track {track.name!r} ({track.sid})"
        self._record_participant(room, p, f"track.{verb}", message)
        if not self._wants(room):
            return
        info = models.TrackInfo(
            sid=track.sid,
            type=models.TrackType.AUDIO,
            name=track.name,
            muted=track.muted,
            source=track.source,  # type: ignore[arg-type]
            mime_type=track.mime_type,
        )
        participant = convert.participant_view_info(p)
        self._emit(room, whpb.WebhookEvent(event=kind, participant=participant, track=info))

    def room_finished(self, room: RoomView, reason: str) -> None:
        self.hub.feed(RoomClosed(room.project_id, room.name, reason, self.hub.clock_ms()))
        self._record(room, "room.finished", f"room {room.name} ({room.sid}) finished: {reason}")
        if self._wants(room):
            event = whpb.WebhookEvent(event=webhooks.ROOM_FINISHED)
            event.room_end_reason = webhooks.room_end_reason(reason)  # type: ignore[assignment]
            self._emit(room, event)

    # -- token dispatch

    def _token_dispatch(self, ctx: JoinContext) -> None:
        room = ctx.room
        try:
            requested = token_agents(ctx.room_config)
        except InvalidArgument:  # admit refused it; a model that skipped admit gets nothing
            return
        live = {r.spec.agent_name for r in self.hub.core.dispatches(room.project_id, room.name)}
        plan = plan_token_dispatch(ctx.created_room, requested, live, self.strict)
        caller = Caller(key=ctx.key, claims=ctx.claims)
        ref = RoomRef(room.project_id, room.name, room.sid)
        for agent in plan.dispatch:
            dispatch_id = services.dispatch_agent(self.hub, caller, ref, agent, source="token")
            if plan.existing_room:
                self._note_existing_room(ctx, agent.agent_name, dispatch_id)
        if plan.ignored:
            self._note_ignored(ctx, plan.ignored)

    def _note_existing_room(self, ctx: JoinContext, agent_name: str, dispatch_id: str) -> None:
        message = (
            f"token of {ctx.participant.identity} asks for agent {agent_name!r} in existing room "
            f"{ctx.room.name}: dispatched ({LIVEKIT_4390})"
        )
        self._record(ctx.room, "dispatch.token", message, agent_name=agent_name,
                     dispatch_id=dispatch_id, owner=ctx.key.developer)

    def _note_ignored(self, ctx: JoinContext, names: list[str]) -> None:
        message = (
            f"token of {ctx.participant.identity} asks for {', '.join(map(repr, names))} in "
            f"existing room {ctx.room.name}: ignored (strict_token_dispatch, as LiveKit)"
        )
        self._record(ctx.room, "dispatch.token_ignored", message, owner=ctx.key.developer)

    # -- records

    def _record(self, room: RoomView, kind: str, message: str, **fields: str) -> None:
        fields.setdefault("owner", room.owner)
        self.hub.record(
            RecordEvent(
                project_id=room.project_id,
                kind=kind,
                at_ms=self.hub.clock_ms(),
                message=message,
                room_name=room.name,
                **fields,
            )
        )

    def _record_participant(
        self, room: RoomView, p: ParticipantView, kind: str, message: str
    ) -> None:
        self._record(
            room,
            kind,
            message,
            owner=p.owner,
            job_id=p.job_id,
            dispatch_id=p.dispatch_id,
            agent_name=p.attributes.get("lk.agent_name", "") if p.kind == AGENT else "",
        )

    def _wants(self, room: RoomView) -> bool:
        """Whether the room's webhook events go anywhere: when not, none is built."""
        return self.sink is not None and self.sink.wants(room.project_id)

    def _emit(self, room: RoomView, event: whpb.WebhookEvent) -> None:
        if self.sink is None:
            return
        event.room.CopyFrom(convert.room_message(room))
        self.sink.emit(room.project_id, room.name, event)


_KINDS = frozenset(models.ParticipantInfo.Kind.values())


def _who(p: ParticipantView) -> str:
    kind = models.ParticipantInfo.Kind.Name(p.kind) if p.kind in _KINDS else str(p.kind)
    job = f", job {p.job_id} attempt {p.attempt}" if p.job_id else ""
    return f"{p.identity} ({p.sid}, {kind.lower()}{job})"


def _participant_ref(p: ParticipantView) -> ParticipantRef:
    return ParticipantRef(
        sid=p.sid,
        identity=p.identity,
        name=p.name,
        metadata=p.metadata,
        attributes=dict(p.attributes),
        kind=p.kind,
        joined_at_ms=p.joined_at_ms,
    )


# -- superseded agents already in the room --------------------------------------------------------


class Participants(Protocol):
    """What `SupersededAgents` needs of the rooms (the room manager)."""

    def get_participant(self, project_id: str, room: str, identity: str) -> ParticipantView: ...

    def remove_participant(self, project_id: str, room: str, identity: str) -> ParticipantView: ...


class SupersededAgents:
    """When a job is dispatched again (its worker did not come back within the grace window), the
    earlier attempt's agent, if it is still in the room, is removed: admission keeps it from
    coming back, this keeps it from staying — a dispatch never has two agents in its room.

    Fed each batch of actions the hub carried out (a retry is saved in the batch that failed the
    attempt before it).
    """

    def __init__(self, hub: Hub, rooms: Participants) -> None:
        self._hub = hub
        self._rooms = rooms

    def __call__(self, actions: list[Action]) -> None:
        for action in actions:
            # attempt first: a cheap test that rules out nearly every saved job
            if isinstance(action, SaveJob) and action.record.attempt > 1 and _is_retry(
                action.record
            ):
                for old in self._earlier_attempts(action.record):
                    self._remove(old)

    def _earlier_attempts(self, retry: JobRecord) -> list[JobRecord]:
        jobs = self._hub.core.jobs_of_dispatch(retry.dispatch_id)
        return [j for j in jobs if _same_lineage(j, retry) and j.attempt < retry.attempt]

    def _remove(self, old: JobRecord) -> None:
        if not old.participant_identity:
            return
        try:
            there = self._rooms.get_participant(old.project_id, old.room_name,
                                                old.participant_identity)
        except NotFound:
            return
        if there.job_id != old.job_id:
            return  # that identity is someone else now (a later attempt reusing it)
        self._rooms.remove_participant(old.project_id, old.room_name, old.participant_identity)
        message = (f"agent {old.participant_identity} of superseded job {old.job_id} (attempt "
                   f"{old.attempt}) removed from the room")
        self._hub.record(RecordEvent(
            project_id=old.project_id, kind="participant.superseded", at_ms=self._hub.clock_ms(),
            message=message, level="warning", room_name=old.room_name, dispatch_id=old.dispatch_id,
            job_id=old.job_id, agent_name=old.agent_name, owner=old.owner,
        ))


def _is_retry(job: JobRecord) -> bool:
    """A re-dispatch just created (saved PENDING, or already OFFERED in the same batch)."""
    return job.attempt > 1 and job.state in (JobState.PENDING, JobState.OFFERED)


# -- wiring ---------------------------------------------------------------------------------------


def install(app: web.Application) -> None:
    """Plug dispatch, the event log and webhooks into the app's rooms (`app["rooms"]`).

    The webhook notifier (`app["webhooks"]`) starts before the dispatch core resumes what the
    store holds, so nothing it reports is missed, and gets a short grace at cleanup to deliver
    what is queued.
    """
    hub: Hub = app["hub"]
    notifier = webhooks.Notifier(hub.store, attempts=hub.settings.webhook_retries)
    app["webhooks"] = notifier
    hub.listeners.append(webhooks.JobEvents(notifier, hub.core.dispatch))
    hub.listeners.append(SupersededAgents(hub, app["rooms"]))
    app["rooms"].observer = RoomEvents(hub, notifier)

    async def start(app: web.Application) -> None:
        await notifier.start()

    async def stop(app: web.Application) -> None:
        await notifier.close()

    app.on_startup.insert(0, start)
    app.on_cleanup.append(stop)
