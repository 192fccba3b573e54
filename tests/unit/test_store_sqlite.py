"""SqliteStore on real SQLite files: records, scoping, keys, restart, migrations, group commit."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
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
    trace_line,
)
from callboard.store import child, schema
from callboard.store import sqlite as sqlite_store
from callboard.store.base import EventQuery, Room
from callboard.store.sqlite import SqliteStore

# --------------------------------------------------------------------------------------------------
# Helpers


def job(
    job_id: str = "AJ_1",
    state: JobState = JobState.PENDING,
    at_ms: int = 1_000,
    project_id: str = "P_a",
    **overrides: object,
) -> JobRecord:
    fields: dict[str, object] = dict(
        job_id=job_id, dispatch_id="AD_1", project_id=project_id, owner="alice",
        room_name="room-1", agent_name="agent", attempt=1, state=state, worker_id="",
        error="", created_at_ms=1_000, updated_at_ms=at_ms,
    )
    fields.update(overrides)
    return JobRecord(**fields)  # type: ignore[arg-type]


def dispatch(
    dispatch_id: str = "AD_1", project_id: str = "P_a", room: str = "room-1", deleted: bool = False
) -> DispatchRecord:
    spec = DispatchSpec(
        dispatch_id=dispatch_id, project_id=project_id, owner="alice", api_key="APIalice",
        agent_name="agent", room=RoomRef(project_id, room, "RM_room1"), metadata='{"x": 1}',
        namespace="ns", job_type=JobType.PUBLISHER, source="api", created_at_ms=500,
    )
    trace = (
        trace_line(500, "created", {"by": "APIalice"}),
        trace_line(510, "candidates", {"workers": ["AW_1", "AW_2"], "count": 2}),
    )
    return DispatchRecord(spec=spec, deleted=deleted, trace_lines=trace, job_ids=("AJ_1", "AJ_2"))


def event(
    kind: str = "job.assigned", project_id: str = "P_a", at_ms: int = 1_000, **overrides: str
) -> RecordEvent:
    return RecordEvent(project_id=project_id, kind=kind, at_ms=at_ms, message=kind, **overrides)


def room(name: str = "room-1", project_id: str = "P_a") -> Room:
    return Room(
        project_id=project_id, name=name, sid="RM_" + name, created_at_ms=7, creator_key="APIalice",
        owner="alice", metadata="m", empty_timeout_s=30, departure_timeout_s=20,
        max_participants=5, agents=(("agent", "meta"), ("other", "")),
    )


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for the writer thread to reach a point (it runs beside the loop, so we must poll)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "callboard.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(db))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


# --------------------------------------------------------------------------------------------------
# Round trips


async def test_projects_round_trip_and_names_are_unique(store: SqliteStore) -> None:
    a = await store.create_project("alpha")
    b = await store.create_project("beta")
    assert a.project_id.startswith("P_") and len(a.project_id) == 14
    assert store.list_projects() == [a, b]
    assert store.get_project("alpha") == a
    assert store.get_project(b.project_id) == b
    assert store.get_project("nope") is None
    with pytest.raises(ValueError, match="project 'alpha' already exists"):
        await store.create_project("alpha")


async def test_keys_round_trip(store: SqliteStore) -> None:
    p = await store.create_project("dev")
    dev = await store.add_key(p.project_id, key="devkey", secret="secret")
    alice = await store.add_key(p.project_id, developer="alice")
    assert (dev.key, dev.secret, dev.kind) == ("devkey", "secret", "production")
    assert alice.key.startswith("API") and len(alice.key) == 15 and len(alice.secret) == 43
    assert alice.kind == "developer"
    assert store.list_keys(p.project_id) == [dev, alice]
    assert store.list_keys() == [dev, alice]
    assert store.get_key("devkey") == dev
    with pytest.raises(ValueError, match="API key 'devkey' already exists"):
        await store.add_key(p.project_id, key="devkey", secret="other")
    with pytest.raises(ValueError, match="does not exist"):
        await store.add_key("P_missing")


async def test_rooms_round_trip(store: SqliteStore) -> None:
    r1, r2 = room("room-1"), room("room-2")
    await store.save_room(r1)
    await store.save_room(r2)
    await store.save_room(room("room-1", project_id="P_b"))
    assert store.get_room("P_a", "room-1") == r1
    assert store.list_rooms("P_a") == [r1, r2]
    assert store.list_rooms("P_a", names=["room-2", "ghost"]) == [r2]
    assert store.list_rooms("P_a", names=[]) == []
    updated = Room("P_a", "room-1", "RM_new", 8, metadata="changed")
    await store.save_room(updated)
    assert store.get_room("P_a", "room-1") == updated
    await store.delete_room("P_a", "room-1")
    assert store.get_room("P_a", "room-1") is None
    assert store.get_room("P_b", "room-1") is not None


async def test_dispatches_round_trip(store: SqliteStore) -> None:
    record = dispatch()
    store.submit_dispatch(record)
    store.submit_dispatch(dispatch("AD_2", room="room-2", deleted=True))
    await store.flush()
    assert store.get_dispatch("P_a", "AD_1") == record
    assert store.get_dispatch("P_other", "AD_1") is None
    assert store.list_dispatches("P_a") == [record]
    assert [d.spec.dispatch_id for d in store.list_dispatches("P_a", include_deleted=True)] == [
        "AD_1", "AD_2",
    ]
    assert store.list_dispatches("P_a", room_name="room-2") == []


async def test_jobs_round_trip(store: SqliteStore) -> None:
    record = job(state=JobState.RUNNING, worker_id="AW_1", participant_identity="agent-AJ_1",
                 error="", attempt=2)
    store.submit_job(record)
    await store.flush()
    assert store.get_job("P_a", "AJ_1") == record
    assert store.get_job("P_b", "AJ_1") is None


async def test_events_round_trip(store: SqliteStore) -> None:
    e = event(level="warning", room_name="r", dispatch_id="AD_1", job_id="AJ_1", worker_id="AW_1",
              agent_name="agent", owner="alice")
    store.submit_event(e)
    await store.flush()
    [stored] = store.query_events(EventQuery(project_id="P_a"))
    assert stored.seq >= 1
    assert (stored.kind, stored.level, stored.room_name, stored.dispatch_id, stored.job_id,
            stored.worker_id, stored.agent_name, stored.owner, stored.at_ms, stored.message) == (
        e.kind, "warning", "r", "AD_1", "AJ_1", "AW_1", "agent", "alice", e.at_ms, e.message,
    )


# --------------------------------------------------------------------------------------------------
# Job history, live state, events


async def test_job_history_only_on_state_changes(store: SqliteStore) -> None:
    store.submit_job(job(state=JobState.PENDING, at_ms=1))
    store.submit_job(job(state=JobState.PENDING, at_ms=2, error="still waiting"))
    store.submit_job(job(state=JobState.OFFERED, at_ms=3))
    store.submit_job(job(state=JobState.ASSIGNED, at_ms=4, worker_id="AW_1"))
    store.submit_job(job(state=JobState.ASSIGNED, at_ms=5, worker_id="AW_1"))
    store.submit_job(job(state=JobState.RUNNING, at_ms=6, worker_id="AW_1"))
    await store.flush()
    assert store.job_history("P_a", "AJ_1") == [
        ("pending", 1), ("offered", 3), ("assigned", 4), ("running", 6),
    ]
    assert store.job_history("P_other", "AJ_1") == []


async def test_live_state_skips_terminal_jobs_and_deleted_dispatches(store: SqliteStore) -> None:
    store.submit_dispatch(dispatch("AD_1"))
    store.submit_dispatch(dispatch("AD_2", deleted=True))
    store.submit_dispatch(dispatch("AD_3", project_id="P_b"))
    for n, state in enumerate(JobState):
        store.submit_job(job(f"AJ_{n}", state, project_id="P_a" if n % 2 else "P_b"))
    await store.flush()
    dispatches, jobs = store.live_state()
    assert {d.spec.dispatch_id for d in dispatches} == {"AD_1", "AD_3"}
    assert {j.state for j in jobs} == {s for s in JobState if not s.is_terminal}


async def test_query_events_filters(store: SqliteStore) -> None:
    store.submit_event(event("dispatch.created", dispatch_id="AD_1", room_name="r1"))
    store.submit_event(event("job.assigned", job_id="AJ_1", room_name="r1", agent_name="a"))
    store.submit_event(event("job.Ended", job_id="AJ_2", room_name="r2", agent_name="b"))
    store.submit_event(event("worker.connected", worker_id="AW_1"))
    store.submit_event(event("job.assigned", project_id="P_b", job_id="AJ_1", room_name="r1"))
    await store.flush()

    def kinds(**filters: object) -> list[str]:
        query = EventQuery(project_id="P_a", **filters)  # type: ignore[arg-type]
        return [e.kind for e in store.query_events(query)]

    assert kinds() == ["dispatch.created", "job.assigned", "job.Ended", "worker.connected"]
    assert kinds(room_name="r1") == ["dispatch.created", "job.assigned"]
    assert kinds(job_id="AJ_1") == ["job.assigned"]
    assert kinds(dispatch_id="AD_1") == ["dispatch.created"]
    assert kinds(agent_name="b") == ["job.Ended"]
    assert kinds(kinds=("job.",)) == ["job.assigned", "job.Ended"]
    assert kinds(kinds=("JOB.",)) == []  # prefixes are case-sensitive
    assert kinds(kinds=("dispatch.", "worker.")) == ["dispatch.created", "worker.connected"]
    assert kinds(limit=2) == ["dispatch.created", "job.assigned"]
    first_two = store.query_events(EventQuery(project_id="P_a", limit=2))
    assert kinds(after_seq=first_two[-1].seq) == ["job.Ended", "worker.connected"]


async def test_query_events_limit_is_capped(store: SqliteStore) -> None:
    for n in range(1_005):
        store.submit_event(event(at_ms=n))
    await store.flush()
    page = store.query_events(EventQuery(project_id="P_a", limit=5_000))
    assert len(page) == 1_000
    assert [e.seq for e in page] == sorted(e.seq for e in page)


async def test_sweep_deletes_old_events_only(store: SqliteStore) -> None:
    for at_ms in (10, 20, 30, 40):
        store.submit_event(event(at_ms=at_ms))
    await store.flush()
    assert await store.sweep(events_before_ms=30) == 2
    assert [e.at_ms for e in store.query_events(EventQuery(project_id="P_a"))] == [30, 40]


async def test_sweep_walks_the_log_in_order_of_arrival(store: SqliteStore) -> None:
    """Lines are old up to the first one that stays: one stamped earlier than a line before it
    (the clock stepped back) waits for a later sweep."""
    for at_ms in (10, 20, 40, 15, 50):
        store.submit_event(event(at_ms=at_ms))
    await store.flush()
    assert await store.sweep(events_before_ms=30) == 2
    assert [e.at_ms for e in store.query_events(EventQuery(project_id="P_a"))] == [40, 15, 50]
    assert await store.sweep(events_before_ms=45) == 2
    assert await store.sweep(events_before_ms=100) == 1  # all old: the whole log goes
    assert store.query_events(EventQuery(project_id="P_a")) == []
    store.submit_event(event(at_ms=200))
    await store.flush()
    assert [e.at_ms for e in store.query_events(EventQuery(project_id="P_a"))] == [200]


def test_log_lookups_use_their_indexes(db: Path) -> None:
    """The event log is paged by project, room or job; none of these may scan the table."""
    conn = sqlite3.connect(db)
    try:
        schema.migrate(conn)
        for column in ("room_name", "job_id", None):
            query = EventQuery(project_id="P_a", **({column: "x"} if column else {}))
            sql, params = sqlite_store._event_query_sql(query)
            plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
            index = {"room_name": "events_room", "job_id": "events_job"}.get(column or "", "")
            assert plan.startswith("SEARCH events USING INDEX " + (index or "events_project"))
    finally:
        conn.close()


async def test_reads_work_from_other_threads(store: SqliteStore) -> None:
    p = await store.create_project("threads")
    await store.add_key(p.project_id, key="k1", secret="s1")
    assert await asyncio.to_thread(store.list_projects) == [p]
    found = await asyncio.to_thread(store.get_key, "k1")
    assert found is not None and found.secret == "s1"


# --------------------------------------------------------------------------------------------------
# Scoping and keys


async def fill_project(store: SqliteStore, name: str) -> str:
    p = await store.create_project(name)
    pid = p.project_id
    await store.add_key(pid, key=f"key-{name}", secret="s")
    await store.save_room(room(project_id=pid))
    store.submit_dispatch(dispatch(f"AD_{name}", project_id=pid))
    store.submit_job(job(f"AJ_{name}", project_id=pid, dispatch_id=f"AD_{name}"))
    store.submit_event(event(project_id=pid, job_id=f"AJ_{name}"))
    await store.flush()
    return pid


async def test_delete_project_cascades_and_spares_others(store: SqliteStore, db: Path) -> None:
    doomed = await fill_project(store, "doomed")
    kept = await fill_project(store, "kept")
    await store.delete_project(doomed)

    assert store.get_project("doomed") is None
    assert store.get_key("key-doomed") is None
    assert store.list_keys(doomed, include_revoked=True) == []
    assert store.list_rooms(doomed) == []
    assert store.list_dispatches(doomed, include_deleted=True) == []
    assert store.get_job(doomed, "AJ_doomed") is None
    assert store.query_events(EventQuery(project_id=doomed)) == []
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM job_history WHERE job_id = 'AJ_doomed'"
                            ).fetchone() == (0,)
    conn.close()

    assert store.get_project("kept") is not None
    assert store.get_key("key-kept") is not None
    assert len(store.list_rooms(kept)) == 1
    assert len(store.list_dispatches(kept)) == 1
    assert store.job_history(kept, "AJ_kept") == [("pending", 1_000)]
    assert len(store.query_events(EventQuery(project_id=kept))) == 1


async def test_revoke_is_immediate_and_survives_reopen(store: SqliteStore, db: Path) -> None:
    p = await store.create_project("p")
    k = await store.add_key(p.project_id, developer="bob")
    assert store.get_key(k.key) == k
    revoking = asyncio.ensure_future(store.revoke_key(k.key))
    await asyncio.sleep(0)  # the revoke has started, its commit is still on the way
    assert store.get_key(k.key) is None
    revoked = await revoking
    assert revoked is not None and revoked.revoked
    assert store.get_key(k.key) is None
    assert store.list_keys(p.project_id) == []
    assert store.list_keys(p.project_id, include_revoked=True) == [revoked]
    assert await store.revoke_key("APInothere") is None

    await store.close()
    await store.open()
    assert store.get_key(k.key) is None


async def test_add_then_revoke_in_flight_keeps_the_key_revoked(store: SqliteStore) -> None:
    p = await store.create_project("p")
    adding = asyncio.ensure_future(store.add_key(p.project_id, key="racy", secret="s"))
    await asyncio.sleep(0)
    revoked = await store.revoke_key("racy")
    await adding
    assert revoked is not None and revoked.revoked
    assert store.get_key("racy") is None


# --------------------------------------------------------------------------------------------------
# Restart and migrations


async def test_reopen_keeps_everything(db: Path) -> None:
    first = SqliteStore(str(db))
    await first.open()
    pid = await fill_project(first, "p")
    store_job = job("AJ_x", JobState.RUNNING, project_id=pid, worker_id="AW_1")
    first.submit_job(store_job)
    await first.close()

    second = SqliteStore(str(db))
    await second.open()
    try:
        assert second.get_project("p") is not None
        assert second.get_key("key-p") is not None
        assert second.get_room(pid, "room-1") == room(project_id=pid)
        assert second.get_dispatch(pid, "AD_p") == dispatch("AD_p", project_id=pid)
        assert second.get_job(pid, "AJ_x") == store_job
        _, live = second.live_state()
        assert store_job in live
        assert len(second.query_events(EventQuery(project_id=pid))) == 1
    finally:
        await second.close()


def user_version(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return schema.user_version(conn)
    finally:
        conn.close()


async def test_empty_file_is_migrated(db: Path) -> None:
    db.write_bytes(b"")
    s = SqliteStore(str(db))
    await s.open()
    await s.create_project("p")
    await s.close()
    assert user_version(db) == schema.LATEST


async def test_older_schema_is_migrated_with_its_data(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    assert schema.migrate(conn, schema.MIGRATIONS[:1]) == 1
    conn.execute("INSERT INTO projects VALUES ('P_old', 'old', 1)")
    conn.execute("INSERT INTO api_keys VALUES ('devkey', 'secret', 'P_old', '', 1, 0)")
    conn.close()

    s = SqliteStore(str(db))
    await s.open()
    try:
        assert user_version(db) == schema.LATEST
        assert s.get_project("old") is not None
        found = s.get_key("devkey")
        assert found is not None and found.project_id == "P_old"
        s.submit_job(job(project_id="P_old"))
        await s.flush()
        assert s.job_history("P_old", "AJ_1") == [("pending", 1_000)]
    finally:
        await s.close()


async def test_a_version_4_log_keeps_its_lines_and_lookups(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    assert schema.migrate(conn, schema.MIGRATIONS[:4]) == 4
    insert = "INSERT INTO events (project_id, kind, at_ms, level, message, job_id) VALUES " \
        "('P_a', ?, ?, 'info', '', ?)"
    conn.executemany(insert, [("dispatch.created", 1, ""), ("job.assigned", 2, "AJ_1"),
                              ("job.running", 3, "AJ_1"), ("job.assigned", 4, "AJ_2")])
    conn.close()

    s = SqliteStore(str(db))
    await s.open()
    try:
        assert user_version(db) == schema.LATEST
        assert [e.kind for e in s.query_events(EventQuery(project_id="P_a", job_id="AJ_1"))] == [
            "job.assigned", "job.running"
        ]
        assert len(s.query_events(EventQuery(project_id="P_a"))) == 4
    finally:
        await s.close()


async def test_newer_schema_is_refused(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
    conn.close()
    s = SqliteStore(str(db))
    with pytest.raises(schema.SchemaVersionError, match="newer than this callboard supports"):
        await s.open()
    with pytest.raises(RuntimeError, match="not open"):
        await s.create_project("p")
    assert user_version(db) == schema.LATEST + 1


def test_failed_migration_leaves_the_previous_version(db: Path) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x INTEGER)")
        raise RuntimeError("boom")

    conn = sqlite3.connect(db, isolation_level=None)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            schema.migrate(conn, [*schema.MIGRATIONS[:1], broken])
        assert schema.user_version(conn) == 1
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "half" not in tables and "projects" in tables
    finally:
        conn.close()


def test_memory_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="needs a file path"):
        SqliteStore(":memory:")


# --------------------------------------------------------------------------------------------------
# The writer: group commit, failures, ordering, close, crash


async def test_group_commit_of_many_submits(store: SqliteStore) -> None:
    n = 5_000
    started = time.perf_counter()
    for i in range(n):
        store.submit_job(job(f"AJ_{i}", JobState.PENDING, at_ms=i))
        store.submit_event(event(job_id=f"AJ_{i}", at_ms=i))
    await store.flush()
    elapsed = time.perf_counter() - started
    stats = store.stats
    print(f"\n{2 * n} writes in {elapsed:.3f}s ({2 * n / elapsed:,.0f} ops/s): "
          f"{stats.commits} commits, {stats.batches} batches, {stats.ops} ops")
    assert stats.ops == 2 * n and stats.failed_ops == 0
    assert stats.commits < stats.ops
    _, jobs = store.live_state()
    assert len(jobs) == n
    events = store.query_events(EventQuery(project_id="P_a", job_id=f"AJ_{n - 1}"))
    assert [e.at_ms for e in events] == [n - 1]


async def test_throughput_of_job_writes(store: SqliteStore) -> None:
    """Not an assertion on time: prints submit+flush throughput for 10k job upserts."""
    n = 10_000
    started = time.perf_counter()
    for i in range(n):
        store.submit_job(job(f"AJ_{i % 2_000}", list(JobState)[i % 4], at_ms=i))
    await store.flush()
    elapsed = time.perf_counter() - started
    print(f"\n{n} job writes: {n / elapsed:,.0f} ops/s, {store.stats.commits} commits")
    assert store.stats.ops == n


async def test_bad_op_fails_only_its_own_future(
    store: SqliteStore, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await store.create_project("taken")
    # Another connection holds the write lock, so the writer stalls on a first op and everything
    # queued meanwhile lands in one batch.
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        batches = store.stats.batches
        store.submit_event(event("first"))
        await until(lambda: store.stats.batches == batches + 1)
        good_a = asyncio.ensure_future(store.create_project("a"))
        bad = asyncio.ensure_future(store.create_project("taken"))
        good_b = asyncio.ensure_future(store.create_project("b"))
        store.submit_event(RecordEvent(None, "bad", 1, "no project"))  # type: ignore[arg-type]
        store.submit_event(event("after"))  # joins the bad event's op: records go together
        await until(lambda: store.queued == 4)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    with caplog.at_level(logging.WARNING, logger="callboard.store.sqlite"):
        # The submits shared the batch, so they are committed once these futures resolve.
        results = await asyncio.gather(good_a, bad, good_b, return_exceptions=True)
    assert isinstance(results[1], ValueError) and "already exists" in str(results[1])
    assert store.get_project("a") is not None and store.get_project("b") is not None
    assert store.stats.batches == batches + 2 and store.stats.retried_batches == 1
    assert store.stats.failed_ops == 2
    kinds = [e.kind for e in store.query_events(EventQuery(project_id="P_a"))]
    assert kinds == ["first", "after"]
    assert "event bad" in caplog.text and "NOT NULL" in caplog.text


async def test_a_locked_file_fails_the_batch_not_the_store(db: Path) -> None:
    s = SqliteStore(str(db), busy_timeout_ms=50)
    await s.open()
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # e.g. an offline `admin --db` holding the write lock
        s.submit_event(event("lost"))
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await s.create_project("p")
        blocker.execute("ROLLBACK")
        await s.create_project("p")
        assert s.stats.retried_batches == 0
        assert s.get_project("p") is not None
        assert s.query_events(EventQuery(project_id="P_a")) == []
    finally:
        blocker.close()
        await s.close()


async def test_concurrent_tasks_keep_order_per_job(store: SqliteStore) -> None:
    path = [JobState.PENDING, JobState.OFFERED, JobState.ASSIGNED, JobState.RUNNING,
            JobState.SUCCESS]

    async def walk(job_id: str) -> None:
        for step, state in enumerate(path):
            store.submit_job(job(job_id, state, at_ms=step))
            if step % 2:
                await store.save_room(room(job_id))  # an awaited write between submits
            else:
                await asyncio.sleep(0)

    await asyncio.gather(*(walk(f"AJ_{n}") for n in range(50)))
    await store.flush()
    for n in range(50):
        assert store.job_history("P_a", f"AJ_{n}") == [
            (state.value, step) for step, state in enumerate(path)
        ]
        found = store.get_job("P_a", f"AJ_{n}")
        assert found is not None and found.state is JobState.SUCCESS


async def test_close_flushes_pending_submits(db: Path) -> None:
    s = SqliteStore(str(db))
    await s.open()
    for i in range(1_000):
        s.submit_event(event(at_ms=i))
    await s.close()
    with pytest.raises(RuntimeError, match="not open"):
        s.submit_event(event())

    await s.open()
    try:
        assert len(s.query_events(EventQuery(project_id="P_a", limit=1_000))) == 1_000
    finally:
        await s.close()


CRASHING_WRITER = textwrap.dedent("""
    import asyncio, os, sys
    from callboard.dispatch.model import JobRecord, JobState, RecordEvent
    from callboard.store.sqlite import SqliteStore

    async def main() -> None:
        store = SqliteStore(sys.argv[1])
        await store.open()
        project = await store.create_project("survivor")
        await store.add_key(project.project_id, key="devkey", secret="secret")
        for i in range(500):
            store.submit_job(JobRecord(f"AJ_{i}", "AD_1", project.project_id, "", "room", "agent",
                                       1, JobState.RUNNING, "AW_1", "", 1, 2))
            store.submit_event(RecordEvent(project.project_id, "job.running", i, "running"))
        await store.flush()
        print("flushed", store._writer._proc.pid, flush=True)
        os._exit(0)  # no close(): as if the process were killed

    asyncio.run(main())
