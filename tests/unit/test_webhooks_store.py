"""Store additions of schema v3: webhook records, and jobs that keep their type and participant."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callboard.dispatch.model import JobRecord, JobState, JobType, ParticipantRef
from callboard.store import schema
from callboard.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "cb.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def job(**overrides: object) -> JobRecord:
    fields: dict[str, object] = dict(
        job_id="AJ_1", dispatch_id="AD_1", project_id="P_a", owner="", room_name="room-1",
        agent_name="bot", attempt=1, state=JobState.RUNNING, worker_id="AW_1", error="",
        created_at_ms=1_000, updated_at_ms=2_000,
    )
    fields.update(overrides)
    return JobRecord(**fields)  # type: ignore[arg-type]


async def test_webhooks_are_kept_per_project_oldest_first(store: SqliteStore) -> None:
    a = await store.create_project("a")
    b = await store.create_project("b")
    first = await store.add_webhook(a.project_id, "http://h/1", "APIone")
    second = await store.add_webhook(a.project_id, "http://h/2", "APItwo")
    other = await store.add_webhook(b.project_id, "http://h/1", "APIb")
    assert first.webhook_id.startswith("WH_") and first.signing_key == "APIone"
    assert store.list_webhooks(a.project_id) == [first, second]
    assert store.list_webhooks(b.project_id) == [other]
    assert store.list_webhooks() == [first, second, other]


async def test_a_url_is_added_once_per_project(store: SqliteStore) -> None:
    a = await store.create_project("a")
    await store.add_webhook(a.project_id, "http://h/1", "APIone")
    with pytest.raises(ValueError, match="already has a webhook"):
        await store.add_webhook(a.project_id, "http://h/1", "APIone")


async def test_delete_is_scoped_to_the_project(store: SqliteStore) -> None:
    a = await store.create_project("a")
    b = await store.create_project("b")
    hook = await store.add_webhook(a.project_id, "http://h/1", "APIone")
    assert not await store.delete_webhook(b.project_id, hook.webhook_id)
    assert await store.delete_webhook(a.project_id, hook.webhook_id)
    assert not await store.delete_webhook(a.project_id, hook.webhook_id)
    assert store.list_webhooks() == []


async def test_deleting_a_project_deletes_its_webhooks(store: SqliteStore) -> None:
    a = await store.create_project("a")
    await store.add_webhook(a.project_id, "http://h/1", "APIone")
    await store.delete_project(a.project_id)
    assert store.list_webhooks() == []


async def test_a_participant_job_round_trips(store: SqliteStore) -> None:
    who = ParticipantRef("PA_1", "caller", "Caller", "{}", {"k": "v"}, 3, 1_500)
    record = job(job_type=JobType.PARTICIPANT, participant=who)
    store.submit_job(record)
    store.submit_job(job(job_id="AJ_2"))
    await store.flush()
    assert store.get_job("P_a", "AJ_1") == record
    plain = store.get_job("P_a", "AJ_2")
    assert plain is not None and plain.job_type is JobType.ROOM and plain.participant is None
    _, live = store.live_state()
    assert record in live


async def test_a_version_2_file_gains_the_columns_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrate(conn, schema.MIGRATIONS[:2])
    conn.execute(
        "INSERT INTO jobs (job_id, dispatch_id, project_id, owner, room_name, agent_name, attempt,"
        " state, worker_id, error, created_at_ms, updated_at_ms) VALUES"
        " ('AJ_old', 'AD_1', 'P_a', '', 'r', 'bot', 1, 'running', 'AW_1', '', 1, 2)"
    )
    conn.close()
    s = SqliteStore(path)
    await s.open()
    try:
        old = s.get_job("P_a", "AJ_old")
        assert old is not None and old.job_type is JobType.ROOM and old.participant is None
        assert s.list_webhooks() == []
    finally:
        await s.close()
    conn = sqlite3.connect(path)
    assert schema.user_version(conn) == schema.LATEST >= 3
    conn.close()
