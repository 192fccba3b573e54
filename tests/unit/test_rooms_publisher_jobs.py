"""JT_PUBLISHER: a participant's first publish starts a job for each live dispatch of the room whose
agent has JT_PUBLISHER workers (the room side feeds `PublisherJoined` from `track_published`)."""

from __future__ import annotations

from callboard.dispatch.model import (
    JobType,
    ParticipantRef,
    PublisherJoined,
    ReportedJobStatus,
    SendAvailabilityRequest,
)
from tests.unit.test_dispatch_core import PROJECT, Rig, kinds, one


def publish(rig: Rig, identity: str, room: str = "room-1") -> list[object]:
    who = ParticipantRef(f"PA_{identity}", identity, name=identity, kind=0)
    return list(rig.feed(PublisherJoined(PROJECT, room, who, rig.now)))


def test_no_publisher_job_without_publisher_workers() -> None:
    rig = Rig()
    rig.register("AW_part", agent="bot", job_type=JobType.PARTICIPANT)
    rig.create("AD_1", agent="bot")
    assert publish(rig, "caller") == []


def test_a_publish_gives_a_publisher_worker_a_job_for_that_participant() -> None:
    rig = Rig()
    rig.register("AW_pub", agent="bot", job_type=JobType.PUBLISHER)
    rig.create("AD_1", agent="bot")
    actions = publish(rig, "caller")
    offer = one(actions, SendAvailabilityRequest).offer  # type: ignore[arg-type]
    assert offer.job_type is JobType.PUBLISHER
    assert offer.participant is not None and offer.participant.identity == "caller"
    assert "dispatch.publisher_job" in kinds(actions)  # type: ignore[arg-type]


def test_a_republish_while_the_job_lives_brings_no_second_agent() -> None:
    rig = Rig()
    rig.register("AW_pub", agent="bot", job_type=JobType.PUBLISHER)
    rig.create("AD_1", agent="bot")
    _, job_id = rig.offered(publish(rig, "caller"))  # type: ignore[arg-type]
    assert publish(rig, "caller") == []
    rig.answer("AW_pub", job_id)
    rig.report("AW_pub", job_id, ReportedJobStatus.SUCCESS)
    assert rig.offered(publish(rig, "caller"))[0] == "AW_pub"  # type: ignore[arg-type]


def test_participant_and_publisher_jobs_are_counted_apart() -> None:
    rig = Rig()
    rig.register("AW_part", agent="bot", job_type=JobType.PARTICIPANT)
    rig.register("AW_pub", agent="bot", job_type=JobType.PUBLISHER)
    rig.create("AD_1", agent="bot")
    rig.join("caller")
    assert rig.offered(publish(rig, "caller"))[0] == "AW_pub"  # type: ignore[arg-type]
    types = [j.job_type for j in rig.d.jobs_of_dispatch("AD_1")]
    assert types == [JobType.ROOM, JobType.PARTICIPANT, JobType.PUBLISHER]
