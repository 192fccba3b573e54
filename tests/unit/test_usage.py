"""Usage metering on a real SqliteStore: dispatches, agent sessions, participant minutes by day."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from livekit.protocol import models

from callboard.dispatch.model import JobRecord, JobState, RecordEvent, SaveJob
from callboard.protocol.errors import InvalidArgument
from callboard.rooms.contract import ParticipantView, RoomView
from callboard.server.usage import UsageMeter, day_of, parse_since, totals
from callboard.store.sqlite import SqliteStore

DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "u.db")
    await s.open()
    yield s
    await s.close()


def job(state: JobState, at_ms: int, owner: str = "jack", job_id: str = "AJ_1",
        worker: str = "AW_1") -> SaveJob:
    return SaveJob(JobRecord(job_id=job_id, dispatch_id="AD_1", project_id="P_a", owner=owner,
                             room_name="r", agent_name="a", attempt=1, state=state,
                             worker_id=worker, error="", created_at_ms=T0, updated_at_ms=at_ms))


def created(owner: str, at_ms: int, project: str = "P_a") -> RecordEvent:
    return RecordEvent(project_id=project, kind="dispatch.created", at_ms=at_ms, message="",
                       owner=owner, dispatch_id="AD_x")


def test_day_of_and_since() -> None:
    assert day_of(T0) == "2026-01-01" and day_of(T0 - 1) == "2025-12-31"
    assert parse_since("2026-01-05", T0) == "2026-01-05"
    assert parse_since("1d", T0) == "2026-01-01"
    assert parse_since("7d", T0) == "2025-12-26"
    assert parse_since(None, T0) == day_of(T0 - 29 * DAY)
    with pytest.raises(InvalidArgument):
        parse_since("yesterday", T0)


async def test_dispatches_and_agent_sessions_by_owner_and_day(store: SqliteStore) -> None:
    meter = UsageMeter(store)
    meter([created("jack", T0), created("jack", T0 + DAY), created("", T0),
           created("jack", T0, project="P_other")])
    meter([job(JobState.PENDING, T0)])
    meter([job(JobState.ASSIGNED, T0 + 1000)])
    meter([job(JobState.RUNNING, T0 + 2000)])
    meter([job(JobState.SUCCESS, T0 + 61_000)])
    meter([job(JobState.EXPIRED, T0 + 5000, job_id="AJ_never", worker="")])  # never assigned
    await store.flush()
    rows = store.query_usage("P_a")
    by = {(r.owner, r.day): r for r in rows}
    assert by[("jack", "2026-01-01")].dispatches == 1
    assert by[("jack", "2026-01-02")].dispatches == 1
    assert by[("", "2026-01-01")].dispatches == 1
    jack = by[("jack", "2026-01-01")]
    assert (jack.agent_sessions, jack.agent_session_ms) == (1, 60_000)
    summed = totals(rows)
    assert summed["jack"]["dispatches"] == 2 and summed["jack"]["agent_session_minutes"] == 1.0
    assert summed["production"]["agent_sessions"] == 0
    assert store.query_usage("P_a", "2026-01-02")[0].day == "2026-01-02"
    assert [r.owner for r in store.query_usage("P_other")] == ["jack"]


async def test_after_a_restart_the_assignment_time_comes_from_the_store(
    store: SqliteStore
) -> None:
    store.submit_job(job(JobState.ASSIGNED, T0).record)
    store.submit_job(job(JobState.RUNNING, T0 + 10).record)
    await store.flush()
    UsageMeter(store)([job(JobState.FAILED, T0 + 30_000)])  # a fresh meter knows nothing
    await store.flush()
    (row,) = store.query_usage("P_a")
    assert (row.agent_sessions, row.agent_session_ms) == (1, 30_000)


async def test_participant_minutes_count_people_not_agents(store: SqliteStore) -> None:
    meter = UsageMeter(store)
    room = RoomView(project_id="P_a", name="r", sid="RM_1", created_at_ms=T0)

    def person(kind: int, owner: str) -> ParticipantView:
        return ParticipantView(sid="PA_1", identity="p", name="", kind=kind, metadata="",
                               attributes={}, joined_at_ms=T0, api_key="k", owner=owner)

    meter.participant_left(room, person(models.ParticipantInfo.Kind.STANDARD, "jill"), T0 + 90_000)
    meter.participant_left(room, person(models.ParticipantInfo.Kind.AGENT, "jill"), T0 + 90_000)
    await store.flush()
    (row,) = store.query_usage("P_a")
    assert (row.owner, row.participant_sessions, row.participant_ms) == ("jill", 1, 90_000)


async def test_unknown_usage_fields_are_refused(store: SqliteStore) -> None:
    with pytest.raises(ValueError):
        store.submit_usage("P_a", "", "2026-01-01", minutes=3)


async def test_a_job_saved_again_after_its_end_counts_once(store: SqliteStore) -> None:
    meter = UsageMeter(store)
    meter([job(JobState.ASSIGNED, T0)])
    meter([job(JobState.SUCCESS, T0 + 1000)])
    meter([job(JobState.SUCCESS, T0 + 2000)])
    await store.flush()
    (row,) = store.query_usage("P_a")
    assert (row.agent_sessions, row.agent_session_ms) == (1, 1000)


async def test_a_resumed_job_keeps_its_first_assignment_time(store: SqliteStore) -> None:
    store.submit_job(job(JobState.ASSIGNED, T0).record)
    await store.flush()
    meter = UsageMeter(store)  # after a restart the job comes back orphaned, then runs again
    meter([job(JobState.ORPHANED, T0 + 50_000)])
    meter([job(JobState.SUCCESS, T0 + 60_000)])
    await store.flush()
    (row,) = store.query_usage("P_a")
    assert row.agent_session_ms == 60_000
