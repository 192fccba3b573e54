"""The dispatch core's vocabulary: records it keeps, events it is fed, actions it returns.

This file is the contract between the core (`dispatch.core.Dispatcher`) and the transports: a
transport decodes bytes into these events, feeds `Dispatcher.handle`, and carries out the actions it
gets back (send a frame, write the store, log). Times are epoch milliseconds (`*_ms`) passed in with
each event; nothing here reads a clock.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# -------------------------------------------------------------------------------------------------
# Enumerations. Integer values of JobType, WorkerStatus, ReportedJobStatus equal livekit-protocol's.


class JobType(enum.IntEnum):
    ROOM = 0
    PUBLISHER = 1
    PARTICIPANT = 2


class WorkerStatus(enum.IntEnum):
    AVAILABLE = 0
    FULL = 1


class ReportedJobStatus(enum.IntEnum):
    """What a worker may say of its job in `update_job` (livekit JobStatus)."""

    PENDING = 0
    RUNNING = 1
    SUCCESS = 2
    FAILED = 3


class JobState(enum.Enum):
    """Where a job is, from callboard's side. Transitions live in `dispatch.states`."""

    PENDING = "pending"  # waiting: no candidate worker yet (the pending queue)
    OFFERED = "offered"  # availability request sent to one worker, answer awaited
    ASSIGNED = "assigned"  # JobAssignment sent, worker has not reported running yet
    RUNNING = "running"  # worker reported JS_RUNNING
    ORPHANED = "orphaned"  # its worker's connection dropped; grace window for migrate_job
    SUCCESS = "success"  # worker reported JS_SUCCESS
    FAILED = "failed"  # worker reported JS_FAILED, or the grace window ran out
    TERMINATED = "terminated"  # ended by callboard: dispatch/room deleted, or terminate=true
    EXPIRED = "expired"  # waited longer than the pending TTL

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def holds_worker(self) -> bool:
        """The job occupies a worker (or waits for one to come back)."""
        return self in (JobState.ASSIGNED, JobState.RUNNING, JobState.ORPHANED)


_TERMINAL = frozenset({JobState.SUCCESS, JobState.FAILED, JobState.TERMINATED, JobState.EXPIRED})


# -------------------------------------------------------------------------------------------------
# Records: plain snapshots the core hands to the store and the APIs.


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker is, fixed at registration."""

    worker_id: str
    project_id: str
    api_key: str
    owner: str  # "" = production; otherwise the developer the worker's key belongs to
    agent_name: str
    namespace: str
    job_type: JobType
    version: str
    remote: str  # "host:port" the connection came from
    connected_at_ms: int
    permissions: Mapping[str, bool] = field(default_factory=dict)  # allowed_permissions, snake_case


@dataclass(frozen=True)
class WorkerView:
    """A worker as the project API shows it."""

    info: WorkerInfo
    status: WorkerStatus
    load: float
    job_ids: tuple[str, ...]
    reported_job_count: int


@dataclass(frozen=True)
class RoomRef:
    project_id: str
    name: str
    sid: str


@dataclass(frozen=True)
class ParticipantRef:
    """The participant a JT_PARTICIPANT job is for (becomes protobuf `Job.participant`)."""

    sid: str
    identity: str
    name: str = ""
    metadata: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    kind: int = 0  # livekit ParticipantInfo.Kind
    joined_at_ms: int = 0


@dataclass(frozen=True)
class DispatchSpec:
    """A dispatch as created (by API, by room creation, later by token or SIP rule)."""

    dispatch_id: str
    project_id: str
    owner: str  # "" = production; a developer name for a developer key's dispatch
    api_key: str  # the key that signed the request; "" when created by the server itself
    agent_name: str
    room: RoomRef
    metadata: str = ""
    namespace: str = ""
    job_type: JobType = JobType.ROOM
    source: str = "api"  # api | room | token | sip: how it came to be, shown in explain
    created_at_ms: int = 0


@dataclass(frozen=True)
class TraceEntry:
    """One line of a dispatch's explain trace, decoded: what happened, when, and why.

    Live dispatches keep their trace as JSON text (`trace_line`), not as these: a line is encoded
    once when it is traced and then only copied, and text is invisible to the garbage collector,
    which otherwise walks every line of every live dispatch on each full collection."""

    at_ms: int
    what: (
        str  # e.g. "created", "candidates", "offered", "declined", "timeout", "assigned", "queued"
    )
    detail: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, line: str) -> TraceEntry:
        at_ms, what, detail = json.loads(line)
        return cls(at_ms, what, detail)


def trace_line(at_ms: int, what: str, detail: Mapping[str, Any]) -> str:
    """A trace line as compact JSON `[at_ms, what, detail]`, byte for byte what `json.dumps` makes
    with `separators=(",", ":"), ensure_ascii=False, default=str` (a detail that is not
    JSON-native is diagnostic text).

    Lines are made on the dispatch path, before the worker is asked, so the common shapes skip
    the encoder object: string keys with strings, numbers, booleans or None are written here, and
    a list value shared by many lines (a pool's candidate lines, which the dispatcher reuses
    until a worker changes) is encoded once for all of them. Anything else goes to the encoder.
    """
    if type(at_ms) is int and type(what) is str:
        fields = []
        for key, value in detail.items():
            text = _scalar(value) if type(value) is not list else _SHARED.text(value)
            if text is None or type(key) is not str:
                break
            fields.append(_string(key) + ":" + text)
        else:
            return f"[{at_ms},{_string(what)},{{{','.join(fields)}}}]"
    plain = detail if type(detail) is dict else dict(detail)
    return _encode([at_ms, what, plain])


def _scalar(value: Any) -> str | None:
    """JSON of a string, int, finite float, bool or None, as `json` writes it; else None."""
    kind = type(value)
    if kind is str:
        return _string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    return None


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode
_string: Callable[[str], str] = json.encoder.encode_basestring


class _SharedText:
    """JSON of the last few list values seen, by identity (each kept alive while remembered, so
    an id cannot be reused meanwhile). Lists in trace details are never changed once traced."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._by_id: dict[int, tuple[object, str]] = {}

    def text(self, value: list[Any]) -> str:
        hit = self._by_id.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        text = _encode(value)
        if len(self._by_id) >= self._size:
            del self._by_id[next(iter(self._by_id))]
        self._by_id[id(value)] = (value, text)
        return text


