"""Job states: every legal move of a job, in one table.

This file holds all of the job state machine. The dispatcher never sets `JobRecord.state` by hand;
it asks `advance(state, trigger)`, and a pair missing from `TRANSITIONS` raises `InvalidTransition`.
A miss is a protocol error: either a worker said something its job's state does not allow (the
dispatcher closes that worker's connection), or the core itself has a bug — in both cases failing
loudly beats a job quietly sitting in the wrong state. The docs' state diagram is rendered from the
same table (`mermaid()`), so the picture cannot drift from the code.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from callboard.dispatch.model import JobState, ReportedJobStatus
from callboard.protocol.errors import WS_POLICY_VIOLATION, ProtocolViolation


class Trigger(enum.Enum):
    """Why a job moves."""

    OFFER = "offer"  # a candidate was chosen and asked for its availability
    ACCEPT = "accept"  # the worker answered available=true
    DECLINE = "decline"  # available=false, no answer in time, or the offered worker left
    REFUSE = "refuse"  # available=false with terminate=true: the job is not wanted at all
    REPORT_RUNNING = "report_running"
    REPORT_SUCCESS = "report_success"
    REPORT_FAILED = "report_failed"
    WORKER_LOST = "worker_lost"  # the holding worker's connection dropped
    MIGRATE = "migrate"  # a reconnected worker still runs the job
    GRACE_EXPIRED = "grace_expired"  # the worker did not come back in time
    START_TIMEOUT = "start_timeout"  # assigned, but the worker never reported on the job in time
    TTL_EXPIRED = "ttl_expired"  # waited in the queue longer than the pending TTL
    TERMINATE = "terminate"  # its dispatch or room was deleted
    RESTORE = "restore"  # the server restarted; nothing live survived


_S = JobState
_T = Trigger

TRANSITIONS: Final[Mapping[tuple[JobState, Trigger], JobState]] = MappingProxyType(
    {
        (_S.PENDING, _T.OFFER): _S.OFFERED,
        (_S.PENDING, _T.TTL_EXPIRED): _S.EXPIRED,
        (_S.PENDING, _T.TERMINATE): _S.TERMINATED,
        (_S.PENDING, _T.RESTORE): _S.PENDING,
        (_S.OFFERED, _T.ACCEPT): _S.ASSIGNED,
        (_S.OFFERED, _T.DECLINE): _S.PENDING,
        (_S.OFFERED, _T.REFUSE): _S.TERMINATED,
        (_S.OFFERED, _T.TERMINATE): _S.TERMINATED,
        (_S.OFFERED, _T.RESTORE): _S.PENDING,
        (_S.ASSIGNED, _T.REPORT_RUNNING): _S.RUNNING,
        (_S.ASSIGNED, _T.REPORT_SUCCESS): _S.SUCCESS,
        (_S.ASSIGNED, _T.REPORT_FAILED): _S.FAILED,
        (_S.ASSIGNED, _T.WORKER_LOST): _S.ORPHANED,
        (_S.ASSIGNED, _T.START_TIMEOUT): _S.FAILED,
        (_S.ASSIGNED, _T.TERMINATE): _S.TERMINATED,
        (_S.ASSIGNED, _T.RESTORE): _S.ORPHANED,
        (_S.RUNNING, _T.REPORT_RUNNING): _S.RUNNING,
        (_S.RUNNING, _T.REPORT_SUCCESS): _S.SUCCESS,
        (_S.RUNNING, _T.REPORT_FAILED): _S.FAILED,
        (_S.RUNNING, _T.WORKER_LOST): _S.ORPHANED,
        (_S.RUNNING, _T.TERMINATE): _S.TERMINATED,
        (_S.RUNNING, _T.RESTORE): _S.ORPHANED,
        (_S.ORPHANED, _T.MIGRATE): _S.RUNNING,
        (_S.ORPHANED, _T.GRACE_EXPIRED): _S.FAILED,
        (_S.ORPHANED, _T.TERMINATE): _S.TERMINATED,
        (_S.ORPHANED, _T.RESTORE): _S.ORPHANED,
    }
)

INITIAL: Final = JobState.PENDING

_REPORTS: Final[Mapping[ReportedJobStatus, Trigger]] = MappingProxyType(
    {
        ReportedJobStatus.RUNNING: Trigger.REPORT_RUNNING,
        ReportedJobStatus.SUCCESS: Trigger.REPORT_SUCCESS,
        ReportedJobStatus.FAILED: Trigger.REPORT_FAILED,
    }
)


class InvalidTransition(ProtocolViolation):
    """A job was asked to make a move the table does not have."""

    def __init__(self, state: JobState, trigger: Trigger) -> None:
        super().__init__(
            f"a job in state {state.value!r} cannot take {trigger.value!r}", WS_POLICY_VIOLATION
        )
        self.state = state
        self.trigger = trigger


def advance(state: JobState, trigger: Trigger) -> JobState:
    """The state after `trigger`; raises `InvalidTransition` when the table has no such move."""
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise InvalidTransition(state, trigger) from None


def report_trigger(status: ReportedJobStatus) -> Trigger | None:
    """The trigger for a worker's `update_job`; None for JS_PENDING, which changes nothing."""
    return _REPORTS.get(status)


def mermaid() -> str:
    """The table as a Mermaid `stateDiagram-v2`, one edge per (from, to) with its triggers."""
    edges: dict[tuple[JobState, JobState], list[str]] = {}
    for (src, trigger), dst in TRANSITIONS.items():
        edges.setdefault((src, dst), []).append(trigger.value)
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL.value}"]
    lines += [f"    {a.value} --> {b.value}: {', '.join(ts)}" for (a, b), ts in edges.items()]
    lines += [f"    {s.value} --> [*]" for s in JobState if s.is_terminal]
    return "\n".join(lines) + "\n"
