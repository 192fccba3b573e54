"""The SQLite schema as an ordered list of migrations, and the code that brings a file up to date.

The file's schema version is `PRAGMA user_version`: 0 for a new (or empty) file, N once the first
N migrations ran. Each migration runs in its own transaction together with the version bump, so a
crash mid-upgrade leaves the file at the previous version, never half-migrated. Migrations are
append-only: once released, one is never edited; a change is a new migration at the end. A file
written by a newer callboard (version above `LATEST`) is refused rather than guessed at.

Scoping: every table carries `project_id` except `job_history`, which hangs off `jobs` by foreign
key. Only `api_keys` (and `job_history`) cascade by foreign key; the rest is deleted explicitly by
`delete_project`, so that dispatch records never fail to save because a project row is missing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Final

from callboard.protocol.errors import CallboardError

Migration = Callable[[sqlite3.Connection], None]


class SchemaVersionError(CallboardError):
    """The database file was written by a newer callboard than this one."""


def _run(conn: sqlite3.Connection, statements: Sequence[str]) -> None:
    # Not executescript(): it commits first, which would split the migration from its version bump.
    for statement in statements:
        conn.execute(statement)


def _v1_admin_plane(conn: sqlite3.Connection) -> None:
    """Projects, their API keys, and rooms."""
    _run(conn, [
        """CREATE TABLE projects (
            project_id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at_ms INTEGER NOT NULL
        )""",
        """CREATE TABLE api_keys (
            key TEXT PRIMARY KEY,
            secret TEXT NOT NULL,
            project_id TEXT NOT NULL REFERENCES projects(project_id) ON DELETE CASCADE,
            developer TEXT NOT NULL DEFAULT '',
            created_at_ms INTEGER NOT NULL,
            revoked INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX api_keys_project ON api_keys(project_id)",
        """CREATE TABLE rooms (
            project_id TEXT NOT NULL,
            name TEXT NOT NULL,
            sid TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL,
            creator_key TEXT NOT NULL DEFAULT '',
            owner TEXT NOT NULL DEFAULT '',
            metadata TEXT NOT NULL DEFAULT '',
            empty_timeout_s INTEGER NOT NULL DEFAULT 0,
            departure_timeout_s INTEGER NOT NULL DEFAULT 0,
            max_participants INTEGER NOT NULL DEFAULT 0,
            agents TEXT NOT NULL DEFAULT '[]',
            PRIMARY KEY (project_id, name)
        )""",
    ])


def _v2_dispatch_records(conn: sqlite3.Connection) -> None:
    """Dispatches, jobs with their state history, and the event log."""
    _run(conn, [
        """CREATE TABLE dispatches (
            dispatch_id TEXT PRIMARY KEY,
            project_id TEXT NOT NULL,
            room_name TEXT NOT NULL,
            room_sid TEXT NOT NULL DEFAULT '',
            agent_name TEXT NOT NULL,
            owner TEXT NOT NULL,
            api_key TEXT NOT NULL,
            namespace TEXT NOT NULL,
            job_type INTEGER NOT NULL,
            metadata TEXT NOT NULL,
            source TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0,
            trace TEXT NOT NULL DEFAULT '[]',
            job_ids TEXT NOT NULL DEFAULT '[]'
        )""",
        "CREATE INDEX dispatches_room ON dispatches(project_id, room_name)",
        """CREATE TABLE jobs (
            job_id TEXT PRIMARY KEY,
            dispatch_id TEXT NOT NULL,
            project_id TEXT NOT NULL,
            owner TEXT NOT NULL,
            room_name TEXT NOT NULL,
            agent_name TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            state TEXT NOT NULL,
            worker_id TEXT NOT NULL,
            error TEXT NOT NULL,
            participant_identity TEXT NOT NULL DEFAULT '',
            created_at_ms INTEGER NOT NULL,
            updated_at_ms INTEGER NOT NULL
        )""",
        "CREATE INDEX jobs_state ON jobs(state)",
        "CREATE INDEX jobs_project ON jobs(project_id)",
        """CREATE TABLE job_history (
            job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
            state TEXT NOT NULL,
            at_ms INTEGER NOT NULL
        )""",
        "CREATE INDEX job_history_job ON job_history(job_id)",
        # Triggers, not application code, so the history cannot drift from the jobs table whatever
        # writes it (the store, or a future offline repair tool).
        """CREATE TRIGGER jobs_history_insert AFTER INSERT ON jobs BEGIN
            INSERT INTO job_history (job_id, state, at_ms)
            VALUES (new.job_id, new.state, new.updated_at_ms);
        END""",
        """CREATE TRIGGER jobs_history_update AFTER UPDATE OF state ON jobs
            WHEN new.state IS NOT old.state BEGIN
            INSERT INTO job_history (job_id, state, at_ms)
            VALUES (new.job_id, new.state, new.updated_at_ms);
        END""",
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            project_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            at_ms INTEGER NOT NULL,
            level TEXT NOT NULL,
            message TEXT NOT NULL,
            room_name TEXT NOT NULL DEFAULT '',
            dispatch_id TEXT NOT NULL DEFAULT '',
            job_id TEXT NOT NULL DEFAULT '',
            worker_id TEXT NOT NULL DEFAULT '',
            agent_name TEXT NOT NULL DEFAULT '',
            owner TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX events_project ON events(project_id, seq)",
        "CREATE INDEX events_room ON events(project_id, room_name, seq)",
        "CREATE INDEX events_job ON events(project_id, job_id)",
        "CREATE INDEX events_at ON events(at_ms)",
    ])


