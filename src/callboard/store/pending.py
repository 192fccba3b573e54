"""Records the event loop submitted back to back, written by the store's writer in one go.

Why this exists: a dispatch produces about ten small records (room, dispatch versions, job states,
event-log lines) within a few milliseconds. Written one statement each, the writer pays SQLite's
per-statement overhead for every row, and re-encodes a dispatch's whole explain trace each
time it is saved. Gathered here instead, each table gets one multi-row statement per batch (a few,
for a big one: `codec.rows_sql`), bound in one call and run by SQLite in one step, and a dispatch
saved several times before the writer got to it is written once, as its newest version. Jobs keep
every version in order: the job-history triggers must see each state.

Order with the other writes: the store closes the open `Records` whenever it queues any other write
(`RecordSlot.close_any`), so a record submitted after, say, a room deletion is written after it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Final

from callboard.dispatch.model import DispatchRecord, JobRecord, RecordEvent
from callboard.store import codec
from callboard.store.base import USAGE_FIELDS, Room

RoomKey = tuple[str, str]

_ROOM_KEY: Final = ("project_id", "name")
_USAGE_COLUMNS: Final = ("project_id", "owner", "day", *USAGE_FIELDS)
_USAGE_ADD: Final = " ON CONFLICT (project_id, owner, day) DO UPDATE SET " + ", ".join(
    f"{f} = {f} + excluded.{f}" for f in USAGE_FIELDS
)


class _Table:
    """One table's statements: many rows at once, and one row (used to find a bad row)."""

    def __init__(
        self,
        table: str,
        columns: tuple[str, ...],
        tail: str,
        label: Callable[[codec.Values], str],
    ) -> None:
        self._table, self._columns, self._tail = table, columns, tail
        self.label = label
        self.one = codec.insert_sql(table, columns) + tail
        self._many: dict[int, str] = {}

    def _sql(self, rows: int) -> str:
        sql = self._many.get(rows)
        if sql is None:
            sql = self._many[rows] = codec.rows_sql(self._table, self._columns, rows, self._tail)
        return sql

    def write(self, conn: sqlite3.Connection, rows: list[codec.Values]) -> None:
        """All rows in order, a few statements (any failure raises: the writer process then
        retries the records alone, row by row: `one_by_one`)."""
        start = 0
        for size in _chunks(len(rows)):
            chunk = rows[start:start + size]
            conn.execute(self._sql(size), [value for row in chunk for value in row])
            start += size

    def one_by_one(self, conn: sqlite3.Connection, rows: list[codec.Values]) -> list[str]:
        """Each row under its own savepoint; what failed, as "<label> failed: <error>" (the rest
        is kept)."""
        failures = []
        for row in rows:
            conn.execute("SAVEPOINT one_record")
            try:
                conn.execute(self.one, row)
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK TO one_record")
                failures.append(f"{self.label(row)} failed: {exc!r}")
            conn.execute("RELEASE one_record")
        return failures


class _RoomDeletes(_Table):
    """Rooms deleted (their rows are `(project_id, name)`): few, so one statement per row."""

    def __init__(self) -> None:
        super().__init__("rooms", _ROOM_KEY, "", lambda key: f"room {key[1]!r}")
        self.one = "DELETE FROM rooms WHERE project_id = ? AND name = ?"

    def write(self, conn: sqlite3.Connection, rows: list[codec.Values]) -> None:
        conn.executemany(self.one, rows)


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
_ROOM_DELETES: Final = _RoomDeletes()
_ROOMS: Final = _Table(
    "rooms", codec.ROOM_COLUMNS, codec.on_conflict(codec.ROOM_COLUMNS, _ROOM_KEY),
    lambda row: f"room {row[1]!r}",
)
_DISPATCHES: Final = _Table(
    "dispatches", codec.DISPATCH_COLUMNS,
    codec.on_conflict(codec.DISPATCH_COLUMNS, ("dispatch_id",)), lambda row: f"dispatch {row[0]}",
)
_JOBS: Final = _Table(
    "jobs", codec.JOB_COLUMNS, codec.on_conflict(codec.JOB_COLUMNS, ("job_id",)),
    lambda row: f"job {row[0]}",
)
_EVENTS: Final = _Table(
    "events", codec.EVENT_COLUMNS, "",
    lambda row: f"event {row[1]} (project {row[0]}, job {row[7] or '-'})",
)
_USAGE: Final = _Table(
    "usage_daily", _USAGE_COLUMNS, _USAGE_ADD,
    lambda row: f"usage {row[0]}/{row[1] or '-'}/{row[2]}",
)
TABLES: Final[dict[str, _Table]] = {
    "gone": _ROOM_DELETES, "rooms": _ROOMS, "dispatches": _DISPATCHES, "jobs": _JOBS,
    "events": _EVENTS, "usage": _USAGE,
}


