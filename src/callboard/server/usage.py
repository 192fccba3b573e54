"""Usage per project and developer, by UTC day: dispatches, agent sessions, participant minutes.

Counted where the facts happen, never estimated afterwards:

- dispatches: every `dispatch.created` line the dispatch core records (API, CLI, token, automatic),
  on the day it was created, for the dispatch's owner;
- agent sessions: a job counts once it reaches a terminal state after a worker was assigned to
  it; its minutes run from the first assignment to the end (`JobRecord.updated_at_ms`), on the day
  it ended, for the job's owner. A job that never reached a worker counts nothing;
- participant sessions: a non-agent participant that left (the room observer's `participant_left`),
  its minutes from join to leave, for the developer whose key signed its token. Agents are
  counted as agent sessions instead.

Sessions still running are not in the figures until they end. Rows go to the store's
`usage_daily` table (fire-and-forget, group-committed) as increments, so nothing is held in memory
beyond the assignment times of jobs in flight; after a restart a job's assignment time comes from
its stored state history.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from livekit.protocol import models

from callboard.dispatch.model import Action, JobRecord, JobState, RecordEvent, SaveJob
from callboard.protocol.errors import InvalidArgument
from callboard.rooms.contract import JoinContext, ParticipantView, RoomView
from callboard.server.auth import authenticate, request_token, require
from callboard.server.hub import Hub
from callboard.store.base import USAGE_FIELDS, ApiKey, Store, UsageRow

AGENT = models.ParticipantInfo.Kind.AGENT
_HELD = (JobState.ASSIGNED, JobState.RUNNING, JobState.ORPHANED)
MAX_REMEMBERED_ENDS = 100_000


DAY_MS = 86_400_000


def day_of(at_ms: int) -> str:
    """The UTC day (YYYY-MM-DD) an epoch-ms time falls on (UTC days are all `DAY_MS` long)."""
    return _day(at_ms // DAY_MS)


@functools.lru_cache(maxsize=64)
def _day(days_since_epoch: int) -> str:
    return dt.datetime.fromtimestamp(days_since_epoch * 86_400, dt.UTC).strftime("%Y-%m-%d")


class UsageMeter:
    """A hub listener (jobs, dispatches) that the room observer tee also feeds (participants)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._assigned_at: dict[str, int] = {}  # job id -> first assignment, while in flight
        self._ended: dict[str, None] = {}  # recently ended job ids, oldest first (bounded)

    def __call__(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, RecordEvent) and action.kind == "dispatch.created":
                self._add(action.project_id, action.owner, action.at_ms, dispatches=1)
            elif isinstance(action, SaveJob):
                self._job(action.record)

    def _job(self, job: JobRecord) -> None:
        if job.job_id in self._ended:  # saved again after its end: counted already
            return
        if job.state in _HELD:
            if job.job_id not in self._assigned_at:
                first = job.updated_at_ms if job.state is JobState.ASSIGNED else None
                self._assigned_at[job.job_id] = first or self._stored_assignment(job) or (
                    job.updated_at_ms)
            return
        if not job.state.is_terminal:
            return
        started = self._assigned_at.pop(job.job_id, None)
        if started is None:
            started = self._stored_assignment(job)
        self._ended[job.job_id] = None
        if len(self._ended) > MAX_REMEMBERED_ENDS:
            del self._ended[next(iter(self._ended))]
        if started is None:
            return
        ms = max(0, job.updated_at_ms - started)
        self._add(job.project_id, job.owner, job.updated_at_ms, agent_sessions=1,
                  agent_session_ms=ms)

    def _stored_assignment(self, job: JobRecord) -> int | None:
        """After a restart: when the job was first assigned, from its stored history."""
        if not job.worker_id:
            return None
        for state, at_ms in self.store.job_history(job.project_id, job.job_id):
            if state == JobState.ASSIGNED.value:
                return at_ms
        return None

    def participant_left(self, room: RoomView, p: ParticipantView, now_ms: int) -> None:
        if p.kind == AGENT:
            return
        ms = max(0, now_ms - p.joined_at_ms) if p.joined_at_ms else 0
        self._add(room.project_id, p.owner, now_ms, participant_sessions=1, participant_ms=ms)

    def _add(self, project_id: str, owner: str, at_ms: int, **amounts: int) -> None:
        self.store.submit_usage(project_id, owner, day_of(at_ms), **amounts)


