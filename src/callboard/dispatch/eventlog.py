"""Lines for the project's event log, stamped with everything known about their subject.

Each line carries project, room, dispatch, job, worker, agent name and owner where known, so the
event API can filter by any of them ("what happened to alice's agent in room X?") without joins.
"""

from __future__ import annotations

from callboard.dispatch.model import DispatchSpec, JobRecord, RecordEvent, WorkerInfo


def for_job(
    kind: str, rec: JobRecord, message: str, now: int, level: str = "info", worker_id: str = ""
) -> RecordEvent:
    """`worker_id` names the worker concerned when the job no longer records it."""
    return RecordEvent(
        project_id=rec.project_id,
        kind=kind,
        at_ms=now,
        message=message,
        level=level,
        room_name=rec.room_name,
        dispatch_id=rec.dispatch_id,
        job_id=rec.job_id,
        worker_id=worker_id or rec.worker_id,
        agent_name=rec.agent_name,
        owner=rec.owner,
    )


def for_dispatch(
    kind: str, spec: DispatchSpec, message: str, now: int, level: str = "info"
) -> RecordEvent:
    return RecordEvent(
        project_id=spec.project_id,
        kind=kind,
        at_ms=now,
        message=message,
        level=level,
        room_name=spec.room.name,
        dispatch_id=spec.dispatch_id,
        agent_name=spec.agent_name,
        owner=spec.owner,
    )


def for_worker(
    kind: str, info: WorkerInfo, message: str, now: int, level: str = "info"
) -> RecordEvent:
    return RecordEvent(
        project_id=info.project_id,
        kind=kind,
        at_ms=now,
        message=message,
        level=level,
        worker_id=info.worker_id,
        agent_name=info.agent_name,
        owner=info.owner,
    )
