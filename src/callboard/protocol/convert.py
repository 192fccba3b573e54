"""Dispatch-core records <-> livekit-protocol messages. The only place they meet."""

from __future__ import annotations

from livekit.protocol import agent as pb
from livekit.protocol import agent_dispatch as dpb
from livekit.protocol import models

from callboard import __version__
from callboard.dispatch.model import (
    DispatchRecord,
    DispatchSpec,
    JobOffer,
    JobRecord,
    JobState,
    ParticipantRef,
    ReportedJobStatus,
)
from callboard.protocol.errors import WS_UNSUPPORTED_DATA, ProtocolViolation
from callboard.rooms.contract import ParticipantView, RoomView
from callboard.store.base import Room

AGENT_PROTOCOL_VERSION = 1

_JOB_STATUS: dict[JobState, int] = {
    JobState.PENDING: pb.JS_PENDING,
    JobState.OFFERED: pb.JS_PENDING,
    JobState.ASSIGNED: pb.JS_PENDING,
    JobState.RUNNING: pb.JS_RUNNING,
    JobState.ORPHANED: pb.JS_RUNNING,
    JobState.SUCCESS: pb.JS_SUCCESS,
    JobState.FAILED: pb.JS_FAILED,
    JobState.TERMINATED: pb.JS_SUCCESS,
    JobState.EXPIRED: pb.JS_FAILED,
}


def server_info(node_id: str) -> models.ServerInfo:
    return models.ServerInfo(
        edition=models.ServerInfo.Standard,
        version=f"callboard-{__version__}",
        protocol=16,
        node_id=node_id,
        agent_protocol=AGENT_PROTOCOL_VERSION,
    )


def job_message(offer: JobOffer) -> pb.Job:
    job = pb.Job(
        id=offer.job_id,
        dispatch_id=offer.dispatch_id,
        type=pb.JobType.Name(int(offer.job_type)),
        room=models.Room(sid=offer.room.sid, name=offer.room.name),
        namespace=offer.namespace,
        agent_name=offer.agent_name,
        metadata=offer.metadata,
        enable_recording=offer.enable_recording,
    )
    if offer.participant is not None:
        job.participant.CopyFrom(participant_info(offer.participant))
    return job


def participant_info(ref: ParticipantRef) -> models.ParticipantInfo:
    """What a JT_PARTICIPANT job says of its participant (livekit-server's `Job.participant`)."""
    return models.ParticipantInfo(
        sid=ref.sid,
        identity=ref.identity,
        name=ref.name,
        metadata=ref.metadata,
        attributes=dict(ref.attributes),
        kind=ref.kind,  # type: ignore[arg-type]
        state=models.ParticipantInfo.JOINED,
        joined_at=ref.joined_at_ms // 1000,
        joined_at_ms=ref.joined_at_ms,
    )


def job_state(record: JobRecord) -> pb.JobState:
    state = pb.JobState(
        status=_JOB_STATUS[record.state],  # type: ignore[arg-type]
        error=record.error,
        updated_at=record.updated_at_ms * 1_000_000,
        participant_identity=record.participant_identity,
        worker_id=record.worker_id,
    )
    if record.state is not JobState.PENDING:
        state.started_at = record.created_at_ms * 1_000_000
    if record.state.is_terminal:
        state.ended_at = record.updated_at_ms * 1_000_000
    return state


def job_with_state(spec: DispatchSpec, job: JobRecord) -> pb.Job:
    """A job as ListDispatch and webhooks show it: what was offered, plus where it is now."""
    msg = job_message(
        JobOffer(
            job_id=job.job_id,
            dispatch_id=spec.dispatch_id,
            job_type=job.job_type,
            room=spec.room,
            agent_name=spec.agent_name,
            namespace=spec.namespace,
            metadata=spec.metadata,
            attempt=job.attempt,
            participant=job.participant,
        )
    )
    msg.state.CopyFrom(job_state(job))
    return msg


def agent_dispatch(record: DispatchRecord, jobs: list[JobRecord]) -> dpb.AgentDispatch:
    spec = record.spec
    state = dpb.AgentDispatchState(created_at=spec.created_at_ms * 1_000_000)
    state.jobs.extend(job_with_state(spec, job) for job in jobs)
    return dpb.AgentDispatch(
        id=spec.dispatch_id,
        agent_name=spec.agent_name,
        room=spec.room.name,
        metadata=spec.metadata,
        state=state,
    )


def room_message(room: Room | RoomView) -> models.Room:
    """A room as RoomService and webhooks show it: a stored room, or a live one with its count."""
    msg = models.Room(
        sid=room.sid,
        name=room.name,
        empty_timeout=room.empty_timeout_s,
        departure_timeout=room.departure_timeout_s,
        max_participants=room.max_participants,
        creation_time=room.created_at_ms // 1000,
        creation_time_ms=room.created_at_ms,
        metadata=room.metadata,
    )
    if isinstance(room, RoomView):
        msg.num_participants = room.num_participants
    return msg


_STATES = {name.lower(): value for name, value in models.ParticipantInfo.State.items()}
_PERMISSIONS = frozenset(f.name for f in models.ParticipantPermission.DESCRIPTOR.fields)
_REASONS: dict[str, int] = dict(models.DisconnectReason.items())


def participant_view_info(p: ParticipantView, left_because: str = "") -> models.ParticipantInfo:
    """A participant as webhooks show it; `left_because` is a DisconnectReason name."""
    info = models.ParticipantInfo(
        sid=p.sid,
        identity=p.identity,
        name=p.name,
        state=_STATES.get(p.state, models.ParticipantInfo.JOINED),  # type: ignore[arg-type]
        metadata=p.metadata,
        attributes=dict(p.attributes),
        joined_at=p.joined_at_ms // 1000,
        joined_at_ms=p.joined_at_ms,
        kind=p.kind,  # type: ignore[arg-type]
    )
    for flag, value in p.permissions.items():
        if flag in _PERMISSIONS:
            setattr(info.permission, flag, bool(value))
    if left_because in _REASONS:
        info.disconnect_reason = _REASONS[left_because]  # type: ignore[assignment]
    return info


def reported_status(status: int) -> ReportedJobStatus:
    """A worker's `update_job` status. Protobuf enums are open, so a frame can carry any integer
    (JS_CANCELLED too, which callboard does not take from workers): that is the worker's
    protocol violation, not a crash of the connection handler."""
    try:
        return ReportedJobStatus(int(status))
    except ValueError:
        name = pb.JobStatus.Name(status) if status in pb.JobStatus.values() else str(status)
        raise ProtocolViolation(
            f"update_job with unsupported job status {name}", WS_UNSUPPORTED_DATA
        ) from None