_SHARED = _SharedText()


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    dispatch_id: str
    project_id: str
    owner: str
    room_name: str
    agent_name: str
    attempt: int  # 1 for the first assignment; re-dispatches count up
    state: JobState
    worker_id: str  # "" while no worker holds it
    error: str
    created_at_ms: int
    updated_at_ms: int
    participant_identity: str = ""  # the agent's identity once assigned
    job_type: JobType = JobType.ROOM  # a ROOM dispatch also gets PARTICIPANT jobs, one per joiner
    participant: ParticipantRef | None = None  # whom a PARTICIPANT job is for

    def moved(self, state: JobState, at_ms: int, **changes: Any) -> JobRecord:
        """The job in `state` since `at_ms`, with `changes`: what `dataclasses.replace` makes,
        without its field introspection or the frozen `__init__`'s setattr per field (the
        dispatcher does this three times per dispatch, twice before the worker hears back)."""
        fields = self.__dict__
        for name in changes:
            if name not in fields:
                raise TypeError(f"JobRecord has no field {name!r}")
        moved = object.__new__(JobRecord)
        values = moved.__dict__
        values.update(fields)
        values["state"] = state
        values["updated_at_ms"] = at_ms
        values.update(changes)
        return moved


@dataclass(frozen=True)
class DispatchRecord:
    spec: DispatchSpec
    deleted: bool
    trace_lines: tuple[str, ...]  # the explain trace, one `trace_line` per step
    job_ids: tuple[str, ...]

    @property
    def trace(self) -> tuple[TraceEntry, ...]:
        """The trace decoded, for readers (the explain API, tests); the store keeps the text."""
        return tuple(TraceEntry.parse(line) for line in self.trace_lines)


# -------------------------------------------------------------------------------------------------
# Events: what happened, fed to `Dispatcher.handle`.


@dataclass(frozen=True)
class WorkerRegistered:
    info: WorkerInfo
    now_ms: int


@dataclass(frozen=True)
class WorkerStatusChanged:
    """`update_worker`: `status` None means the worker did not send one (keep the old status)."""

    worker_id: str
    status: WorkerStatus | None
    load: float
    job_count: int
    now_ms: int


@dataclass(frozen=True)
class WorkerGone:
    worker_id: str
    reason: str
    now_ms: int


