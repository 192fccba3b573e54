"""Retention: the store's sweep deletes what is old and never what a restart would resume."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callboard.dispatch.model import (
    DispatchRecord,
    DispatchSpec,
    JobRecord,
    JobState,
    JobType,
    RecordEvent,
    RoomRef,
)
from callboard.server.retention import DAY_MS, cutoffs
from callboard.settings import Settings
from callboard.store import schema
from callboard.store.base import EventQuery, SweepCutoffs
from callboard.store.sqlite import SqliteStore

NOW = 1_767_225_600_000 + 100 * DAY_MS
OLD = NOW - 60 * DAY_MS


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "r.db")
    await s.open()
    yield s
    await s.close()


def job(job_id: str, state: JobState, at_ms: int, dispatch_id: str = "AD_keep") -> JobRecord:
    return JobRecord(job_id=job_id, dispatch_id=dispatch_id, project_id="P_a", owner="",
                     room_name="r", agent_name="a", attempt=1, state=state, worker_id="",
                     error="", created_at_ms=at_ms, updated_at_ms=at_ms)


def dispatch(dispatch_id: str, deleted: bool, at_ms: int) -> DispatchRecord:
    spec = DispatchSpec(dispatch_id=dispatch_id, project_id="P_a", owner="", api_key="k",
                        agent_name="a", room=RoomRef("P_a", "r", "RM_1"), metadata="",
                        namespace="", job_type=JobType.ROOM, source="api", created_at_ms=at_ms)
    return DispatchRecord(spec=spec, deleted=deleted, trace_lines=(), job_ids=())


def test_cutoffs_follow_the_settings_and_zero_keeps_forever() -> None:
    got = cutoffs(Settings(retention_events_days=1, retention_jobs_days=0), NOW)
    assert got.events_before_ms == NOW - DAY_MS and got.jobs_before_ms == 0
    assert got.dispatches_before_ms == NOW - 30 * DAY_MS and got.usage_before_day


async def test_sweep_keeps_the_live_and_the_recent(store: SqliteStore) -> None:
    for at in (OLD, NOW):
        store.submit_event(RecordEvent(project_id="P_a", kind="x", at_ms=at, message=str(at)))
    store.submit_job(job("AJ_old_done", JobState.SUCCESS, OLD))
    store.submit_job(job("AJ_old_running", JobState.RUNNING, OLD))
    store.submit_job(job("AJ_new_done", JobState.SUCCESS, NOW))
    store.submit_dispatch(dispatch("AD_old_deleted", True, OLD))
    store.submit_job(job("AJ_of_deleted", JobState.RUNNING, OLD, "AD_old_deleted"))
    store.submit_dispatch(dispatch("AD_old_live", False, OLD))
    store.submit_usage("P_a", "", "2020-01-01", dispatches=1)
    store.submit_usage("P_a", "", "2026-04-01", dispatches=1)
    await store.flush()
    cut = NOW - 30 * DAY_MS
    done = await store.sweep_old(SweepCutoffs(events_before_ms=cut, jobs_before_ms=cut,
                                              dispatches_before_ms=cut,
                                              usage_before_day="2025-01-01"))
    assert done == {"events": 1, "dispatches": 1, "jobs": 1, "usage": 1}
    assert [e.message for e in store.query_events(EventQuery("P_a"))] == [str(NOW)]
    assert store.get_job("P_a", "AJ_old_done") is None
    assert store.get_job("P_a", "AJ_old_done") is None and store.job_history("P_a",
                                                                              "AJ_old_done") == []
    assert store.get_job("P_a", "AJ_old_running") is not None  # a restart resumes it
    assert store.get_job("P_a", "AJ_new_done") is not None
    assert store.get_job("P_a", "AJ_of_deleted") is None
    assert store.get_dispatch("P_a", "AD_old_deleted") is None
    assert store.get_dispatch("P_a", "AD_old_live") is not None
    assert [r.day for r in store.query_usage("P_a")] == ["2026-04-01"]
    assert await store.sweep_old(SweepCutoffs()) == {}


async def test_delete_project_removes_usage_and_hosts(store: SqliteStore) -> None:
    project = await store.create_project("p")
    store.submit_usage(project.project_id, "", "2026-01-01", dispatches=1)
    await store.set_project_hosts(project.project_id, "production", ["10.0.0.1"])
    await store.set_project_hosts(project.project_id, "laptop", ["10.0.0.9"])
    assert store.project_hosts(project.project_id) == {"10.0.0.1": "production",
                                                       "10.0.0.9": "laptop"}
    await store.set_project_hosts(project.project_id, "production", [])
    assert store.project_hosts(project.project_id) == {"10.0.0.9": "laptop"}
    await store.delete_project(project.project_id)
    assert store.query_usage(project.project_id) == []
    assert store.project_hosts(project.project_id) == {}


def test_migration_4_upgrades_a_version_3_file(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "v3.db", isolation_level=None)
    assert schema.migrate(conn, schema.MIGRATIONS[:3]) == 3
    conn.execute("INSERT INTO projects VALUES ('P_a', 'a', 1)")
    assert schema.migrate(conn) == schema.LATEST >= 4
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"usage_daily", "project_hosts"} <= tables
    conn.close()


def test_settings_know_the_new_fields() -> None:
    s = dataclasses.replace(Settings(), retention_rooms_days=0)
    assert s.retention_rooms_days == 0 and Settings().enable_recording