""")


async def test_data_survives_a_kill_after_flush(db: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(db)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    word, writer_pid = done.stdout.split()
    assert word == "flushed"
    # The writer process sees its stdin close and ends by itself.
    await until(lambda: not Path(f"/proc/{writer_pid}").exists(), timeout_s=10)

    s = SqliteStore(str(db))
    await s.open()
    try:
        project = s.get_project("survivor")
        assert project is not None
        assert s.get_key("devkey") is not None
        _, jobs = s.live_state()
        assert len(jobs) == 500
        events = s.query_events(EventQuery(project_id=project.project_id, limit=1_000))
        assert len(events) == 500
    finally:
        await s.close()


async def test_the_writer_process_outlives_signals_until_the_store_closes(db: Path) -> None:
    s = SqliteStore(str(db))
    await s.open()
    writer = s._writer
    assert writer is not None
    proc = writer._proc
    try:
        os.kill(proc.pid, signal.SIGTERM)  # e.g. sent to the whole process group at shutdown
        os.kill(proc.pid, signal.SIGINT)
        await asyncio.sleep(0.2)
        s.submit_event(event("after the signals"))
        await s.flush()
        assert [e.kind for e in s.query_events(EventQuery(project_id="P_a"))] == [
            "after the signals"
        ]
    finally:
        await s.close()
    assert proc.poll() == 0


async def test_the_writer_process_does_not_preempt_the_server_when_a_batch_wakes_it(
    store: SqliteStore,
) -> None:
    writer = store._writer
    assert writer is not None
    assert os.sched_getscheduler(writer._proc.pid) == os.SCHED_BATCH
    assert os.sched_getscheduler(0) != os.SCHED_BATCH  # the server itself keeps its policy


async def test_the_writer_process_starts_the_wal_writeback_after_its_commits(
    store: SqliteStore, db: Path
) -> None:
    store.submit_event(event("first"))
    await store.flush()
    writer = store._writer
    assert writer is not None
    fds = Path(f"/proc/{writer._proc.pid}/fd")
    assert Path(f"{db}-wal").resolve() in {fd.resolve() for fd in fds.iterdir()}


def _pages_written() -> int:
    """Pages the kernel has written to storage so far, machine-wide."""
    for line in Path("/proc/vmstat").read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == "nr_written":
            return int(value)
    raise AssertionError("no nr_written in /proc/vmstat")


def _on_tmpfs(path: Path) -> bool:
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    best = max((m for m in mounts if str(path).startswith(m[1])), key=lambda m: len(m[1]))
    return best[2] == "tmpfs"


async def test_writeback_starts_writing_dirty_pages_at_once(tmp_path: Path) -> None:
    """Dirty pages wait ~30 s for the kernel's own writeback (vm.dirty_expire_centisecs) unless
    something starts it: 32 MiB written without fsync must reach the disk within seconds."""
    if _on_tmpfs(tmp_path):
        pytest.skip("tmpfs pages are never written back")
    path = tmp_path / "file-wal"
    size = 32 << 20
    path.write_bytes(b"\x01" * size)
    before = _pages_written()
    writeback = child.Writeback(str(path))
    try:
        writeback.start()
        await until(lambda: _pages_written() - before >= size // 4096 // 2, timeout_s=10)
    finally:
        writeback.close()


def test_writeback_of_a_file_not_there_yet_waits_for_it(tmp_path: Path) -> None:
    path = tmp_path / "file-wal"
    writeback = child.Writeback(str(path))
    writeback.start()  # SQLite has not created the WAL yet: nothing to do, no error
    path.write_bytes(b"x")
    writeback.start()
    assert writeback._fd is not None
    writeback.close()


async def test_a_writer_process_that_dies_young_fails_writes_instead_of_hanging_them(
    store: SqliteStore, db: Path
) -> None:
    writer = store._writer
    assert writer is not None
    store.submit_event(event("before"))
    await store.flush()
    os.kill(writer._proc.pid, signal.SIGKILL)  # seconds after it started: not replaced
    with pytest.raises(RuntimeError, match=r"store writer process exited.*not replaced"):
        await asyncio.wait_for(store.create_project("after"), timeout=10)
    with pytest.raises(RuntimeError, match="store writer process exited"):
        await asyncio.wait_for(store.flush(), timeout=10)  # and so does every later write
    assert "it had been up less than 10 s" in store.failure
    assert store.stats.restarts == 0
    assert file_rows(db, "SELECT kind FROM events") == [("before",)]


async def test_a_writer_process_that_dies_is_replaced_and_only_its_batch_fails(
    store: SqliteStore,
    db: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sqlite_store, "RESTART_AFTER_S", 0.0)
    writer = store._writer
    assert writer is not None
    store.submit_event(event("before"))
    await store.flush()
    dead = writer._proc
    # Another connection holds the write lock: the writer stalls inside the next batch.
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    batches = store.stats.batches
    in_flight = asyncio.ensure_future(store.create_project("in flight"))
    await until(lambda: store.stats.batches == batches + 1)
    with caplog.at_level(logging.ERROR, logger="callboard.store.sqlite"):
        os.kill(dead.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="store writer process exited"):
            await asyncio.wait_for(in_flight, timeout=10)
    blocker.execute("ROLLBACK")
    blocker.close()
    store.submit_event(event("while replaced"))  # queued while the new process starts
    project = await asyncio.wait_for(store.create_project("after"), timeout=20)
    assert store.stats.restarts == 1 and writer._proc is not dead and store.failure == ""
    assert "starting a new writer process" in caplog.text
    assert file_rows(db, "SELECT kind FROM events ORDER BY seq") == [
        ("before",), ("while replaced",)
    ]
    names = [name for (name,) in file_rows(db, "SELECT name FROM projects")]
    assert project.name in names and "in flight" not in names


async def test_a_lost_batch_writes_its_rows_again_but_not_its_event_lines(
    store: SqliteStore,
    db: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nobody awaits submitted records, so nobody would retry them: the rows that can be written
    twice harmlessly go first to the new writer process."""
    monkeypatch.setattr(sqlite_store, "RESTART_AFTER_S", 0.0)
    writer = store._writer
    assert writer is not None
    dead = writer._proc
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the writer stalls inside the batch below
    batches = store.stats.batches
    in_flight = asyncio.ensure_future(store.create_project("in flight"))  # joins the batch below
    store.submit_room(room("room-1"))
    store.submit_dispatch(dispatch("AD_1"))
    store.submit_job(job(state=JobState.ASSIGNED, at_ms=4, worker_id="AW_1"))
    store.submit_job(job(state=JobState.RUNNING, at_ms=6, worker_id="AW_1"))
    store.submit_event(event("lost line"))
    await until(lambda: store.stats.batches == batches + 1)
    assert len(writer._in_flight or []) == 2  # the records and the project, in one batch
    with caplog.at_level(logging.ERROR, logger="callboard.store.sqlite"):
        os.kill(dead.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="store writer process exited"):
            await asyncio.wait_for(in_flight, timeout=10)
    blocker.execute("ROLLBACK")
    blocker.close()
    await asyncio.wait_for(store.flush(), timeout=20)
    assert "its 3 room, dispatch and job rows are written again" in caplog.text
    assert "1 event lines and usage counts in it are lost" in caplog.text
    assert file_rows(db, "SELECT name FROM rooms") == [("room-1",)]
    assert file_rows(db, "SELECT dispatch_id FROM dispatches") == [("AD_1",)]
    assert file_rows(db, "SELECT state, worker_id FROM jobs") == [("running", "AW_1")]
    assert store.job_history("P_a", "AJ_1") == [("running", 6)]  # the states before it are lost
    assert file_rows(db, "SELECT kind FROM events") == []
    assert [name for (name,) in file_rows(db, "SELECT name FROM projects")] == []  # it failed