@dataclass(frozen=True)
class DispatchCreated:
    spec: DispatchSpec
    now_ms: int


@dataclass(frozen=True)
class DispatchDeleted:
    dispatch_id: str
    reason: str
    now_ms: int


@dataclass(frozen=True)
class RoomClosed:
    project_id: str
    room_name: str
    reason: str
    now_ms: int


@dataclass(frozen=True)
class ParticipantJoined:
    """A non-agent participant joined a room: each live dispatch of the room whose agent has
    JT_PARTICIPANT workers registered (or that is itself a PARTICIPANT dispatch) gets a job for it.
    """

    project_id: str
    room_name: str
    participant: ParticipantRef
    now_ms: int


@dataclass(frozen=True)
class PublisherJoined:
    """A non-agent participant published its first track: each live dispatch of the room whose
    agent has JT_PUBLISHER workers registered (or that is itself a PUBLISHER dispatch) gets a job
    for it (LiveKit's JT_PUBLISHER)."""

    project_id: str
    room_name: str
    participant: ParticipantRef
    now_ms: int


@dataclass(frozen=True)
class AvailabilityAnswered:
    worker_id: str
    job_id: str
    available: bool
    terminate: bool
    participant_identity: str
    participant_name: str
    participant_metadata: str
    participant_attributes: Mapping[str, str]
    now_ms: int


@dataclass(frozen=True)
class JobStatusReported:
    worker_id: str
    job_id: str
    status: ReportedJobStatus
    error: str
    now_ms: int


@dataclass(frozen=True)
class JobsMigrated:
    """`migrate_job` from a (re)connected worker that still runs these jobs."""

    worker_id: str
    job_ids: tuple[str, ...]
    now_ms: int


@dataclass(frozen=True)
class Restored:
    """At server start: what the store held. Jobs that were running wait the grace window."""

    dispatches: tuple[DispatchRecord, ...]
    jobs: tuple[JobRecord, ...]
    now_ms: int


@dataclass(frozen=True)
class Tick:
    now_ms: int


Event = (
    WorkerRegistered
    | WorkerStatusChanged
    | WorkerGone
    | DispatchCreated
    | DispatchDeleted
    | RoomClosed
    | ParticipantJoined
    | PublisherJoined
    | AvailabilityAnswered
    | JobStatusReported
    | JobsMigrated
    | Restored
    | Tick
)


# -------------------------------------------------------------------------------------------------
# Actions: what the transports must carry out, in order.


@dataclass(frozen=True)
class JobOffer:
    """What a worker is told about a job (becomes protobuf `Job`)."""

    job_id: str
    dispatch_id: str
    job_type: JobType
    room: RoomRef
    agent_name: str
    namespace: str
    metadata: str
    attempt: int
    enable_recording: bool = False
    participant: ParticipantRef | None = None  # set for PARTICIPANT jobs


@dataclass(frozen=True)
class SendAvailabilityRequest:
    worker_id: str
    offer: JobOffer
    resuming: bool


@dataclass(frozen=True)
class SendAssignment:
    """The transport mints the job token with the worker's key (it holds the secrets)."""

    worker_id: str
    offer: JobOffer
    participant_identity: str
    participant_name: str
    participant_metadata: str
    participant_attributes: Mapping[str, str]


@dataclass(frozen=True)
class SendTermination:
    worker_id: str
    job_id: str


@dataclass(frozen=True)
class CloseWorker:
    worker_id: str
    close_code: int
    reason: str


@dataclass(frozen=True)
class SaveDispatch:
    record: DispatchRecord


@dataclass(frozen=True)
class SaveJob:
    """Persist the job; the store appends a status-history row whenever `state` changed."""

    record: JobRecord


@dataclass(frozen=True)
class RecordEvent:
    """A line in the project's event log (dispatch created/queued/assigned/ended, job status)."""

    project_id: str
    kind: str  # dotted: "dispatch.created", "dispatch.queued", "job.assigned", "worker.connected"
    at_ms: int
    message: str
    level: str = "info"  # info | warning | error
    room_name: str = ""
    dispatch_id: str = ""
    job_id: str = ""
    worker_id: str = ""
    agent_name: str = ""
    owner: str = ""


Action = (
    SendAvailabilityRequest
    | SendAssignment
    | SendTermination
    | CloseWorker
    | SaveDispatch
    | SaveJob
    | RecordEvent
)