def _v3_participant_jobs_and_webhooks(conn: sqlite3.Connection) -> None:
    """A job's type and participant (JT_PARTICIPANT jobs), and each project's webhook URLs."""
    _run(conn, [
        "ALTER TABLE jobs ADD COLUMN job_type INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN participant TEXT NOT NULL DEFAULT ''",
        """CREATE TABLE webhooks (
            webhook_id TEXT PRIMARY KEY,
            project_id TEXT NOT NULL,
            url TEXT NOT NULL,
            signing_key TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL,
            UNIQUE (project_id, url)
        )""",
    ])


def _v4_usage_and_hosts(conn: sqlite3.Connection) -> None:
    """Usage per project, developer and UTC day; hosts a project marked as production."""
    _run(conn, [
        """CREATE TABLE usage_daily (
            project_id TEXT NOT NULL,
            owner TEXT NOT NULL,
            day TEXT NOT NULL,
            dispatches INTEGER NOT NULL DEFAULT 0,
            agent_sessions INTEGER NOT NULL DEFAULT 0,
            agent_session_ms INTEGER NOT NULL DEFAULT 0,
            participant_sessions INTEGER NOT NULL DEFAULT 0,
            participant_ms INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (project_id, owner, day)
        )""",
        """CREATE TABLE project_hosts (
            project_id TEXT NOT NULL,
            host TEXT NOT NULL,
            role TEXT NOT NULL,
            PRIMARY KEY (project_id, host)
        )""",
        "CREATE INDEX jobs_updated ON jobs(updated_at_ms)",
        "CREATE INDEX dispatches_created ON dispatches(created_at_ms)",
    ])


def _v5_lighter_event_indexes(conn: sqlite3.Connection) -> None:
    """Two fewer index entries per event line, of about five per dispatch: under load the writer
    process spent a third of its time on them (bench/dispatch.py: 125 -> 88 us per dispatch).
    Retention finds old lines through `seq`, which follows time (`sqlite._delete_events_before`),
    and lines without a job have no entry in the job index, which only lookups by job id use."""
    _run(conn, [
        "DROP INDEX events_at",
        "DROP INDEX events_job",
        "CREATE INDEX events_job ON events(project_id, job_id) WHERE job_id != ''",
    ])


MIGRATIONS: Final[tuple[Migration, ...]] = (
    _v1_admin_plane,
    _v2_dispatch_records,
    _v3_participant_jobs_and_webhooks,
    _v4_usage_and_hosts,
    _v5_lighter_event_indexes,
)
LATEST: Final = len(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply the migrations the file has not seen yet; return the version it is now at.

    `conn` must be in autocommit mode (isolation_level=None): each step is its own transaction.
    """
    current = user_version(conn)
    if current > len(migrations):
        raise SchemaVersionError(
            f"database schema version {current} is newer than this callboard supports "
            f"({len(migrations)}): upgrade callboard, or point --db at another file"
        )
    for version in range(current + 1, len(migrations) + 1):
        _apply(conn, migrations[version - 1], version)
    return len(migrations)


def _apply(conn: sqlite3.Connection, migration: Migration, version: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        migration(conn)
        conn.execute(f"PRAGMA user_version = {int(version)}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