async def test_the_wal_is_copied_back_while_the_store_is_open(store: SqliteStore,
                                                               db: Path) -> None:
    """The writer leaves checkpoints to its own thread (it would only start one itself at 16,000
    pages, SQLite's default being 1,000): the database file grows soon after a few commits."""
    before = db.stat().st_size
    for n in range(2):
        for k in range(100):
            store.submit_event(event(f"burst {n} " + "x" * 500, room_name=f"room-{k}"))
        await store.flush()
    wal = Path(f"{db}-wal").stat().st_size
    assert wal < 1_000 * 4096  # not yet at any automatic checkpoint
    await until(lambda: db.stat().st_size > before + 100_000, timeout_s=5)
    assert len(store.query_events(EventQuery(project_id="P_a", limit=1_000))) == 200


# --------------------------------------------------------------------------------------------------
# Submitted records: written together, rooms visible before their commit


def file_rows(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Straight from the file, past the store's in-memory view."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def test_a_submitted_room_is_found_before_and_after_its_commit(
    store: SqliteStore, db: Path
) -> None:
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the writer cannot commit yet
        store.submit_room(room("r1"))
        assert file_rows(db, "SELECT name FROM rooms") == []
        assert store.get_room("P_a", "r1") == room("r1")
        assert [r.name for r in store.list_rooms("P_a")] == ["r1"]
        assert store.list_rooms("P_a", ["other"]) == [] and store.list_rooms("P_b") == []
        assert store.get_room("P_b", "r1") is None
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await store.flush()
    assert file_rows(db, "SELECT name FROM rooms") == [("r1",)]
    assert store.get_room("P_a", "r1") == room("r1")


