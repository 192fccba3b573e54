"""Records the event loop submitted back to back, written by the store's writer in one go.

Why this exists: a dispatch produces about ten small records (room, dispatch versions, job states,
event-log lines) within a few milliseconds. Written one statement each, the writer thread takes the
GIL back from the event loop for every row, and re-encodes a dispatch's whole explain trace each
time it is saved. Gathered here instead, each table gets one multi-row statement per batch (a few,
for a big one: `codec.rows_sql`), bound in one call and run by SQLite in one step, and a dispatch
saved several times before the writer got to it is written once, as its newest version. Jobs keep
every version in order: the job-history triggers must see each state.

Order with the other writes: the store closes the open `Records` whenever it queues any other write
(`RecordSlot.close_any`), so a record submitted after, say, a room deletion is written after it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Final

from callboard.dispatch.model import DispatchRecord, JobRecord, RecordEvent
from callboard.store import codec
from callboard.store.base import USAGE_FIELDS, Room

log = logging.getLogger("callboard.store.sqlite")

RoomKey = tuple[str, str]

_ROOM_KEY: Final = ("project_id", "name")
_USAGE_COLUMNS: Final = ("project_id", "owner", "day", *USAGE_FIELDS)
_USAGE_ADD: Final = " ON CONFLICT (project_id, owner, day) DO UPDATE SET " + ", ".join(
    f"{f} = {f} + excluded.{f}" for f in USAGE_FIELDS
)


class _Table:
    """One table's statements: many rows at once, and one row (used to find a bad row)."""

    def __init__(self, table: str, columns: tuple[str, ...], tail: str = "") -> None:
        self._table, self._columns, self._tail = table, columns, tail
        self.one = codec.insert_sql(table, columns) + tail
        self._many: dict[int, str] = {}

    def _sql(self, rows: int) -> str:
        sql = self._many.get(rows)
        if sql is None:
            sql = self._many[rows] = codec.rows_sql(self._table, self._columns, rows, self._tail)
        return sql

    def write(
        self, conn: sqlite3.Connection, rows: list[codec.Values], label: Callable[[int], str]
    ) -> int:
        """Write the rows in order; return how many failed (each logged with its `label(i)`, the
        rest kept). Labels are made only then: the usual batch never needs them."""
        conn.execute("SAVEPOINT batch")
        try:
            start = 0
            for size in _chunks(len(rows)):
                chunk = rows[start:start + size]
                conn.execute(self._sql(size), [value for row in chunk for value in row])
                start += size
        except sqlite3.Error:
            if not conn.in_transaction:  # SQLite gave up the transaction: not one row's fault
                raise
            conn.execute("ROLLBACK TO batch")
            conn.execute("RELEASE batch")
            return self._one_by_one(conn, rows, label)
        conn.execute("RELEASE batch")
        return 0

    def _one_by_one(
        self, conn: sqlite3.Connection, rows: list[codec.Values], label: Callable[[int], str]
    ) -> int:
        failed = 0
        for i, row in enumerate(rows):
            conn.execute("SAVEPOINT one_record")
            try:
                conn.execute(self.one, row)
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK TO one_record")
                log.error("store: writing %s failed: %r", label(i), exc)
                failed += 1
            conn.execute("RELEASE one_record")
        return failed


def _chunks(rows: int) -> Iterator[int]:
    """Statement sizes for `rows` rows: powers of two up to CHUNK_ROWS, so a few cached
    statements serve every batch (and a chunk stays far below SQLite's 32,766 parameters)."""
    size = CHUNK_ROWS
    while rows:
        while size > rows:
            size //= 2
        yield size
        rows -= size


CHUNK_ROWS: Final = 256
_ROOMS: Final = _Table(
    "rooms", codec.ROOM_COLUMNS, codec.on_conflict(codec.ROOM_COLUMNS, _ROOM_KEY)
)
_DISPATCHES: Final = _Table(
    "dispatches", codec.DISPATCH_COLUMNS,
    codec.on_conflict(codec.DISPATCH_COLUMNS, ("dispatch_id",)),
)
_JOBS: Final = _Table("jobs", codec.JOB_COLUMNS, codec.on_conflict(codec.JOB_COLUMNS, ("job_id",)))
_EVENTS: Final = _Table("events", codec.EVENT_COLUMNS)
_USAGE: Final = _Table("usage_daily", _USAGE_COLUMNS, _USAGE_ADD)


class RecordSlot:
    """The open `Records` that submissions add to, if any. Submissions (event loop) and the
    writer (its thread) both hold `lock` while they look at it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: Records | None = None

    def close(self, records: Records) -> None:
        with self.lock:
            if self.open is records:
                self.open = None

    def close_any(self) -> None:
        """Another write is being queued: what is submitted from now on goes behind it."""
        with self.lock:
            self.open = None


class Records:
    """Rooms and dispatches by key (newest wins), jobs, events and usage in submission order."""

    __slots__ = ("_slot", "count", "dispatches", "events", "failed", "jobs", "rooms", "usage")

    def __init__(self, slot: RecordSlot) -> None:
        self._slot = slot
        self.rooms: dict[RoomKey, Room | None] = {}  # None: deleted
        self.dispatches: dict[str, DispatchRecord] = {}
        self.jobs: list[JobRecord] = []
        self.events: list[RecordEvent] = []
        self.usage: list[codec.Values] = []
        self.count = 0  # records submitted, coalesced ones included
        self.failed = 0  # rows that could not be written (set by `write`)

    def seal(self) -> None:
        """No more submissions into this one (the writer is about to take it)."""
        self._slot.close(self)

    def absorb(self, later: Records) -> None:
        self.rooms.update(later.rooms)
        self.dispatches.update(later.dispatches)
        self.jobs.extend(later.jobs)
        self.events.extend(later.events)
        self.usage.extend(later.usage)
        self.count += later.count

    def write(self, conn: sqlite3.Connection) -> None:
        """On the writer thread, inside its transaction."""
        self.seal()
        failed = 0
        gone = [key for key, room in self.rooms.items() if room is None]
        if gone:
            conn.executemany("DELETE FROM rooms WHERE project_id = ? AND name = ?", gone)
        rooms = [room for room in self.rooms.values() if room is not None]
        if rooms:
            rows = [codec.room_row(r) for r in rooms]
            failed += _ROOMS.write(conn, rows, lambda i: f"room {rooms[i].name!r}")
        if self.dispatches:
            ds = list(self.dispatches.values())
            rows = [codec.dispatch_row(d) for d in ds]
            failed += _DISPATCHES.write(conn, rows, lambda i: f"dispatch {ds[i].spec.dispatch_id}")
        if self.jobs:
            jobs = self.jobs
            rows = [codec.job_row(j) for j in jobs]
            failed += _JOBS.write(conn, rows, lambda i: f"job {jobs[i].job_id}")
        if self.events:
            events = self.events
            rows = [codec.event_row(e) for e in events]
            failed += _EVENTS.write(conn, rows, lambda i: _event_label(events[i]))
        if self.usage:
            usage = self.usage
            failed += _USAGE.write(
                conn, usage, lambda i: f"usage {usage[i][0]}/{usage[i][1] or '-'}/{usage[i][2]}"
            )
        self.failed = failed


def _event_label(event: RecordEvent) -> str:
    return f"event {event.kind} (project {event.project_id}, job {event.job_id or '-'})"
