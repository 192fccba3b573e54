"""The dispatcher: LiveKit's job dispatch as a pure state machine, plus what LiveKit lacks.

Theory of operation. `Dispatcher.handle(event)` is the only way in: a transport decodes a worker
frame, an API call, a room change or a timer into one of the `model` events, and carries out the
actions it gets back, in order. Nothing here reads a clock, sleeps, or touches a socket; every
time is the `now_ms` of the event being handled, and randomness comes from the `random.Random`
passed in.
So the whole of dispatch — matching, selection, timeouts, re-dispatch — runs in unit tests in
milliseconds, and the same seed and events always give the same actions.

A ROOM dispatch gets one JT_ROOM job; each non-agent participant joining its room later adds a
JT_PARTICIPANT job for that participant, when the agent has JT_PARTICIPANT workers (LiveKit's rule)
— at most one live job per participant, and each runs through the same machinery. A job is offered
to one matching AVAILABLE worker at a time, chosen by load (`selection`); a decline or a silent
worker passes it to the next untried one. Where LiveKit would drop it, callboard queues it: the job
waits (`PENDING`) until a matching worker registers or comes back from FULL, or a worker that
declined it reports itself AVAILABLE once a backoff has passed (`REOFFER_FIRST_MS`, doubling per
decline), and expires only after the pending TTL. When a worker's connection drops, its jobs are
`ORPHANED` for a grace window in which the reconnected worker may migrate them back (same job, same
attempt); past it the job fails and the dispatch gets one more attempt as a new job. Every step
lands in the dispatch's explain trace and the project's event log. Job states move only through
the table in `states`; `ledger` holds the mutable bookkeeping.
An assigned job whose worker says nothing of it (no running, no end) within the start timeout
fails the same way, and the worker is told to stop it: livekit-agents can lose a job it accepted
when its process pool fails to start one, and never reports it.

Timers: each job has at most one deadline (`next_deadline_ms`); the transport feeds a `Tick` when it
is reached, and the job's state then says what the deadline meant.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Iterator
from typing import Any, Final, assert_never

from callboard.dispatch import eventlog, trace
from callboard.dispatch.ledger import DispatchEntry, JobEntry, Outbox, Timers, WorkerEntry
from callboard.dispatch.matching import PoolKey, mismatches, worker_key
from callboard.dispatch.model import (
    Action,
    AvailabilityAnswered,
    CloseWorker,
    DispatchCreated,
    DispatchDeleted,
    DispatchRecord,
    DispatchSpec,
    Event,
    JobOffer,
    JobRecord,
    JobsMigrated,
    JobState,
    JobStatusReported,
    JobType,
    ParticipantJoined,
    ParticipantRef,
    PublisherJoined,
    Restored,
    RoomClosed,
    SendAssignment,
    SendAvailabilityRequest,
    SendTermination,
    Tick,
    WorkerGone,
    WorkerInfo,
    WorkerRegistered,
    WorkerStatus,
    WorkerStatusChanged,
    WorkerView,
    trace_line,
)
from callboard.dispatch.selection import Draw
from callboard.dispatch.states import InvalidTransition, Trigger, advance, report_trigger
from callboard.protocol import ids
from callboard.protocol.errors import WS_POLICY_VIOLATION

_ON_WORKER = (JobState.OFFERED, JobState.ASSIGNED, JobState.RUNNING)
# A worker that declined a job is asked again at a status report of AVAILABLE no sooner than this
# after the decline, then twice as long after each further decline, up to REOFFER_MAX_MS.
REOFFER_FIRST_MS: Final = 2_000
REOFFER_MAX_MS: Final = 60_000
_DECLINES = {
    "declined": "declined the job",
    "timeout": "did not answer in time",
    "worker_gone": "disconnected before answering",
}


class Dispatcher:
    """Workers, dispatches, jobs and the pending queue of every project, driven by events."""

    def __init__(
        self,
        *,
        availability_timeout_ms: int = 5000,
        pending_ttl_ms: int = 600_000,
        redispatch_grace_ms: int = 10_000,
        redispatch_count: int = 1,
        start_timeout_ms: int = 60_000,
        rng: random.Random | None = None,
    ) -> None:
        for name, value in (
            ("availability_timeout_ms", availability_timeout_ms),
            ("pending_ttl_ms", pending_ttl_ms),
            ("redispatch_grace_ms", redispatch_grace_ms),
            ("redispatch_count", redispatch_count),
            ("start_timeout_ms", start_timeout_ms),
        ):
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        self._availability_timeout_ms = availability_timeout_ms
        self._pending_ttl_ms = pending_ttl_ms
        self._grace_ms = redispatch_grace_ms
        self._redispatch_count = redispatch_count
        self._start_timeout_ms = start_timeout_ms  # 0: an assigned job waits for its worker forever
        self._rng = rng if rng is not None else random.Random()
        self._workers: dict[str, WorkerEntry] = {}
        self._pools: dict[PoolKey, dict[str, None]] = {}  # matching workers, by key
        self._draws: dict[PoolKey, Draw] = {}  # built on demand; dropped when a pool changes
        self._listings: dict[PoolKey, list[dict[str, Any]]] = {}  # candidate lines, likewise
        self._pending: dict[PoolKey, dict[str, None]] = {}  # queued job ids, by key
        self._keys: dict[PoolKey, PoolKey] = {}  # each pool key once (a handful per project)
        self._dispatches: dict[str, DispatchEntry] = {}
        self._live: dict[str, dict[str, None]] = {}  # project -> ids of dispatches not deleted
        self._jobs: dict[str, JobEntry] = {}
        self._timers = Timers()
        self._seq = itertools.count()
        self._out = Outbox()
        self._forget: list[str] = []  # deleted dispatches to drop after this event's actions

    # -- the one way in ---------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        """Apply one event; return what the transports must do, in order."""
        self._out = Outbox()
        self._route(event)
        actions = self._out.drain(self._dispatches, self._jobs)
        self._prune()
        return actions

    def _prune(self) -> None:
        """Forget deleted dispatches once saved: memory stays bounded, the store keeps the record.

        Workers told to stop those jobs keep the ids in `stopped`, so their last `update_job`
        is still taken calmly.
        """
        while self._forget:
            dispatch = self._dispatches.pop(self._forget.pop(), None)
            for job_id in dispatch.job_ids if dispatch else ():
                self._jobs.pop(job_id, None)
                self._timers.clear(job_id)

    def next_deadline_ms(self) -> int | None:
        """When the transport should feed the next `Tick` (None: no timer is pending)."""
        return self._timers.next_ms()

    def _route(self, event: Event) -> None:
        match event:
            case WorkerRegistered():
                self._on_registered(event)
            case WorkerStatusChanged():
                self._on_status(event)
            case WorkerGone():
                self._on_gone(event)
            case DispatchCreated():
                self._on_created(event)
            case DispatchDeleted():
                self._on_deleted(event)
            case RoomClosed():
                self._on_room_closed(event)
            case ParticipantJoined():
                self._on_participant_joined(event, JobType.PARTICIPANT)
            case PublisherJoined():
                self._on_participant_joined(event, JobType.PUBLISHER)
            case AvailabilityAnswered():
                self._on_answer(event)
            case JobStatusReported():
                self._on_job_status(event)
            case JobsMigrated():
                self._on_migrated(event)
            case Restored():
                self._on_restored(event)
            case Tick():
                self._on_tick(event)
            case _:
                assert_never(event)

    # -- read-only queries for the APIs -----------------------------------------------------------

    def workers(self, project_id: str) -> list[WorkerView]:
        """The project's connected workers, oldest connection first."""
        found = [w for w in self._workers.values() if w.info.project_id == project_id]
        found.sort(key=lambda w: (w.info.connected_at_ms, w.worker_id))
        return [w.view() for w in found]

    def worker(self, worker_id: str) -> WorkerView | None:
        entry = self._workers.get(worker_id)
        return entry.view() if entry else None

    def dispatch(self, dispatch_id: str) -> DispatchRecord | None:
        """A dispatch this server holds; deleted ones are forgotten (the store keeps them)."""
        entry = self._dispatches.get(dispatch_id)
        return entry.record() if entry else None

    def dispatches(self, project_id: str, room_name: str | None = None) -> list[DispatchRecord]:
        """The project's dispatches that are not deleted, in creation order (ListDispatch)."""
        entries = (self._dispatches[d] for d in self._live.get(project_id, {}))
        return [d.record() for d in entries if room_name is None or d.spec.room.name == room_name]

    def job(self, job_id: str) -> JobRecord | None:
        entry = self._jobs.get(job_id)
        return entry.rec if entry else None

    def jobs_of_dispatch(self, dispatch_id: str) -> list[JobRecord]:
        """Every attempt of the dispatch, first attempt first."""
        entry = self._dispatches.get(dispatch_id)
        if entry is None:
            return []
        return [self._jobs[j].rec for j in entry.job_ids if j in self._jobs]

    def pending_count(self, project_id: str) -> int:
        return sum(len(q) for key, q in self._pending.items() if key.project_id == project_id)

    def active_job_count(self) -> int:
        """Jobs a worker holds right now, across projects: what a shutdown drains."""
        return sum(1 for j in self._jobs.values() if j.rec.state in (JobState.ASSIGNED,
                                                                      JobState.RUNNING))

    # -- workers ----------------------------------------------------------------------------------

    def _on_registered(self, event: WorkerRegistered) -> None:
        info, now = event.info, event.now_ms
        if info.worker_id in self._workers:
            self._worker_event("protocol.error", info, "worker id registered twice", now, "warning")
            return
        worker = WorkerEntry(info, worker_key(info))
        self._workers[info.worker_id] = worker
        self._pools.setdefault(worker.key, {})[info.worker_id] = None
        self._pool_changed(worker.key)
        message = f"worker {info.worker_id} connected from {info.remote or '?'} ({_serves(info)})"
        self._worker_event("worker.connected", info, message, now)
        self._serve_queue(worker, now)

    def _on_status(self, event: WorkerStatusChanged) -> None:
        worker = self._workers.get(event.worker_id)
        if worker is None:
            return  # a last update racing the disconnect: nothing to change
        was_full = worker.status is WorkerStatus.FULL
        before = (worker.status, worker.load)
        if event.status is not None:
            worker.status = event.status
        worker.load = event.load
        if (worker.status, worker.load) != before:
            self._pool_changed(worker.key)
        worker.job_count = event.job_count
        if worker.status is not WorkerStatus.AVAILABLE:
            return
        if was_full:
            self._serve_queue(worker, event.now_ms, forgive=True)
        else:
            self._retry_declined(worker, event.now_ms)

    def _retry_declined(self, worker: WorkerEntry, now: int) -> None:
        """Ask a worker again for the queued jobs it declined, once each job's backoff passed.

        A decline is often a moment's load: livekit-agents declines above its load threshold
        without reporting FULL (its pool starting up is such a moment), so the job would wait for
        a FULL and back that never comes. The backoff keeps a worker that always declines a job
        from being asked more than a few times a minute."""
        queued = self._pending.get(worker.key)
        if not queued:
            return
        worker_id = worker.worker_id
        due = [
            job for job in map(self._jobs.__getitem__, queued)
            if worker_id in job.tried and now >= job.retry_at_ms
        ]
        for job in sorted(due, key=lambda j: j.seq):
            if job.rec.state is not JobState.PENDING:
                continue
            job.tried = job.tried - {worker_id}
            detail = {"job": job.job_id, "worker": worker_id, "declines": job.declines}
            self._trace(job, now, "retry", detail)
            self._try_offer(job, now)

    def _serve_queue(self, worker: WorkerEntry, now: int, *, forgive: bool = False) -> None:
        """Offer the worker's queued jobs, oldest first; `forgive` forgets its earlier declines."""
        queued = [self._jobs[j] for j in self._pending.get(worker.key, {})]
        for job in sorted(queued, key=lambda j: j.seq):
            if forgive and worker.worker_id in job.tried:
                job.tried = job.tried - {worker.worker_id}
            if job.rec.state is JobState.PENDING:
                self._try_offer(job, now)

    def _on_gone(self, event: WorkerGone) -> None:
        worker = self._workers.pop(event.worker_id, None)
        if worker is None:
            return
        pool = self._pools[worker.key]
        del pool[worker.worker_id]
        self._pool_changed(worker.key)
        if not pool:
            del self._pools[worker.key]
        message = f"worker {worker.worker_id} disconnected: {event.reason}"
        self._worker_event("worker.disconnected", worker.info, message, event.now_ms)
        for job_id in list(worker.offered):
            self._decline(self._jobs[job_id], "worker_gone", event.now_ms, event.reason)
        for job_id in list(worker.held):
            self._orphan(self._jobs[job_id], event.reason, event.now_ms)

    def _orphan(self, job: JobEntry, reason: str, now: int) -> None:
        worker_id = job.rec.worker_id
        self._move(job, Trigger.WORKER_LOST, now)
        self._timers.set(job.job_id, now + self._grace_ms)
        detail = {"job": job.job_id, "worker": worker_id, "reason": reason}
        self._trace(job, now, "orphaned", detail | {"grace_ms": self._grace_ms})
        message = (
            f"worker {worker_id} left ({reason}); job waits {_secs(self._grace_ms)} s for it to"
            " come back"
        )
        self._job_event("job.orphaned", job, message, now, "warning")

    # -- dispatches -------------------------------------------------------------------------------

    def _on_created(self, event: DispatchCreated) -> None:
        """A ROOM dispatch gets its one job now.

        PARTICIPANT and PUBLISHER dispatches are only recorded: their jobs are created by room
        events (a participant joining, a track being published), once per participant.
        """
        spec, now = event.spec, event.now_ms
        if not spec.created_at_ms:
            spec = dataclasses.replace(spec, created_at_ms=now)
        if spec.dispatch_id in self._dispatches:
            message = f"dispatch {spec.dispatch_id} created twice; the second is ignored"
            self._out.event(eventlog.for_dispatch("protocol.error", spec, message, now, "warning"))
            return
        dispatch = DispatchEntry(spec)
        self._dispatches[spec.dispatch_id] = dispatch
        self._live.setdefault(spec.project_id, {})[spec.dispatch_id] = None
        self._trace_dispatch(dispatch, now, "created", trace.created(spec))
        message = f"dispatch for {trace.agent_label(spec.agent_name)} in room {spec.room.name}"
        self._dispatch_event("dispatch.created", dispatch, f"{message} ({spec.source})", now)
        if spec.job_type is JobType.ROOM:
            self._try_offer(self._new_job(dispatch, now, attempt=1), now)

    def _new_job(
        self,
        dispatch: DispatchEntry,
        now: int,
        attempt: int,
        job_type: JobType = JobType.ROOM,
        participant: ParticipantRef | None = None,
    ) -> JobEntry:
        spec = dispatch.spec
        rec = JobRecord(
            job_id=ids.new_id(ids.JOB),
            dispatch_id=spec.dispatch_id,
            project_id=spec.project_id,
            owner=spec.owner,
            room_name=spec.room.name,
            agent_name=spec.agent_name,
            attempt=attempt,
            state=JobState.PENDING,
            worker_id="",
            error="",
            created_at_ms=now,
            updated_at_ms=now,
            job_type=job_type,
            participant=participant,
        )
        job = self._adopt_record(rec, _job_key(spec, job_type))
        dispatch.job_ids += (job.job_id,)
        self._out.touch_job(job.job_id)
        return job

    def _adopt_record(self, rec: JobRecord, key: PoolKey) -> JobEntry:
        # Jobs of one pool share its key object: live jobs hold no key of their own.
        job = JobEntry(rec, self._keys.setdefault(key, key), next(self._seq))
        self._jobs[rec.job_id] = job
        for slot in self._slots(job):
            slot[job.job_id] = None
        return job

    def _on_deleted(self, event: DispatchDeleted) -> None:
        dispatch = self._dispatches.get(event.dispatch_id)
        if dispatch is not None and not dispatch.deleted:
            self._delete(dispatch, f"dispatch deleted: {event.reason}", event.now_ms)

    def _on_room_closed(self, event: RoomClosed) -> None:
        why = f"room {event.room_name} closed: {event.reason}"
        for record in self.dispatches(event.project_id, event.room_name):
            self._delete(self._dispatches[record.spec.dispatch_id], why, event.now_ms)

    def _on_participant_joined(
        self, event: ParticipantJoined | PublisherJoined, job_type: JobType
    ) -> None:
        """A participant joined (JT_PARTICIPANT) or first published (JT_PUBLISHER)."""
        for record in self.dispatches(event.project_id, event.room_name):
            dispatch = self._dispatches[record.spec.dispatch_id]
            if self._wants_participant_job(dispatch, event.participant.identity, job_type):
                self._participant_job(dispatch, event.participant, event.now_ms, job_type)

    def _wants_participant_job(
        self, dispatch: DispatchEntry, identity: str, job_type: JobType = JobType.PARTICIPANT
    ) -> bool:
        """Workers of that job type exist for it (or it is a dispatch of that type), and the
        participant has no live job of it and that type yet: a rejoin (or a republish) does not
        bring a second agent."""
        spec = dispatch.spec
        key = _job_key(spec, job_type)
        if key not in self._pools and spec.job_type is not job_type:
            return False
        return not any(
            j.rec.participant is not None
            and j.rec.participant.identity == identity
            and j.rec.job_type is job_type
            and not j.rec.state.is_terminal
            for j in self._jobs_of(dispatch)
        )

    def _participant_job(
        self,
        dispatch: DispatchEntry,
        participant: ParticipantRef,
        now: int,
        job_type: JobType = JobType.PARTICIPANT,
    ) -> None:
        job = self._new_job(dispatch, now, 1, job_type, participant)
        what = "participant" if job_type is JobType.PARTICIPANT else "publisher"
        detail = {"job": job.job_id, "participant": participant.identity}
        self._trace(job, now, f"{what}_job", detail)
        message = f"{what} job for {participant.identity} ({participant.sid})"
        self._job_event(f"dispatch.{what}_job", job, message, now)
        self._try_offer(job, now)

    def _delete(self, dispatch: DispatchEntry, why: str, now: int) -> None:
        for job in self._jobs_of(dispatch):
            if not job.rec.state.is_terminal:
                self._terminate(job, why, now)
        dispatch.deleted = True
        del self._live[dispatch.spec.project_id][dispatch.dispatch_id]
        self._trace_dispatch(dispatch, now, "deleted", {"reason": why})
        self._dispatch_event("dispatch.deleted", dispatch, why, now)
        self._forget.append(dispatch.dispatch_id)

    def _terminate(self, job: JobEntry, why: str, now: int) -> None:
        if job.rec.state in _ON_WORKER:
            self._stop(job.rec.worker_id, job.job_id)
        self._end(job, Trigger.TERMINATE, now, why, "job.terminated")

    def _stop(self, worker_id: str, job_id: str) -> None:
        """Tell a worker to end a job, and expect its last `update_job` for it without alarm."""
        worker = self._workers.get(worker_id)
        if worker is not None:
            worker.stopped.add(job_id)
        self._out.send(SendTermination(worker_id, job_id))

    # -- offering ---------------------------------------------------------------------------------

    def _pool_changed(self, key: PoolKey) -> None:
        self._draws.pop(key, None)
        self._listings.pop(key, None)

    def _candidate_lines(self, job: JobEntry, pool: dict[str, None]) -> list[dict[str, Any]]:
        """The trace's candidate lines; for a job nobody declined yet they are the same for every
        job of the pool until a worker changes, so they are made once (never mutated later)."""
        shareable = not job.tried and bool(pool)
        if shareable and (lines := self._listings.get(job.key)) is not None:
            return lines
        listed = itertools.islice(pool, trace.MAX_LISTED)
        lines = [_candidate_line(self._workers[w], job) for w in listed]
        if shareable:
            self._listings[job.key] = lines
        return lines

    def _try_offer(self, job: JobEntry, now: int) -> None:
        """Offer a PENDING job to one eligible worker, or leave it queued and say why."""
        pool = self._pools.get(job.key, {})
        lines = self._candidate_lines(job, pool)
        picked = self._draw(job.key).pick(self._rng, job.tried) if pool else None
        if picked is not None:
            detail = trace.candidates(job.job_id, lines, len(pool), "", {})
            self._trace(job, now, "candidates", detail)
            self._offer(job, self._workers[picked], now)
            return
        others = [] if pool else self._project_keys(job.key.project_id)
        full = sum(self._workers[w].status is WorkerStatus.FULL for w in pool)
        why = trace.waiting_reason(job.key, full, len(pool) - full, others)
        detail = trace.candidates(job.job_id, lines, len(pool), why, mismatches(others, job.key))
        self._trace(job, now, "candidates", detail)
        self._queue(job, why, now)

    def _draw(self, key: PoolKey) -> Draw:
        """The pool's weighted draw over its AVAILABLE workers, built once per pool change."""
        draw = self._draws.get(key)
        if draw is None:
            workers = (self._workers[w] for w in self._pools[key])
            available = [w for w in workers if w.status is WorkerStatus.AVAILABLE]
            draw = self._draws[key] = Draw((w.worker_id, w.load) for w in available)
        return draw

    def _project_keys(self, project_id: str) -> list[PoolKey]:
        return [w.key for w in self._workers.values() if w.info.project_id == project_id]

    def _offer(self, job: JobEntry, worker: WorkerEntry, now: int) -> None:
        self._move(job, Trigger.OFFER, now, worker_id=worker.worker_id)
        self._timers.set(job.job_id, now + self._availability_timeout_ms)
        detail = {"job": job.job_id, "worker": worker.worker_id, "load": worker.load}
        self._trace(job, now, "offered", detail)
        message = f"offered to worker {worker.worker_id} (load {worker.load:.2f})"
        self._job_event("job.offered", job, message, now)
        resuming = job.rec.attempt > 1
        self._out.send(SendAvailabilityRequest(worker.worker_id, self._job_offer(job), resuming))

    def _queue(self, job: JobEntry, why: str, now: int) -> None:
        job.waiting_why = why
        self._timers.set(job.job_id, self._pending_since(job) + self._pending_ttl_ms)
        self._trace(job, now, "queued", {"job": job.job_id, "why": why})
        self._job_event("dispatch.queued", job, f"waiting for a worker: {why}", now)

    def _pending_since(self, job: JobEntry) -> int:
        """A first ROOM attempt waits from the dispatch's creation; a re-dispatch or a
        participant's job from its own."""
        if job.rec.attempt > 1 or job.rec.job_type is not JobType.ROOM:
            return job.rec.created_at_ms
        return self._dispatches[job.rec.dispatch_id].spec.created_at_ms

    def _asked_at(self, job: JobEntry) -> int:
        """When the job was asked for: its dispatch's creation, or a participant's join."""
        if job.rec.job_type is JobType.ROOM:
            return self._dispatches[job.rec.dispatch_id].spec.created_at_ms
        return job.rec.created_at_ms

    def _job_offer(self, job: JobEntry) -> JobOffer:
        spec = self._dispatches[job.rec.dispatch_id].spec
        return JobOffer(
            job_id=job.job_id,
            dispatch_id=spec.dispatch_id,
            job_type=job.rec.job_type,
            room=spec.room,
            agent_name=spec.agent_name,
            namespace=spec.namespace,
            metadata=spec.metadata,
            attempt=job.rec.attempt,
            participant=job.rec.participant,
        )

    def _on_answer(self, event: AvailabilityAnswered) -> None:
        job = self._jobs.get(event.job_id)
        if job is None or not _offered_to(job, event.worker_id):
            self._stray_answer(event, job)
        elif event.available:
            self._assign(job, event)
        elif event.terminate:
            self._refuse(job, event.now_ms)
        else:
            self._decline(job, "declined", event.now_ms)

    def _stray_answer(self, event: AvailabilityAnswered, job: JobEntry | None) -> None:
        """A late answer (after a timeout) or one for a job never offered to this worker."""
        state = job.rec.state.value if job else "unknown"
        message = f"ignored availability answer for job {event.job_id} ({state}, not offered to it)"
        worker = self._workers.get(event.worker_id)
        if worker is not None:
            self._worker_event("protocol.error", worker.info, message, event.now_ms, "warning")

    def _assign(self, job: JobEntry, answer: AvailabilityAnswered) -> None:
        now = answer.now_ms
        identity = answer.participant_identity or f"agent-{job.job_id}"
        self._move(job, Trigger.ACCEPT, now, participant_identity=identity)
        if self._start_timeout_ms:
            self._timers.set(job.job_id, now + self._start_timeout_ms)
        elapsed = now - self._asked_at(job)
        detail = {"job": job.job_id, "worker": answer.worker_id, "identity": identity}
        self._trace(job, now, "assigned", detail | {"elapsed_ms": elapsed})
        message = f"assigned to worker {answer.worker_id} as {identity} after {elapsed} ms"
        self._job_event("dispatch.assigned", job, message, now)
        self._out.send(
            SendAssignment(
                worker_id=answer.worker_id,
                offer=self._job_offer(job),
                participant_identity=identity,
                participant_name=answer.participant_name,
                participant_metadata=answer.participant_metadata,
                participant_attributes=answer.participant_attributes,
            )
        )

    def _refuse(self, job: JobEntry, now: int) -> None:
        worker_id = job.rec.worker_id
        self._trace(job, now, "terminate", {"job": job.job_id, "worker": worker_id})
        why = f"worker {worker_id} rejected the job with terminate=true"
        self._end(job, Trigger.REFUSE, now, why, "job.terminated")

    def _decline(self, job: JobEntry, what: str, now: int, reason: str = "") -> None:
        """The offered worker will not take the job: pass it on (or queue it)."""
        worker_id = job.rec.worker_id
        detail: dict[str, Any] = {"job": job.job_id, "worker": worker_id}
        if what == "timeout":
            detail["after_ms"] = self._availability_timeout_ms
        if reason:
            detail["reason"] = reason
        self._trace(job, now, what, detail)
        message = f"worker {worker_id} {_DECLINES[what]}" + (f": {reason}" if reason else "")
        self._job_event("job.declined", job, message, now)
        job.tried = job.tried | {worker_id}
        job.declines += 1
        job.retry_at_ms = now + min(REOFFER_MAX_MS, REOFFER_FIRST_MS << min(job.declines - 1, 8))
        self._move(job, Trigger.DECLINE, now, worker_id="")
        self._try_offer(job, now)

    # -- what workers say of their jobs -----------------------------------------------------------

    def _on_job_status(self, event: JobStatusReported) -> None:
        worker = self._workers.get(event.worker_id)
        if worker is None or event.job_id in worker.stopped:
            return  # gone, or the last word on a job it was told to end
        job = self._jobs.get(event.job_id)
        if job is not None and job.rec.worker_id != event.worker_id and _resumable_by(job, worker):
            # livekit-agents queues the update of a job that ended while it was disconnected and
            # sends it before migrate_job (which lists running jobs only): it is a migration.
            self._migrate(job, worker, event.now_ms)
        if job is None or job.rec.worker_id != event.worker_id:
            self._close(worker, f"update_job for job {event.job_id}, which it does not hold", event)
        elif not job.rec.state.is_terminal:
            try:
                self._report(job, event)
            except InvalidTransition as err:
                self._close(worker, f"update_job for job {event.job_id}: {err.reason}", event)

    def _report(self, job: JobEntry, event: JobStatusReported) -> None:
        trigger = report_trigger(event.status)
        if trigger is None or advance(job.rec.state, trigger) is job.rec.state:
            return
        now = event.now_ms
        if trigger is Trigger.REPORT_RUNNING:
            self._move(job, trigger, now)
            self._trace(job, now, "running", {"job": job.job_id, "worker": event.worker_id})
            self._job_event("job.running", job, f"running on worker {event.worker_id}", now)
        elif trigger is Trigger.REPORT_SUCCESS:
            self._end(job, trigger, now, "", "job.success")
        else:
            error = event.error or "the worker reported failure without a message"
            self._end(job, trigger, now, error, "job.failed", "error")

    def _close(self, worker: WorkerEntry, reason: str, event: JobStatusReported) -> None:
        self._out.send(CloseWorker(worker.worker_id, WS_POLICY_VIOLATION, reason))
        self._worker_event("protocol.error", worker.info, reason, event.now_ms, "warning")

    def _on_migrated(self, event: JobsMigrated) -> None:
        worker = self._workers.get(event.worker_id)
        if worker is None:
            return
        for job_id in event.job_ids:
            if job_id in worker.held:
                continue  # already its own: a repeated migrate changes nothing
            job = self._jobs.get(job_id)
            if job is not None and _resumable_by(job, worker):
                self._migrate(job, worker, event.now_ms)
            else:
                self._stop_stray(worker, job_id, job, event.now_ms)

    def _migrate(self, job: JobEntry, worker: WorkerEntry, now: int) -> None:
        previous = job.rec.worker_id
        self._move(job, Trigger.MIGRATE, now, worker_id=worker.worker_id)
        worker.stopped.discard(job.job_id)
        detail = {"job": job.job_id, "from_worker": previous, "worker": worker.worker_id}
        self._trace(job, now, "migrated", detail)
        message = f"migrated from worker {previous or '?'} to worker {worker.worker_id}"
        self._job_event("job.migrated", job, message, now)

    def _stop_stray(self, worker: WorkerEntry, job_id: str, job: JobEntry | None, now: int) -> None:
        """A worker claims a job it cannot have: stop its copy; a dispatch never has two agents."""
        self._stop(worker.worker_id, job_id)
        if job is None or job.key.project_id != worker.info.project_id:
            message = f"worker {worker.worker_id} told to stop unknown job {job_id}"
            self._worker_event("job.terminated", worker.info, message, now, "warning")
            return
        holder = f"held by worker {job.rec.worker_id}" if job.rec.worker_id else "not assigned"
        state = job.rec.state.value if job.rec.state.is_terminal else holder
        message = f"worker {worker.worker_id} told to stop its copy of job {job_id} ({state})"
        self._job_event("job.terminated", job, message, now, "warning", worker.worker_id)

    # -- timers -----------------------------------------------------------------------------------

    def _on_tick(self, event: Tick) -> None:
        while (job_id := self._timers.pop_due(event.now_ms)) is not None:
            job = self._jobs[job_id]
            if job.rec.state is JobState.OFFERED:
                self._decline(job, "timeout", event.now_ms)
            elif job.rec.state is JobState.PENDING:
                self._expire(job, event.now_ms)
            elif job.rec.state is JobState.ORPHANED:
                self._grace_over(job, event.now_ms)
            elif job.rec.state is JobState.ASSIGNED:
                self._start_overdue(job, event.now_ms)

    def _expire(self, job: JobEntry, now: int) -> None:
        waited = _secs(now - self._pending_since(job))
        why = f"no worker took the job in {waited} s: {job.waiting_why}"
        self._end(job, Trigger.TTL_EXPIRED, now, why, "dispatch.expired", "warning")

    def _grace_over(self, job: JobEntry, now: int) -> None:
        why = f"worker {job.rec.worker_id} did not come back within {_secs(self._grace_ms)} s"
        self._end(job, Trigger.GRACE_EXPIRED, now, why, "job.failed", "error")
        self._redispatch(job, now)

    def _start_overdue(self, job: JobEntry, now: int) -> None:
        """Assigned, and its worker has said nothing of it since: fail it rather than let the
        dispatch sit there. The worker's copy is stopped, should it start after all."""
        worker_id = job.rec.worker_id
        self._stop(worker_id, job.job_id)
        why = (
            f"worker {worker_id} did not report the job running within"
            f" {_secs(self._start_timeout_ms)} s of its assignment"
        )
        self._end(job, Trigger.START_TIMEOUT, now, why, "job.failed", "error")
        self._redispatch(job, now)

    def _redispatch(self, job: JobEntry, now: int) -> None:
        """A failed attempt's dispatch gets the next one, up to `redispatch_count` more."""
        dispatch = self._dispatches[job.rec.dispatch_id]
        if job.rec.attempt > self._redispatch_count or dispatch.deleted:
            return
        retry = self._new_job(
            dispatch, now, job.rec.attempt + 1, job.rec.job_type, job.rec.participant
        )
        detail = {"from_job": job.job_id, "job": retry.job_id, "attempt": retry.rec.attempt}
        self._trace(retry, now, "redispatched", detail)
        message = f"dispatched again as job {retry.job_id} (attempt {retry.rec.attempt})"
        self._job_event("job.redispatched", retry, message, now)
        self._try_offer(retry, now)

    # -- restart ----------------------------------------------------------------------------------

    def _on_restored(self, event: Restored) -> None:
        for record in event.dispatches:
            self._restore_dispatch(record)
        for rec in sorted(event.jobs, key=lambda r: (r.created_at_ms, r.attempt)):
            dispatch = self._dispatches.get(rec.dispatch_id)
            if dispatch is not None and rec.job_id not in self._jobs:
                self._restore_job(dispatch, rec, event.now_ms)

    def _restore_dispatch(self, record: DispatchRecord) -> None:
        spec = record.spec
        entry = DispatchEntry(spec, record.deleted, record.trace_lines, record.job_ids)
        self._dispatches[spec.dispatch_id] = entry
        if not record.deleted:
            self._live.setdefault(spec.project_id, {})[spec.dispatch_id] = None

    def _restore_job(self, dispatch: DispatchEntry, rec: JobRecord, now: int) -> None:
        job = self._adopt_record(rec, _job_key(dispatch.spec, rec.job_type))
        if job.job_id not in dispatch.job_ids:
            dispatch.job_ids += (job.job_id,)
        if rec.state.is_terminal:
            return
        if dispatch.deleted:
            self._end(
                job, Trigger.TERMINATE, now, "dispatch deleted before restart", "job.terminated"
            )
            return
        before = rec.state
        worker_id = rec.worker_id if before.holds_worker else ""
        self._move(job, Trigger.RESTORE, now, worker_id=worker_id)
        self._trace(job, now, "restored", {"job": job.job_id, "state_before": before.value})
        if job.rec.state is JobState.ORPHANED:
            self._timers.set(job.job_id, now + self._grace_ms)
            message = f"server restarted; job waits {_secs(self._grace_ms)} s for its worker"
            self._job_event("job.orphaned", job, message, now, "warning")
        else:
            job.waiting_why = "server restarted; waiting for a worker to register"
            self._timers.set(job.job_id, self._pending_since(job) + self._pending_ttl_ms)

    # -- state changes and their records ----------------------------------------------------------

    def _move(self, job: JobEntry, trigger: Trigger, now: int, **changes: Any) -> None:
        """The one place a job changes state: table check, indexes, timer reset, save."""
        state = advance(job.rec.state, trigger)
        for slot in self._slots(job):
            slot.pop(job.job_id, None)
        job.rec = job.rec.moved(state, now, **changes)
        for slot in self._slots(job):
            slot[job.job_id] = None
        self._timers.clear(job.job_id)
        self._out.touch_job(job.job_id)

    def _slots(self, job: JobEntry) -> list[dict[str, None]]:
        """The indexes a job belongs in, in its current state."""
        state = job.rec.state
        if state is JobState.PENDING:
            return [self._pending.setdefault(job.key, {})]
        worker = self._workers.get(job.rec.worker_id)
        if worker is None:
            return []
        if state is JobState.OFFERED:
            return [worker.offered]
        return [worker.held] if state in _ON_WORKER else []

    def _end(
        self, job: JobEntry, trigger: Trigger, now: int, error: str, kind: str, level: str = "info"
    ) -> None:
        self._move(job, trigger, now, error=error)
        detail = {"job": job.job_id, "state": job.rec.state.value, "error": error}
        self._trace(job, now, "ended", detail)
        self._job_event(
            kind, job, f"job {job.rec.state.value}" + (f": {error}" if error else ""), now, level
        )

    def _jobs_of(self, dispatch: DispatchEntry) -> Iterator[JobEntry]:
        return (self._jobs[j] for j in dispatch.job_ids if j in self._jobs)

    def _trace(self, job: JobEntry, now: int, what: str, detail: dict[str, Any]) -> None:
        self._trace_dispatch(self._dispatches[job.rec.dispatch_id], now, what, detail)

    def _trace_dispatch(
        self, dispatch: DispatchEntry, now: int, what: str, detail: dict[str, Any]
    ) -> None:
        dispatch.trace += (trace_line(now, what, detail),)
        self._out.touch_dispatch(dispatch.dispatch_id)

    def _job_event(
        self,
        kind: str,
        job: JobEntry,
        message: str,
        now: int,
        level: str = "info",
        worker: str = "",
    ) -> None:
        self._out.event(eventlog.for_job(kind, job.rec, message, now, level, worker))

    def _dispatch_event(
        self, kind: str, dispatch: DispatchEntry, message: str, now: int, level: str = "info"
    ) -> None:
        self._out.event(eventlog.for_dispatch(kind, dispatch.spec, message, now, level))

    def _worker_event(
        self, kind: str, info: WorkerInfo, message: str, now: int, level: str = "info"
    ) -> None:
        self._out.event(eventlog.for_worker(kind, info, message, now, level))


def _job_key(spec: DispatchSpec, job_type: JobType) -> PoolKey:
    """Which workers may take a job: the dispatch's agent, with the job's own type."""
    return PoolKey(spec.project_id, spec.owner, spec.agent_name, spec.namespace, job_type)


def _offered_to(job: JobEntry, worker_id: str) -> bool:
    return job.rec.state is JobState.OFFERED and job.rec.worker_id == worker_id


def _resumable_by(job: JobEntry, worker: WorkerEntry) -> bool:
    return job.rec.state is JobState.ORPHANED and job.key.same_agent(worker.key)


def _candidate_line(worker: WorkerEntry, job: JobEntry) -> dict[str, Any]:
    status = worker.status.name.lower()
    tried = worker.worker_id in job.tried
    return trace.candidate(worker.worker_id, worker.load, status, worker.info.remote, tried)


def _serves(info: WorkerInfo) -> str:
    return f"{trace.agent_label(info.agent_name)}, {trace.owner_label(info.owner)}"


def _secs(ms: int) -> str:
    return f"{ms / 1000:g}"