async def test_delete_then_recreate_keeps_the_order(store: SqliteStore, db: Path) -> None:
    store.submit_room(room("r1"))
    deleting = asyncio.ensure_future(store.delete_room("P_a", "r1"))
    await asyncio.sleep(0)  # the delete is queued behind the first save
    assert store.get_room("P_a", "r1") is None
    again = dataclasses.replace(room("r1"), sid="RM_again")
    store.submit_room(again)
    await deleting
    await store.flush()
    assert file_rows(db, "SELECT sid FROM rooms") == [("RM_again",)]


async def test_a_dispatch_saved_many_times_is_written_once_as_its_newest(
    store: SqliteStore, db: Path
) -> None:
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        batches = store.stats.batches
        store.submit_event(event("first"))
        await until(lambda: store.stats.batches == batches + 1)  # the writer waits on the lock
        base = dispatch("AD_1")
        for n in range(3):
            grown = (*base.trace_lines, trace_line(600 + n, f"step {n}", {"n": n}))
            store.submit_dispatch(dataclasses.replace(base, trace_lines=grown))
        ops = store.stats.ops
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await store.flush()
    found = store.get_dispatch("P_a", "AD_1")
    assert found is not None and found.trace[-1].what == "step 2" and len(found.trace) == 3
    assert store.stats.ops == ops + 1 + 3  # the first event, then three submits counted
    assert file_rows(db, "SELECT count(*) FROM dispatches") == [(1,)]


