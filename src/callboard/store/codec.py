"""Records <-> SQLite rows, in one place so the column order is written down exactly once.

Each table has a column tuple, a `*_row` function producing the values in that order, and a
`*_from_row` function reading a `sqlite3.Row` back. Nested values (a dispatch's trace and job ids, a
room's agents) are JSON text: they are only ever read whole, never queried into.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, Final

from callboard.dispatch.model import (
    DispatchRecord,
    DispatchSpec,
    JobRecord,
    JobState,
    JobType,
    ParticipantRef,
    RecordEvent,
    RoomRef,
    trace_line,
)
from callboard.store.base import ApiKey, Project, Room, StoredEvent, Webhook

Values = tuple[Any, ...]

PROJECT_COLUMNS: Final = ("project_id", "name", "created_at_ms")
KEY_COLUMNS: Final = ("key", "secret", "project_id", "developer", "created_at_ms", "revoked")
ROOM_COLUMNS: Final = (
    "project_id", "name", "sid", "created_at_ms", "creator_key", "owner", "metadata",
    "empty_timeout_s", "departure_timeout_s", "max_participants", "agents",
)
DISPATCH_COLUMNS: Final = (
    "dispatch_id", "project_id", "room_name", "room_sid", "agent_name", "owner", "api_key",
    "namespace", "job_type", "metadata", "source", "created_at_ms", "deleted", "trace", "job_ids",
)
JOB_COLUMNS: Final = (
    "job_id", "dispatch_id", "project_id", "owner", "room_name", "agent_name", "attempt", "state",
    "worker_id", "error", "participant_identity", "created_at_ms", "updated_at_ms", "job_type",
    "participant",
)
WEBHOOK_COLUMNS: Final = ("webhook_id", "project_id", "url", "signing_key", "created_at_ms")
EVENT_COLUMNS: Final = (
    "project_id", "kind", "at_ms", "level", "message", "room_name", "dispatch_id", "job_id",
    "worker_id", "agent_name", "owner",
)


# default=str: a trace detail that is not JSON-native is diagnostic text, not worth a lost save.
# Built once: json.dumps with any option builds a new encoder per call, ~2 us of a few per row.
_dumps: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), default=str).encode


def project_from_row(row: sqlite3.Row) -> Project:
    return Project(
        project_id=row["project_id"], name=row["name"], created_at_ms=row["created_at_ms"]
    )


def key_row(key: ApiKey) -> Values:
    return (key.key, key.secret, key.project_id, key.developer, key.created_at_ms, int(key.revoked))


def key_from_row(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        key=row["key"], secret=row["secret"], project_id=row["project_id"],
        developer=row["developer"], created_at_ms=row["created_at_ms"],
        revoked=bool(row["revoked"]),
    )


def room_row(room: Room) -> Values:
    return (
        room.project_id, room.name, room.sid, room.created_at_ms, room.creator_key, room.owner,
        room.metadata, room.empty_timeout_s, room.departure_timeout_s, room.max_participants,
        _dumps([list(agent) for agent in room.agents]),
    )


def room_from_row(row: sqlite3.Row) -> Room:
    agents = tuple((str(name), str(meta)) for name, meta in json.loads(row["agents"]))
    return Room(
        project_id=row["project_id"], name=row["name"], sid=row["sid"],
        created_at_ms=row["created_at_ms"], creator_key=row["creator_key"], owner=row["owner"],
        metadata=row["metadata"], empty_timeout_s=row["empty_timeout_s"],
        departure_timeout_s=row["departure_timeout_s"], max_participants=row["max_participants"],
        agents=agents,
    )


def dispatch_row(record: DispatchRecord) -> Values:
    spec = record.spec
    trace = "[" + ",".join(record.trace_lines) + "]"
    return (
        spec.dispatch_id, spec.project_id, spec.room.name, spec.room.sid, spec.agent_name,
        spec.owner, spec.api_key, spec.namespace, int(spec.job_type), spec.metadata, spec.source,
        spec.created_at_ms, int(record.deleted), trace, _dumps(list(record.job_ids)),
    )


def dispatch_from_row(row: sqlite3.Row) -> DispatchRecord:
    spec = DispatchSpec(
        dispatch_id=row["dispatch_id"], project_id=row["project_id"], owner=row["owner"],
        api_key=row["api_key"], agent_name=row["agent_name"],
        room=RoomRef(project_id=row["project_id"], name=row["room_name"], sid=row["room_sid"]),
        metadata=row["metadata"], namespace=row["namespace"], job_type=JobType(row["job_type"]),
        source=row["source"], created_at_ms=row["created_at_ms"],
    )
    trace = tuple(
        trace_line(at_ms, what, detail) for at_ms, what, detail in json.loads(row["trace"])
    )
    job_ids = tuple(str(job_id) for job_id in json.loads(row["job_ids"]))
    return DispatchRecord(spec=spec, deleted=bool(row["deleted"]), trace_lines=trace,
                          job_ids=job_ids)


def job_row(job: JobRecord) -> Values:
    return (
        job.job_id, job.dispatch_id, job.project_id, job.owner, job.room_name, job.agent_name,
        job.attempt, job.state.value, job.worker_id, job.error, job.participant_identity,
        job.created_at_ms, job.updated_at_ms, int(job.job_type), _participant_text(job.participant),
    )


def _participant_text(ref: ParticipantRef | None) -> str:
    if ref is None:
        return ""
    return _dumps({
        "sid": ref.sid, "identity": ref.identity, "name": ref.name, "metadata": ref.metadata,
        "attributes": dict(ref.attributes), "kind": ref.kind, "joined_at_ms": ref.joined_at_ms,
    })


def _participant_from_text(text: str) -> ParticipantRef | None:
    if not text:
        return None
    raw = json.loads(text)
    return ParticipantRef(
        sid=raw["sid"], identity=raw["identity"], name=raw.get("name", ""),
        metadata=raw.get("metadata", ""), attributes=dict(raw.get("attributes", {})),
        kind=int(raw.get("kind", 0)), joined_at_ms=int(raw.get("joined_at_ms", 0)),
    )


def job_from_row(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        job_id=row["job_id"], dispatch_id=row["dispatch_id"], project_id=row["project_id"],
        owner=row["owner"], room_name=row["room_name"], agent_name=row["agent_name"],
        attempt=row["attempt"], state=JobState(row["state"]), worker_id=row["worker_id"],
        error=row["error"], created_at_ms=row["created_at_ms"],
        updated_at_ms=row["updated_at_ms"], participant_identity=row["participant_identity"],
        job_type=JobType(row["job_type"]), participant=_participant_from_text(row["participant"]),
    )


def webhook_row(hook: Webhook) -> Values:
    return (hook.webhook_id, hook.project_id, hook.url, hook.signing_key, hook.created_at_ms)


def webhook_from_row(row: sqlite3.Row) -> Webhook:
    return Webhook(
        webhook_id=row["webhook_id"], project_id=row["project_id"], url=row["url"],
        signing_key=row["signing_key"], created_at_ms=row["created_at_ms"],
    )


def event_row(event: RecordEvent) -> Values:
    return (
        event.project_id, event.kind, event.at_ms, event.level, event.message, event.room_name,
        event.dispatch_id, event.job_id, event.worker_id, event.agent_name, event.owner,
    )


def event_from_row(row: sqlite3.Row) -> StoredEvent:
    return StoredEvent(
        seq=row["seq"], project_id=row["project_id"], kind=row["kind"], at_ms=row["at_ms"],
        level=row["level"], message=row["message"], room_name=row["room_name"],
        dispatch_id=row["dispatch_id"], job_id=row["job_id"], worker_id=row["worker_id"],
        agent_name=row["agent_name"], owner=row["owner"],
    )


def rows_sql(table: str, columns: tuple[str, ...], rows: int, tail: str = "") -> str:
    """One INSERT of `rows` rows (`tail`: an ON CONFLICT clause): a whole batch is bound in one
    call and run in one step instead of one statement per row."""
    values = ", ".join(["(" + ", ".join("?" * len(columns)) + ")"] * rows)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}{tail}"


def on_conflict(columns: tuple[str, ...], key: tuple[str, ...]) -> str:
    updates = ", ".join(f"{col} = excluded.{col}" for col in columns if col not in key)
    return f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"


def insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def upsert_sql(table: str, columns: tuple[str, ...], key: tuple[str, ...]) -> str:
    """INSERT … ON CONFLICT DO UPDATE (not INSERT OR REPLACE, which deletes the row and so would
    fire the job-history insert trigger for an unchanged state)."""
    return insert_sql(table, columns) + on_conflict(columns, key)
