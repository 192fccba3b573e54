"""The dispatcher's mutable bookkeeping: live entries, timers, and the outbox of one event.

The public records in `model` are frozen snapshots; the dispatcher keeps its working state in the
entries below and hands out fresh snapshots on demand. `Timers` holds one deadline per job — what a
deadline means (availability timeout, pending TTL, grace window) follows from the job's state when
it fires, so a job can never carry a stale timer of the wrong kind. `Outbox` collects what one event
caused and orders it for the transports: writes first (so what was sent is already on its way to
disk), then event-log lines, then frames to workers in the order they were decided.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from callboard.dispatch.matching import PoolKey
from callboard.dispatch.model import (
    Action,
    DispatchRecord,
    DispatchSpec,
    JobRecord,
    RecordEvent,
    SaveDispatch,
    SaveJob,
    WorkerInfo,
    WorkerStatus,
    WorkerView,
)


@dataclass(eq=False)
class WorkerEntry:
    info: WorkerInfo
    key: PoolKey
    status: WorkerStatus = WorkerStatus.AVAILABLE
    load: float = 0.0
    job_count: int = 0
    offered: dict[str, None] = field(default_factory=dict)  # job ids awaiting its answer
    held: dict[str, None] = field(default_factory=dict)  # job ids ASSIGNED or RUNNING on it
    stopped: set[str] = field(
        default_factory=set
    )  # job ids it was told to end: late words expected

    @property
    def worker_id(self) -> str:
        return self.info.worker_id

    def view(self) -> WorkerView:
        return WorkerView(self.info, self.status, self.load, tuple(self.held), self.job_count)


@dataclass(eq=False)
class JobEntry:
    rec: JobRecord
    key: PoolKey
    seq: int  # creation order: the pending queue serves the oldest first
    # Workers that declined this attempt. Replaced, never changed in place: nearly every job
    # keeps the shared empty set, one object fewer per live job for the GC to walk.
    tried: frozenset[str] = frozenset()
    waiting_why: str = ""  # the last reason it was queued, quoted when it expires
    declines: int = 0  # declines and silences of this attempt, by any worker
    retry_at_ms: int = 0  # from then on, a decliner reporting itself AVAILABLE is asked again

    @property
    def job_id(self) -> str:
        return self.rec.job_id


@dataclass(eq=False)
class DispatchEntry:
    spec: DispatchSpec
    deleted: bool = False
    # Tuples of strings, replaced on each step: the GC stops tracking those, and there is one
    # of each per live dispatch. A dispatch has a handful of lines and jobs, so copying is cheap.
    trace: tuple[str, ...] = ()  # `model.trace_line`s
    job_ids: tuple[str, ...] = ()

    @property
    def dispatch_id(self) -> str:
        return self.spec.dispatch_id

    def record(self) -> DispatchRecord:
        return DispatchRecord(self.spec, self.deleted, self.trace, self.job_ids)


COMPACT_SLACK: Final = 1024  # stale heap entries always tolerated (see `Timers`)


class Timers:
    """At most one deadline per job; replaced or cleared ones drop out of the heap lazily, or all
    at once when they outnumber the live ones: most jobs clear their start timeout within
    milliseconds, so under load the stale entries behind a 60 s deadline would pile up to
    about rate x 60 s (a few MB at 2,000 dispatches/s)."""

    def __init__(self) -> None:
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, int, str]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        """Heap entries held, stale ones included."""
        return len(self._heap)

    def set(self, job_id: str, at_ms: int) -> None:
        self._due[job_id] = at_ms
        heapq.heappush(self._heap, (at_ms, next(self._seq), job_id))
        if len(self._heap) > 2 * len(self._due) + COMPACT_SLACK:
            self._compact()

    def _compact(self) -> None:
        """Keep one entry per live deadline, in the order they were set."""
        due = self._due
        self._heap = [entry for entry in self._heap if due.get(entry[2]) == entry[0]]
        heapq.heapify(self._heap)

    def clear(self, job_id: str) -> None:
        self._due.pop(job_id, None)

    def get(self, job_id: str) -> int | None:
        return self._due.get(job_id)

    def next_ms(self) -> int | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int) -> str | None:
        """The job whose deadline passed first (FIFO among equals), or None when none has."""
        self._drop_stale()
        if not self._heap or self._heap[0][0] > now_ms:
            return None
        _, _, job_id = heapq.heappop(self._heap)
        del self._due[job_id]
        return job_id

    def _drop_stale(self) -> None:
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)


class Outbox:
    """What one event caused; each record is saved once, in its final form for that event.

    Frames to workers come first: the worker can start on its answer while the records are
    handed to the store (which commits them in the background either way)."""

    def __init__(self) -> None:
        self._dispatches: dict[str, None] = {}
        self._jobs: dict[str, None] = {}
        self._events: list[RecordEvent] = []
        self._sends: list[Action] = []

    def touch_dispatch(self, dispatch_id: str) -> None:
        self._dispatches[dispatch_id] = None

    def touch_job(self, job_id: str) -> None:
        self._jobs[job_id] = None

    def event(self, event: RecordEvent) -> None:
        self._events.append(event)

    def send(self, action: Action) -> None:
        self._sends.append(action)

    def drain(
        self, dispatches: Mapping[str, DispatchEntry], jobs: Mapping[str, JobEntry]
    ) -> list[Action]:
        actions: list[Action] = [SaveDispatch(dispatches[d].record()) for d in self._dispatches]
        actions += [SaveJob(jobs[j].rec) for j in self._jobs]
        return [*self._sends, *actions, *self._events]