async def test_awkward_text_is_written_exactly(store: SqliteStore) -> None:
    tricky = 'nul\x00inside "quoted" \\ é😀 \u2028 \x01'
    store.submit_room(dataclasses.replace(room("r1"), metadata=tricky))
    spec = dataclasses.replace(dispatch().spec, metadata=tricky)
    store.submit_dispatch(dataclasses.replace(dispatch(), spec=spec))
    store.submit_event(dataclasses.replace(event("x"), message=tricky))
    await store.flush()
    found_room = store.get_room("P_a", "r1")
    found_dispatch = store.get_dispatch("P_a", "AD_1")
    assert found_room is not None and found_room.metadata == tricky
    assert found_dispatch is not None and found_dispatch.spec.metadata == tricky
    assert found_dispatch.trace == dispatch().trace
    assert [e.message for e in store.query_events(EventQuery(project_id="P_a"))] == [tricky]


async def test_a_bad_record_is_logged_and_the_rest_of_its_batch_kept(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="callboard.store.sqlite"):
        store.submit_job(job("AJ_1", JobState.PENDING, at_ms=1))
        store.submit_job(job("AJ_bad", project_id=None))  # type: ignore[arg-type]
        store.submit_job(job("AJ_1", JobState.OFFERED, at_ms=2))
        store.submit_event(event("kept"))
        await store.flush()
    assert store.job_history("P_a", "AJ_1") == [("pending", 1), ("offered", 2)]
    assert [e.kind for e in store.query_events(EventQuery(project_id="P_a"))] == ["kept"]
    assert "job AJ_bad" in caplog.text and "NOT NULL" in caplog.text
    assert store.stats.failed_ops == 1