class RecordSlot:
    """The open `Records` that submissions add to, if any. Submissions and the writer hold `lock`
    while they look at it (the writer runs on the store's loop; a submission may not)."""

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
    """Rooms and dispatches by key (newest wins), jobs and events in submission order, usage
    added up per (project, owner, day)."""

    __slots__ = ("_slot", "count", "dispatches", "events", "jobs", "rooms", "usage")

    def __init__(self, slot: RecordSlot) -> None:
        self._slot = slot
        self.rooms: dict[RoomKey, Room | None] = {}  # None: deleted
        self.dispatches: dict[str, DispatchRecord] = {}
        self.jobs: list[JobRecord] = []
        self.events: list[RecordEvent] = []
        self.usage: dict[tuple[str, str, str], list[int]] = {}
        self.count = 0  # records submitted, coalesced ones included

    def add_usage(self, key: tuple[str, str, str], amounts: list[int]) -> None:
        total = self.usage.get(key)
        if total is None:
            self.usage[key] = list(amounts)
        else:
            for i, amount in enumerate(amounts):
                total[i] += amount

    def seal(self) -> None:
        """No more submissions into this one (the writer is about to take it)."""
        self._slot.close(self)

    def absorb(self, later: Records) -> None:
        self.rooms.update(later.rooms)
        self.dispatches.update(later.dispatches)
        self.jobs.extend(later.jobs)
        self.events.extend(later.events)
        for key, amounts in later.usage.items():
            self.add_usage(key, amounts)
        self.count += later.count

    def rows_again(self) -> tuple[Records | None, int]:
        """What of these records can be written a second time without harm, should their batch
        have been lost with its writer process (committed or not, nobody knows): rooms and
        dispatches (whole upserts) and each job's newest version (its history trigger fires only
        on a change of state, so a version that did commit adds nothing; one that did not loses
        the states before it from the history). Also how many event lines and usage counts are
        left out: written twice, they would count twice."""
        newest = {job.job_id: job for job in self.jobs}
        left_out = len(self.events) + len(self.usage)
        if not (self.rooms or self.dispatches or newest):
            return None, left_out
        again = Records(self._slot)  # never the open one: nothing more is added to it
        again.rooms = dict(self.rooms)
        again.dispatches = dict(self.dispatches)
        again.jobs = list(newest.values())
        again.count = len(again.rooms) + len(again.dispatches) + len(again.jobs)
        return again, left_out

    def encode(self) -> list[tuple[str, list[codec.Values]]]:
        """The rows to write, by table (`TABLES`), in the order they are written."""
        self.seal()
        out: list[tuple[str, list[codec.Values]]] = []
        gone = [key for key, room in self.rooms.items() if room is None]
        if gone:
            out.append(("gone", list(gone)))
        rooms = [codec.room_row(room) for room in self.rooms.values() if room is not None]
        if rooms:
            out.append(("rooms", rooms))
        if self.dispatches:
            out.append(("dispatches", [codec.dispatch_row(d) for d in self.dispatches.values()]))
        if self.jobs:
            out.append(("jobs", [codec.job_row(j) for j in self.jobs]))
        if self.events:
            out.append(("events", [codec.event_row(e) for e in self.events]))
        if self.usage:
            out.append(("usage", [(*key, *amounts) for key, amounts in self.usage.items()]))
        return out
