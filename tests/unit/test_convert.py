"""Dispatch-core records to livekit-protocol messages: every field a client reads is carried."""

from __future__ import annotations

import pytest
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
    JobType,
    ParticipantRef,
    ReportedJobStatus,
    RoomRef,
)
from callboard.protocol import convert
from callboard.protocol.errors import WS_UNSUPPORTED_DATA, ProtocolViolation
from callboard.store.base import Room

MS = 1_750_000_000_000
ROOM = RoomRef(project_id="P_1", name="room-1", sid="RM_room0000001")


def offer(**overrides: object) -> JobOffer:
    fields: dict[str, object] = {
        "job_id": "AJ_job000000001", "dispatch_id": "AD_dispatch0001", "job_type": JobType.ROOM,
        "room": ROOM, "agent_name": "my-agent-jack", "namespace": "ns",
        "metadata": '{"customer": 7}', "attempt": 1,
    }
    return JobOffer(**{**fields, **overrides})  # type: ignore[arg-type]


def job(state: JobState, **overrides: object) -> JobRecord:
    fields: dict[str, object] = {
        "job_id": "AJ_job000000001", "dispatch_id": "AD_dispatch0001", "project_id": "P_1",
        "owner": "jack", "room_name": "room-1", "agent_name": "my-agent-jack", "attempt": 1,
        "state": state, "worker_id": "AW_worker000001", "error": "", "created_at_ms": MS,
        "updated_at_ms": MS + 2500, "participant_identity": "agent-AJ_job000000001",
    }
    return JobRecord(**{**fields, **overrides})  # type: ignore[arg-type]


def spec(**overrides: object) -> DispatchSpec:
    fields: dict[str, object] = {
        "dispatch_id": "AD_dispatch0001", "project_id": "P_1", "owner": "jack",
        "api_key": "APIjack", "agent_name": "my-agent-jack", "room": ROOM,
        "metadata": '{"customer": 7}', "created_at_ms": MS - 1000,
    }
    return DispatchSpec(**{**fields, **overrides})  # type: ignore[arg-type]


# -- Job -------------------------------------------------------------------------------------------


def test_job_message_carries_the_offer() -> None:
    msg = convert.job_message(offer(enable_recording=True))
    assert msg.id == "AJ_job000000001" and msg.dispatch_id == "AD_dispatch0001"
    assert msg.room.name == "room-1" and msg.room.sid == "RM_room0000001"
    assert msg.agent_name == "my-agent-jack" and msg.namespace == "ns"
    assert msg.metadata == '{"customer": 7}' and msg.enable_recording
    assert msg.type == pb.JT_ROOM


@pytest.mark.parametrize(("ours", "theirs"), [(JobType.ROOM, pb.JT_ROOM),
                                              (JobType.PUBLISHER, pb.JT_PUBLISHER),
                                              (JobType.PARTICIPANT, pb.JT_PARTICIPANT)])
def test_job_types_keep_livekits_numbers(ours: JobType, theirs: int) -> None:
    assert convert.job_message(offer(job_type=ours)).type == theirs


def test_a_job_message_survives_the_wire() -> None:
    msg = convert.job_message(offer())
    assert pb.Job.FromString(msg.SerializeToString()) == msg


# -- JobState --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (JobState.PENDING, pb.JS_PENDING),
        (JobState.OFFERED, pb.JS_PENDING),
        (JobState.ASSIGNED, pb.JS_PENDING),
        (JobState.RUNNING, pb.JS_RUNNING),
        (JobState.ORPHANED, pb.JS_RUNNING),
        (JobState.SUCCESS, pb.JS_SUCCESS),
        (JobState.FAILED, pb.JS_FAILED),
        (JobState.TERMINATED, pb.JS_SUCCESS),
        (JobState.EXPIRED, pb.JS_FAILED),
    ],
)
def test_every_job_state_has_a_livekit_status(state: JobState, status: int) -> None:
    assert convert.job_state(job(state)).status == status