async def test_the_commit_window_gathers_writes_that_arrive_soon_after(db: Path) -> None:
    s = SqliteStore(str(db), commit_window_s=0.2)
    await s.open()
    try:
        commits = s.stats.commits
        s.submit_event(event("first"))
        await asyncio.sleep(0.02)
        s.submit_job(job())  # inside the window: joins the same commit (two without a window)
        await s.flush()
        assert s.stats.commits == commits + 1
        assert [e.kind for e in s.query_events(EventQuery(project_id="P_a"))] == ["first"]
        assert s.get_job("P_a", "AJ_1") is not None
    finally:
        await s.close()


async def test_commit_soon_ends_the_window_at_once(db: Path) -> None:
    s = SqliteStore(str(db), commit_window_s=30.0)  # never reached within this test's timeout
    await s.open()
    try:
        commits = s.stats.commits
        s.submit_event(event("first"))
        s.submit_job(job())
        flushed = asyncio.ensure_future(s.flush())
        await asyncio.sleep(0.05)
        assert not flushed.done()  # still inside the window
        s.commit_soon()
        await asyncio.wait_for(flushed, 5)
        assert s.stats.commits == commits + 1  # both writes in the one commit
        assert s.get_job("P_a", "AJ_1") is not None
        s.commit_soon()  # nothing queued: a no-op
    finally:
        await s.close()


