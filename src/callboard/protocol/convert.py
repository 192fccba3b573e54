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
    RoomRef,
)
from callboard.protocol.errors import WS_UNSUPPORTED_DATA, ProtocolViolation
from callboard.rooms.contract import ParticipantView, RoomView
from callboard.store.base import Room

AGENT_PROTOCOL_VERSION = 1

_JOB_TYPE_NAMES: dict[int, str] = {int(v): name for name, v in pb.JobType.items()}

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


def job_message(offer: JobOffer, *, enable_recording: bool = False) -> pb.Job:
    """`enable_recording`: set it even when the offer does not ask (a server-wide setting)."""
    job = pb.Job()
    _fill_job(
        job,
        offer.job_id,
        offer.dispatch_id,
        offer.job_type,
        offer.room,
        offer.namespace,
        offer.agent_name,
        offer.metadata,
        offer.enable_recording or enable_recording,
        offer.participant,
    )
    return job


def _fill_job(
    job: pb.Job,
    job_id: str,
    dispatch_id: str,
    job_type: int,
    room: RoomRef,
    namespace: str,
    agent_name: str,
    metadata: str,
    enable_recording: bool,
    participant: ParticipantRef | None,
) -> None:
    """Fills `job` in place (sub-messages too, never built apart and copied in): this runs for
    every offer, assignment, ListDispatch entry and job webhook."""
    job.id = job_id
    job.dispatch_id = dispatch_id
    job.type = _job_type_name(job_type)  # type: ignore[assignment]
    room_msg = job.room
    room_msg.SetInParent()
    room_msg.sid = room.sid
    room_msg.name = room.name
    job.namespace = namespace
    job.agent_name = agent_name
    job.metadata = metadata
    job.enable_recording = enable_recording
    if participant is not None:
        job.participant.CopyFrom(participant_info(participant))


def _job_type_name(job_type: int) -> str:
    name = _JOB_TYPE_NAMES.get(job_type)
    return name if name is not None else pb.JobType.Name(int(job_type))


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
    state = pb.JobState()
    _fill_job_state(state, record)
    return state


def _fill_job_state(state: pb.JobState, record: JobRecord) -> None:
    state.status = _JOB_STATUS[record.state]  # type: ignore[assignment]
    state.error = record.error
    state.updated_at = record.updated_at_ms * 1_000_000
    state.participant_identity = record.participant_identity
    state.worker_id = record.worker_id
    if record.state is not JobState.PENDING:
        state.started_at = record.created_at_ms * 1_000_000
    if record.state.is_terminal:
        state.ended_at = record.updated_at_ms * 1_000_000


def job_with_state(spec: DispatchSpec, job: JobRecord) -> pb.Job:
    """A job as ListDispatch and webhooks show it: what was offered, plus where it is now."""
    msg = pb.Job()
    fill_job_with_state(msg, spec, job)
    return msg


def fill_job_with_state(msg: pb.Job, spec: DispatchSpec, job: JobRecord) -> None:
    """`job_with_state` written into `msg` (a field of a message being built): no copy."""
    _fill_job(
        msg,
        job.job_id,
        spec.dispatch_id,
        job.job_type,
        spec.room,
        spec.namespace,
        spec.agent_name,
        spec.metadata,
        False,
        job.participant,
    )
    state = msg.state
    state.SetInParent()
    _fill_job_state(state, job)


def agent_dispatch(record: DispatchRecord, jobs: list[JobRecord]) -> dpb.AgentDispatch:
    spec = record.spec
    msg = dpb.AgentDispatch(
        id=spec.dispatch_id,
        agent_name=spec.agent_name,
        room=spec.room.name,
        metadata=spec.metadata,
    )
    state = msg.state
    state.SetInParent()
    state.created_at = spec.created_at_ms * 1_000_000
    for job in jobs:
        fill_job_with_state(state.jobs.add(), spec, job)
    return msg


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