def test_job_state_carries_worker_identity_error_and_nanosecond_times() -> None:
    state = convert.job_state(job(JobState.FAILED, error="worker never came back"))
    assert state.worker_id == "AW_worker000001"
    assert state.participant_identity == "agent-AJ_job000000001"
    assert state.error == "worker never came back"
    assert state.updated_at == (MS + 2500) * 1_000_000
    assert state.started_at == MS * 1_000_000 and state.ended_at == (MS + 2500) * 1_000_000


def test_a_pending_job_has_not_started_and_a_running_one_has_not_ended() -> None:
    pending = convert.job_state(job(JobState.PENDING, worker_id=""))
    assert pending.started_at == 0 and pending.ended_at == 0 and pending.worker_id == ""
    running = convert.job_state(job(JobState.RUNNING))
    assert running.started_at == MS * 1_000_000 and running.ended_at == 0


# -- AgentDispatch ---------------------------------------------------------------------------------


def test_agent_dispatch_carries_the_spec_and_its_jobs() -> None:
    record = DispatchRecord(spec=spec(), deleted=False, trace_lines=(),
                            job_ids=("AJ_job000000001", "AJ_job000000002"))
    jobs = [job(JobState.FAILED, error="gone"),
            job(JobState.RUNNING, job_id="AJ_job000000002", attempt=2,
                worker_id="AW_worker000002")]
    msg = convert.agent_dispatch(record, jobs)
    assert isinstance(msg, dpb.AgentDispatch)
    assert msg.id == "AD_dispatch0001" and msg.agent_name == "my-agent-jack"
    assert msg.room == "room-1" and msg.metadata == '{"customer": 7}'
    assert msg.state.created_at == (MS - 1000) * 1_000_000
    assert [j.id for j in msg.state.jobs] == ["AJ_job000000001", "AJ_job000000002"]
    first, second = msg.state.jobs
    assert first.state.status == pb.JS_FAILED and first.state.error == "gone"
    assert second.state.status == pb.JS_RUNNING and second.state.worker_id == "AW_worker000002"
    for j in msg.state.jobs:
        assert j.dispatch_id == "AD_dispatch0001" and j.agent_name == "my-agent-jack"
        assert j.room.name == "room-1" and j.room.sid == "RM_room0000001"
        assert j.metadata == '{"customer": 7}' and j.namespace == ""


def test_a_dispatch_with_no_jobs_yet() -> None:
    record = DispatchRecord(spec=spec(agent_name="", metadata=""), deleted=False, trace_lines=(),
                            job_ids=())
    msg = convert.agent_dispatch(record, [])
    assert msg.agent_name == "" and len(msg.state.jobs) == 0
    assert dpb.AgentDispatch.FromString(msg.SerializeToString()) == msg


def test_messages_built_in_place_keep_empty_parts_present() -> None:
    """Sub-messages are filled in place, not copied in: an all-default room, job state or
    dispatch state is still sent (present), as when they were built apart and assigned."""
    bare_room = RoomRef("P_1", "", "")
    bare = JobRecord("", "", "P_1", "", "", "", 1, JobState.PENDING, "", "", 0, 0)
    empty = spec(dispatch_id="", agent_name="", room=bare_room, metadata="", created_at_ms=0)
    msg = convert.job_with_state(empty, bare)
    assert msg.HasField("room") and msg.HasField("state")
    assert msg.SerializeToString() == pb.Job(
        type="JT_ROOM", room=models.Room(), state=pb.JobState()
    ).SerializeToString()
    record = DispatchRecord(spec=spec(created_at_ms=0), deleted=False, trace_lines=(), job_ids=())
    assert convert.agent_dispatch(record, []).HasField("state")
    assert convert.job_message(offer(room=bare_room)).HasField("room")


CALLER = ParticipantRef(
    sid="PA_caller000001", identity="caller", name="Caller", metadata="{}",
    attributes={"a": "1"}, kind=models.ParticipantInfo.SIP, joined_at_ms=MS,
)