async def test_after_a_commit_only_awaited_writes_skip_the_window(db: Path) -> None:
    """Writes queued while a batch commits go next at once when someone awaits one of them;
    fire-and-forget ones wait for the window (or `commit_soon`) like writes on an idle writer."""
    s = SqliteStore(str(db), commit_window_s=30.0)
    await s.open()

    try:
        base = s.stats.commits
        s.submit_event(event("first"))
        s.commit_soon()  # in flight now
        s.submit_event(event("unawaited"))  # queued behind it, nobody waits
        await until(lambda: s.stats.commits >= base + 1)
        await asyncio.sleep(0.1)
        assert s.stats.commits == base + 1  # the unawaited write waits for company
        s.submit_event(event("awaited"))
        s.commit_soon()
        await until(lambda: s.stats.commits >= base + 2)
        s.submit_event(event("then"))
        s.commit_soon()  # in flight again
        flushed = asyncio.ensure_future(s.flush())  # queued behind it, awaited
        await asyncio.wait_for(flushed, 5)  # no 30 s window
        kinds = [e.kind for e in s.query_events(EventQuery(project_id="P_a"))]
        assert sorted(kinds) == ["awaited", "first", "then", "unawaited"]
    finally:
        await s.close()


async def test_a_commit_s_waiters_resume_before_the_next_batch_is_sent(db: Path) -> None:
    """What the waiters do next (under load: reply to a caller, who then sends more work) goes
    before the event loop encodes the batch that queued behind the commit."""
    s = SqliteStore(str(db), commit_window_s=30.0)
    await s.open()
    seen: list[int] = []

    async def first() -> None:
        await s.flush()
        seen.append(s.stats.batches)

    try:
        s.submit_event(event("first"))
        waiter = asyncio.ensure_future(first())
        await asyncio.sleep(0)  # its flush is queued
        s.commit_soon()
        before = s.stats.batches  # in flight now
        second = asyncio.ensure_future(s.create_project("queued behind"))
        await asyncio.wait_for(asyncio.gather(waiter, second), 5)
        assert seen == [before]  # the next batch had not been sent yet
        assert s.stats.batches == before + 1
    finally:
        await s.close()