class _UsageTee:
    """Wraps the rooms' observer: everything goes to it, and participant departures to the meter."""

    def __init__(self, inner: Any, meter: UsageMeter, hub: Hub) -> None:
        self._inner = inner
        self._meter = meter
        self._hub = hub

    def admit(self, ctx: JoinContext) -> None:
        self._inner.admit(ctx)

    def room_started(self, room: RoomView, key: ApiKey | None) -> None:
        self._inner.room_started(room, key)

    def participant_joined(self, ctx: JoinContext) -> None:
        self._inner.participant_joined(ctx)

    def participant_left(self, room: RoomView, participant: ParticipantView, reason: str) -> None:
        try:
            self._inner.participant_left(room, participant, reason)
        finally:
            self._meter.participant_left(room, participant, self._hub.clock_ms())

    def room_finished(self, room: RoomView, reason: str) -> None:
        self._inner.room_finished(room, reason)


def install(app: web.Application) -> None:
    """Meter the app's hub and rooms (after `observer.install`, whose observer it wraps)."""
    hub: Hub = app["hub"]
    meter = UsageMeter(hub.store)
    hub.listeners.append(meter)
    rooms = app["rooms"]
    rooms.observer = _UsageTee(rooms.observer, meter, hub)
    app["usage"] = meter


# -- the API ---------------------------------------------------------------------------------------


def parse_since(raw: str | None, now_ms: int) -> str:
    """`YYYY-MM-DD`, or `Nd` (the last N days, today included); default the last 30 days."""
    text = (raw or "30d").strip()
    if text.endswith("d") and text[:-1].isdigit():
        days = int(text[:-1])
        return day_of(now_ms - max(0, days - 1) * 86_400_000)
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise InvalidArgument(
            f"since must be YYYY-MM-DD or a number of days like 7d, got {raw!r}", "since"
        ) from None


def totals(rows: Iterable[UsageRow]) -> dict[str, dict[str, int | float]]:
    """Per owner ("production" for ""), summed over days, minutes rounded to 0.01."""
    out: dict[str, dict[str, int | float]] = {}
    for row in rows:
        acc = out.setdefault(row.owner or "production", {f: 0 for f in USAGE_FIELDS})
        for f in USAGE_FIELDS:
            acc[f] += getattr(row, f)
    for acc in out.values():
        acc["agent_session_minutes"] = round(acc["agent_session_ms"] / 60_000, 2)
        acc["participant_minutes"] = round(acc["participant_ms"] / 60_000, 2)
    return out


def row_json(row: UsageRow) -> dict[str, Any]:
    return {
        "day": row.day,
        "developer": row.owner,
        **{f: getattr(row, f) for f in USAGE_FIELDS},
        "agent_session_minutes": round(row.agent_session_ms / 60_000, 2),
        "participant_minutes": round(row.participant_ms / 60_000, 2),
    }


async def get_usage(request: web.Request) -> web.Response:
    """`GET /callboard/v1/usage?since=YYYY-MM-DD|Nd[&developer=NAME]`: the caller's project only."""
    hub: Hub = request.app["hub"]
    caller = authenticate(hub.store, request_token(request))
    require(caller, "room_admin", "room_list")
    since = parse_since(request.query.get("since"), hub.clock_ms())
    await hub.store.flush()  # read your writes: usage submitted before this request counts
    rows = hub.store.query_usage(caller.project_id, since)
    developer = request.query.get("developer")
    if developer is not None:
        rows = [r for r in rows if r.owner == developer]
    return web.json_response(
        {"since": since, "days": [row_json(r) for r in rows], "totals": totals(rows)}
    )


def routes() -> list[web.RouteDef]:
    return [web.get("/callboard/v1/usage", get_usage)]