def test_each_job_keeps_its_own_type_and_participant() -> None:
    record = DispatchRecord(spec=spec(), deleted=False, trace_lines=(),
                            job_ids=("AJ_job000000001", "AJ_job000000002"))
    jobs = [job(JobState.RUNNING),
            job(JobState.ASSIGNED, job_id="AJ_job000000002", job_type=JobType.PARTICIPANT,
                participant=CALLER)]
    msg = convert.agent_dispatch(record, jobs)
    assert [j.type for j in msg.state.jobs] == [pb.JT_ROOM, pb.JT_PARTICIPANT]
    assert not msg.state.jobs[0].HasField("participant")
    assert msg.state.jobs[1].participant.identity == "caller"


def test_a_participant_job_carries_its_participant() -> None:
    j = convert.job_message(offer(job_type=JobType.PARTICIPANT, participant=CALLER))
    assert j.type == pb.JT_PARTICIPANT
    p = j.participant
    assert (p.sid, p.identity, p.name, p.metadata) == ("PA_caller000001", "caller", "Caller", "{}")
    assert dict(p.attributes) == {"a": "1"} and p.kind == models.ParticipantInfo.SIP
    assert p.state == models.ParticipantInfo.JOINED
    assert (p.joined_at, p.joined_at_ms) == (MS // 1000, MS)
    assert pb.Job.FromString(j.SerializeToString()) == j


# -- Room, ServerInfo ------------------------------------------------------------------------------


def test_room_message_carries_the_room() -> None:
    room = Room(project_id="P_1", name="room-1", sid="RM_room0000001", created_at_ms=MS + 999,
                metadata="m", empty_timeout_s=300, departure_timeout_s=20, max_participants=8)
    msg = convert.room_message(room)
    assert (msg.sid, msg.name, msg.metadata) == ("RM_room0000001", "room-1", "m")
    assert (msg.empty_timeout, msg.departure_timeout, msg.max_participants) == (300, 20, 8)
    assert msg.creation_time == (MS + 999) // 1000 and msg.creation_time_ms == MS + 999


def test_server_info() -> None:
    info = convert.server_info("node-1")
    assert info.node_id == "node-1" and info.version == f"callboard-{__version__}"
    assert info.edition == models.ServerInfo.Standard
    assert info.agent_protocol == convert.AGENT_PROTOCOL_VERSION and info.protocol > 0


# -- what workers report ---------------------------------------------------------------------------


@pytest.mark.parametrize(("wire", "ours"), [(pb.JS_PENDING, ReportedJobStatus.PENDING),
                                            (pb.JS_RUNNING, ReportedJobStatus.RUNNING),
                                            (pb.JS_SUCCESS, ReportedJobStatus.SUCCESS),
                                            (pb.JS_FAILED, ReportedJobStatus.FAILED)])
def test_reported_status(wire: int, ours: ReportedJobStatus) -> None:
    assert convert.reported_status(wire) is ours


@pytest.mark.parametrize(("wire", "named"), [(pb.JS_CANCELLED, "JS_CANCELLED"), (99, "99"),
                                             (-1, "-1")])
def test_an_unsupported_reported_status_is_a_violation(wire: int, named: str) -> None:
    """Protobuf enums are open: a binary frame can carry any number in `update_job.status`."""
    with pytest.raises(ProtocolViolation, match=f"unsupported job status {named}") as info:
        convert.reported_status(wire)
    assert info.value.close_code == WS_UNSUPPORTED_DATA


def test_an_out_of_range_status_arrives_through_a_real_frame() -> None:
    raw = pb.WorkerMessage(update_job=pb.UpdateJobStatus(job_id="AJ_1", status=pb.JS_RUNNING))
    data = raw.SerializeToString().replace(b"\x10\x01", b"\x10\x63")  # status = 99
    msg = pb.WorkerMessage.FromString(data)
    assert msg.update_job.status == 99
    with pytest.raises(ProtocolViolation):
        convert.reported_status(msg.update_job.status)