async def test_writes_nobody_awaits_wait_for_one_somebody_does(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "LAZY_WINDOW_S", 30.0)  # never reached here
    s = SqliteStore(str(db), commit_window_s=0.001)
    await s.open()
    try:
        base = s.stats.commits
        s.submit_event(event("report"))  # a worker's status report: nobody awaits it
        await asyncio.sleep(0.1)
        assert s.stats.commits == base  # far past the 1 ms window: still waiting for company
        await asyncio.wait_for(s.flush(), 5)  # somebody awaits: the 1 ms window applies
        assert s.stats.commits == base + 1
        assert [e.kind for e in s.query_events(EventQuery(project_id="P_a"))] == ["report"]
    finally:
        await s.close()


async def test_usage_submitted_together_is_added_up(store: SqliteStore) -> None:
    for _ in range(3):
        store.submit_usage("P_a", "", "2026-01-01", dispatches=1, agent_session_ms=200)
    store.submit_usage("P_a", "bob", "2026-01-01", dispatches=5)
    store.submit_usage("P_a", "", "2026-01-02", dispatches=7)
    await store.flush()
    store.submit_usage("P_a", "", "2026-01-01", dispatches=1)
    await store.flush()
    rows = {(r.owner, r.day): r for r in store.query_usage("P_a")}
    assert rows[("", "2026-01-01")].dispatches == 4
    assert rows[("", "2026-01-01")].agent_session_ms == 600
    assert rows[("bob", "2026-01-01")].dispatches == 5
    assert rows[("", "2026-01-02")].dispatches == 7
