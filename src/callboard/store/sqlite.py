"""The default store: one SQLite file in WAL mode, one writer doing group commit.

Theory of operation:

- Writes. Every write becomes an `_Op` (a picklable function of the writer's connection, or the
  submitted records of `pending`; a label naming the record for logs; and, for `async` methods, an
  asyncio future) put on one FIFO queue. The writer (`_Writer`, on the store's event loop) sends
  what is queued as one batch to the writer process (`child`), which owns the only writing
  connection and applies it in one transaction; SQLite thus never needs this process's GIL. One
  batch is in flight at a time: what is queued meanwhile is the next batch, sent when the reply
  arrives if anyone awaits a write in it. An op queued while nothing is in flight waits
  `commit_window_s` (the server uses 1 ms, so the commit runs after the burst of work that caused
  it instead of competing with it), or less when the caller says the burst is over (`commit_soon`:
  the hub does once an assignment is sent); while nobody awaits any queued op, they wait
  `LAZY_WINDOW_S` for one that somebody does. A batch holds at most `MAX_BATCH_OPS`. On the reply,
  the ops' after-commit hooks run in order, and only then are the batch's futures resolved. N
  writes thus cost one commit, and an awaited write has been committed when it returns. If any op
  of a batch raises, the transaction is rolled back and the batch is re-applied one op per
  transaction (submitted records row by row), so only the bad op or row fails (its future gets the
  exception; a fire-and-forget `submit_*` is logged with its record id).
- Durability. WAL with `synchronous=NORMAL`: a commit is written to the WAL file before the future
  resolves, so it survives the process being killed; the WAL is fsynced at checkpoints, so a power
  cut may lose the last commits (the usual SQLite trade-off; `synchronous=FULL` would fsync every
  batch). Checkpoints run beside the commits, on a thread of the writer process
  (`child.Checkpointer`), not inside them; after each commit the writer only asks the kernel to
  start writing the new WAL pages (`child.Writeback`), so that a checkpoint's fsync stays short.
- Reads. A second connection, shared by threads under a lock, queries synchronously in the caller's
  thread: reads are small, indexed and paged, and a WAL reader never waits for the writer.
- API keys. `get_key` runs on every request, so non-revoked keys live in memory, loaded at open and
  updated by the writer right after the commit that changed them. Revocation (and project deletion)
  also drops keys from memory before the write is queued: a revoked key stops working at once.
- Rooms. Every CreateDispatch looks its room up, and a room name must stay unique while its row is
  still queued, so all rooms live in memory too (loaded at open, changed as they are submitted):
  `get_room` never reads the file, and a room is found the moment it is submitted.
- Records (`pending`): rooms, dispatches, jobs, events and usage submitted back to back are
  written by one op, one statement per table.
- The writer process ignores SIGINT/SIGTERM (the server drains and flushes first) and ends when
  its stdin closes: at `close()`, or when the server dies, after the batch it was applying.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, BinaryIO, Final, TypeVar, cast

from callboard.dispatch.model import DispatchRecord, JobRecord, JobState, RecordEvent
from callboard.protocol import ids
from callboard.store import child, codec, schema
from callboard.store.base import (
    USAGE_FIELDS,
    ApiKey,
    EventQuery,
    Project,
    Room,
    Store,
    StoredEvent,
    SweepCutoffs,
    UsageRow,
    Webhook,
)
from callboard.store.pending import Records, RecordSlot, RoomKey

log = logging.getLogger(__name__)

T = TypeVar("T")
Apply = Callable[[sqlite3.Connection], Any]

MAX_BATCH_OPS: Final = 5000  # bounds one transaction, hence the wait of the batch's first op
# With a commit window, writes nobody awaits wait this long for one somebody does (`_schedule`).
LAZY_WINDOW_S: Final = 0.02
# A writer process that dies is replaced, unless the one before it died this soon after starting:
# then something is wrong with the file or the machine, and writes fail instead of looping.
RESTART_AFTER_S: Final = 10.0
BUSY_TIMEOUT_MS: Final = 5000  # another process (offline `admin --db`) may hold the write lock
EVENT_QUERY_MAX: Final = 1000
_LIVE_STATES: Final = tuple(state.value for state in JobState if not state.is_terminal)
_TERMINAL_STATES: Final = tuple(state.value for state in JobState if state.is_terminal)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class StoreStats:
    """Writer counters for tests and benchmarks: `commits` well below `ops` is group commit."""

    ops: int = 0  # write operations applied (committed or failed), flush barriers excluded
    commits: int = 0  # transactions committed
    batches: int = 0  # batches taken off the queue (counted when taken, before they are applied)
    retried_batches: int = 0  # batches rolled back and re-applied one op per transaction
    restarts: int = 0  # writer processes started to replace one that died
    failed_ops: int = 0


@dataclass(eq=False)
class _Op:
    apply: Apply | None  # None (and no records): a flush barrier, nothing to write
    label: str  # names the record in logs: "job AJ_…"
    future: asyncio.Future[Any] | None = None
    after_commit: Callable[[Any], None] | None = None  # after its commit, in queue order
    records: Records | None = None  # set on the op that writes submitted records


@dataclass(eq=False)
class _Outcome:
    op: _Op
    value: Any = None
    error: Exception | None = None


# --------------------------------------------------------------------------------------------------
# Connections


def connect(
    path: str, busy_timeout_ms: int, *, check_same_thread: bool = True
) -> sqlite3.Connection:
    """Autocommit mode (isolation_level=None): transactions are explicit, BEGIN … COMMIT."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
    except sqlite3.Error as exc:
        raise sqlite3.OperationalError(f"cannot open store {path!r}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return conn


def connect_writer(path: str, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = connect(path, busy_timeout_ms)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"store {path!r} cannot use WAL (journal_mode={mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        schema.migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


class _Reader:
    """The read connection: any thread may use it, one at a time."""

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self._conn = connect(path, busy_timeout_ms, check_same_thread=False)
        self._conn.execute("PRAGMA query_only = ON")
        self._lock = threading.Lock()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# --------------------------------------------------------------------------------------------------
# The writer


class _Writer:
    """Feeds the writer process (`child`) from the event loop, one batch at a time, and settles
    each batch's ops with its outcomes.

    What is queued while a batch is being applied goes out as the next batch once the reply has
    arrived and its waiters have run, if anyone awaits an op in it: group commit paced by the
    commits themselves.
    Otherwise, and while the writer is idle, `_schedule` decides how long the queue waits for
    company. Everything runs on the store's loop: no thread has to win the GIL back from the
    loop between a batch and the next.

    A writer process that dies takes only the batch it was applying with it: that batch's ops
    fail (whether it was committed is unknown), a new process opens the file, and the queue goes
    on to it, after the batch's records that can be written twice (`lost`)."""

    def __init__(self, path: str, busy_timeout_ms: int, window_s: float = 0.0) -> None:
        self.window_s = window_s
        self.lazy_s = max(window_s, LAZY_WINDOW_S) if window_s > 0 else 0.0
        self._send_due = 0.0  # loop time `_send_soon` fires at
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._queue: collections.deque[_Op] = collections.deque()
        self._in_flight: list[_Op] | None = None  # sent, reply awaited
        self._work: list[_Op] = []  # the ops of the batch in flight that the process applies
        self._send_soon: asyncio.Handle | None = None
        self._gone: RuntimeError | None = None  # set once the writer is beyond replacing
        self._stopping = False
        self._restarting: asyncio.Task[None] | None = None  # a new process is being started
        self._started_at = 0.0  # loop time the current process was up
        self._loop: asyncio.AbstractEventLoop
        self._loop_thread = 0
        self._proc: subprocess.Popen[bytes]
        self._pipe: asyncio.WriteTransport
        self._replies: asyncio.ReadTransport
        self.stats = StoreStats()

    async def start(self) -> None:
        """Returns once the file is open and migrated, or raises why it could not be."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self._spawn()

    async def _spawn(self) -> None:
        proc = await asyncio.to_thread(_start_child, self._path, self._busy_timeout_ms)
        pipe: asyncio.WriteTransport | None = None
        try:
            pipe, _ = await self._loop.connect_write_pipe(asyncio.BaseProtocol, proc.stdin)
            self._replies, _ = await self._loop.connect_read_pipe(
                lambda: _Replies(self, proc), proc.stdout
            )
        except BaseException:
            if pipe is not None:
                pipe.close()
            await asyncio.to_thread(_end_child, proc)
            raise
        self._proc, self._pipe = proc, pipe
        self._started_at = self._loop.time()

    async def stop(self) -> None:
        """Everything queued before this call is applied, then the process ends."""
        if not self._stopping and self._gone is None:
            barrier: asyncio.Future[Any] = self._loop.create_future()
            self.put(_Op(None, "close", barrier))
            self.send_now()  # closing is no reason to wait out a commit window
            with contextlib.suppress(Exception):
                await barrier
        self._stopping = True
        self._pipe.close()  # the process sees EOF on its stdin: it closes the file and exits
        await asyncio.to_thread(_reap, self._proc)
        self._replies.close()
        self._fail_all(RuntimeError("store is closed"))

    def put(self, op: _Op) -> None:
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.put, op)
            return
        if self._gone is not None or self._stopping:
            _settle([_Outcome(op, error=self._gone or RuntimeError("store is closed"))])
            return
        self._queue.append(op)
        if self._in_flight is None:
            self._schedule(awaited=op.future is not None)

    def _schedule(self, *, awaited: bool) -> None:
        """Nothing is in flight: the queue goes `window_s` after its first awaited op, to gather
        the ops that usually follow it, or `lazy_s` after its first op when nobody awaits one.
        A write nobody waits for (a worker's status report) thus rides along with the next one
        somebody does instead of starting a commit of its own in the middle of a dispatch."""
        self._send_after(self.window_s if awaited else self.lazy_s)

    def _send_after(self, delay: float) -> None:
        """Send the queue `delay` from now, unless it is due sooner already."""
        due = self._loop.time() + delay
        if self._send_soon is not None:
            if self._send_due <= due:
                return
            self._send_soon.cancel()
        self._send_due = due
        self._send_soon = (
            self._loop.call_later(delay, self._send) if delay > 0
            else self._loop.call_soon(self._send)
        )

    def send_now(self) -> None:
        """End the commit window early: see `SqliteStore.commit_soon`."""
        if self._send_soon is not None:
            self._send_soon.cancel()
            self._send()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _send(self) -> None:
        self._send_soon = None
        if self._in_flight is not None or not self._queue or self._restarting is not None:
            return
        count = min(len(self._queue), MAX_BATCH_OPS)
        batch = [self._queue.popleft() for _ in range(count)]
        self.stats.batches += 1
        self._in_flight = batch
        try:
            _merge_records(batch)
            self._work = [op for op in batch if op.apply is not None or op.records is not None]
            if not self._work:  # flush barriers only: nothing to write, nothing to wait for
                self._finish([])
                return
            items = [
                ("records", op.records.encode()) if op.records is not None else ("call", op.apply)
                for op in self._work
            ]
            self._pipe.write(child.frame(("batch", items)))
        except Exception as exc:  # e.g. an op that cannot be pickled: fail this batch only
            log.exception("store writer failed on a batch of %d ops", len(batch))
            self._in_flight, self._work = None, []
            _settle([_Outcome(op, error=exc) for op in batch])
            self._send()

    def replied(self, message: Any) -> None:
        """The process's answer to the batch in flight."""
        _, results, (commits, retried, failed) = message
        self.stats.commits += commits
        self.stats.retried_batches += retried
        self.stats.failed_ops += failed
        self._finish(self._outcomes(results))

    def _outcomes(self, results: list[child.Result]) -> list[_Outcome]:
        outcomes = []
        for op, (value, error, failures) in zip(self._work, results, strict=True):
            for failure in failures:
                log.error("store: writing %s", failure)
            if error is None:
                self.stats.ops += _op_count(op)
                outcomes.append(_Outcome(op, value))
                continue
            self.stats.ops += 1
            if op.future is None:  # nobody awaits a submit: the log is the only trace
                log.error("store: writing %s failed: %r", op.label, error)
            else:
                log.warning("store: writing %s failed: %r", op.label, error)
            outcomes.append(_Outcome(op, error=error if isinstance(error, Exception) else
                                     RuntimeError(repr(error))))
        return outcomes

    def _finish(self, outcomes: list[_Outcome]) -> None:
        """Settle the batch in flight, in queue order (barriers with it), then send the next."""
        batch, self._in_flight, self._work = self._in_flight or [], None, []
        by_op = {id(o.op): o for o in outcomes}
        ordered = [by_op.get(id(op)) or _Outcome(op) for op in batch]
        _after_commit(ordered)
        _settle(ordered)
        if not self._queue:
            return
        if any(op.future is not None for op in self._queue):
            # Someone has waited through the last commit: no window. Yet after the callbacks
            # that the settled futures scheduled, so the replies go out before the next batch
            # is encoded.
            self._send_after(0.0)
        else:
            self._schedule(awaited=False)

    def lost(self, why: str, proc: subprocess.Popen[bytes]) -> None:
        """The process is gone: the batch it was applying fails, and a new one takes the queue,
        starting with the batch's records that can be written twice (`_rows_again`), since
        nobody awaits them to retry. Unless the last process died young: then everything queued
        fails, and so will later ops."""
        if self._stopping or self._restarting or proc is not self._proc or self._gone is not None:
            return
        error = RuntimeError(f"store writer process exited (code {proc.poll()}): {why}")
        if self._loop.time() - self._started_at < RESTART_AFTER_S:
            self._give_up(error, f"it had been up less than {RESTART_AFTER_S:g} s")
            return
        batch, self._in_flight, self._work = self._in_flight or [], None, []
        again, left_out = _rows_again(batch)
        if again is not None:  # first in line for the new process, before what was queued
            self._queue.appendleft(_Op(None, "records of a lost batch", records=again))
        log.error(
            "store: %s; starting a new writer process. The batch it was writing failed"
            " (%d ops, committed or not): its API calls get an error; its %d room, dispatch"
            " and job rows are written again; %d event lines and usage counts in it are lost",
            error, len(batch), again.count if again is not None else 0, left_out,
        )
        _settle([_Outcome(op, error=error) for op in batch])
        self._restarting = self._loop.create_task(self._restart(error))

    async def _restart(self, error: RuntimeError) -> None:
        old = self._proc
        self._pipe.close()
        self._replies.close()
        try:
            await asyncio.to_thread(_reap, old)
            await self._spawn()
        except Exception as exc:
            self._give_up(error, f"no new writer process: {exc}")
            return
        finally:
            self._restarting = None
        self.stats.restarts += 1
        log.warning("store: new writer process %d is up; writing goes on", self._proc.pid)
        if self._queue:
            self._send_after(0.0)

    def _give_up(self, error: RuntimeError, why: str) -> None:
        self._gone = RuntimeError(f"{error}; not replaced: {why}")
        log.error("store: %s. Every write fails from now on; restart the server.", self._gone)
        self._fail_all(self._gone)

    @property
    def failure(self) -> str:
        """Why writes fail for good ("" while they do not)."""
        return str(self._gone) if self._gone is not None else ""

    def _fail_all(self, error: Exception) -> None:
        failed = [*(self._in_flight or []), *self._queue]
        self._in_flight, self._work = None, []
        self._queue.clear()
        if self._send_soon is not None:
            self._send_soon.cancel()
            self._send_soon = None
        _settle([_Outcome(op, error=error) for op in failed])


class _Replies(asyncio.Protocol):
    """Reads the writer process's stdout: one reply per batch, in order."""

    def __init__(self, writer: _Writer, proc: subprocess.Popen[bytes]) -> None:
        self._writer = writer
        self._proc = proc  # the process whose output this is: a replaced one's end means nothing
        self._frames = child.Frames()

    def data_received(self, data: bytes) -> None:
        for message in self._frames.feed(data):
            self._writer.replied(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._writer.lost(repr(exc) if exc is not None else "its output closed", self._proc)


def _after_commit(outcomes: list[_Outcome]) -> None:
    for outcome in outcomes:
        hook = outcome.op.after_commit
        if hook is None or outcome.error is not None:
            continue
        try:
            hook(outcome.value)
        except Exception:
            log.exception("store: after-commit hook of %s failed", outcome.op.label)


def _start_child(path: str, busy_timeout_ms: int) -> subprocess.Popen[bytes]:
    """Blocking: the writer process, with its file open and migrated."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "callboard.store.child"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True, start_new_session=True,
    )
    stdin, stdout = cast(BinaryIO, proc.stdin), cast(BinaryIO, proc.stdout)
    try:
        child.send(stdin, ("open", path, busy_timeout_ms))
        reply = child.receive(stdout)
    except (OSError, ValueError) as exc:
        _end_child(proc)
        raise RuntimeError(f"store writer process is gone ({exc})") from exc
    if reply is None:
        _end_child(proc)
        raise RuntimeError(f"store writer process exited (code {proc.poll()})")
    if reply[0] == "error":
        _end_child(proc)
        raise reply[1]
    return proc


def _end_child(proc: subprocess.Popen[bytes]) -> None:
    """Blocking: its stdin closes, so it finishes, closes the file and exits."""
    for pipe in (proc.stdin, proc.stdout):
        with contextlib.suppress(OSError):
            if pipe is not None:
                pipe.close()
    _reap(proc)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _op_count(op: _Op) -> int:
    return op.records.count if op.records is not None else 1


def _rows_again(batch: list[_Op]) -> tuple[Records | None, int]:
    """The submitted records of a lost batch that can be written again (`Records.rows_again`),
    and how many could not. Its runs of records are folded together first (they are dead
    anyway), so a job's newest version across them is the one written."""
    runs = [op.records for op in batch if op.records is not None]
    if not runs:
        return None, 0
    head, *later = runs
    for run in later:
        head.absorb(run)
    return head.rows_again()


def _merge_records(batch: list[_Op]) -> None:
    """Fold each run of record ops (flush barriers between them do not break a run) into its
    first op: one statement per table for the run, and a dispatch saved several times in it is
    written once. Any other write ends the run, so the queue's order between records and other
    writes holds."""
    head: _Op | None = None
    for op in batch:
        if op.records is None:
            if op.apply is not None:
                head = None
            continue
        op.records.seal()
        if head is None or head.records is None:
            head = op
            continue
        head.records.absorb(op.records)
        op.records = None  # now a barrier: its futures resolve with the batch


def _settle(outcomes: list[_Outcome]) -> None:
    """On the caller's loop: hand each future its result (unless its caller gave up on it)."""
    for outcome in outcomes:
        future = outcome.op.future
        if future is None or future.done():
            continue
        if outcome.error is not None:
            future.set_exception(outcome.error)
        else:
            future.set_result(outcome.value)


# --------------------------------------------------------------------------------------------------
# Write operations: run in the writer process, inside its transaction.


def _insert_project(conn: sqlite3.Connection, project: Project) -> None:
    if conn.execute("SELECT 1 FROM projects WHERE name = ?", (project.name,)).fetchone():
        raise ValueError(f"project {project.name!r} already exists")
    conn.execute(
        codec.insert_sql("projects", codec.PROJECT_COLUMNS),
        (project.project_id, project.name, project.created_at_ms),
    )


def _delete_project(conn: sqlite3.Connection, project_id: str) -> None:
    # jobs cascade to job_history, projects to api_keys (foreign keys); the rest is explicit.
    tables = ("events", "jobs", "dispatches", "rooms", "webhooks", "usage_daily", "project_hosts")
    for table in (*tables, "projects"):
        conn.execute(f"DELETE FROM {table} WHERE project_id = ?", (project_id,))


def _insert_key(conn: sqlite3.Connection, key: ApiKey) -> ApiKey:
    found = conn.execute("SELECT 1 FROM projects WHERE project_id = ?", (key.project_id,))
    if found.fetchone() is None:
        raise ValueError(f"project {key.project_id!r} does not exist")
    if conn.execute("SELECT 1 FROM api_keys WHERE key = ?", (key.key,)).fetchone():
        raise ValueError(f"API key {key.key!r} already exists")
    conn.execute(codec.insert_sql("api_keys", codec.KEY_COLUMNS), codec.key_row(key))
    return key


def _revoke_key(conn: sqlite3.Connection, key: str) -> ApiKey | None:
    sql = "UPDATE api_keys SET revoked = 1 WHERE key = ? RETURNING *"
    rows = conn.execute(sql, (key,)).fetchall()  # fetch all: RETURNING applies when stepped through
    return codec.key_from_row(rows[0]) if rows else None


def _insert_webhook(conn: sqlite3.Connection, hook: Webhook) -> Webhook:
    found = conn.execute(
        "SELECT 1 FROM webhooks WHERE project_id = ? AND url = ?", (hook.project_id, hook.url)
    )
    if found.fetchone() is not None:
        raise ValueError(f"the project already has a webhook for {hook.url}")
    conn.execute(codec.insert_sql("webhooks", codec.WEBHOOK_COLUMNS), codec.webhook_row(hook))
    return hook


def _delete_webhook(conn: sqlite3.Connection, project_id: str, webhook_id: str) -> bool:
    sql = "DELETE FROM webhooks WHERE project_id = ? AND webhook_id = ?"
    return conn.execute(sql, (project_id, webhook_id)).rowcount > 0


def _delete_events_before(conn: sqlite3.Connection, before_ms: int) -> int:
    """Lines are appended as they happen, so the old ones are the lowest `seq`s: walked in `seq`
    order up to the first line that stays, then deleted as one range (no index on the time, which
    every line would pay for). A line stamped earlier than one before it (the clock stepped
    back) goes with a later sweep."""
    first_kept = conn.execute(
        "SELECT seq FROM events WHERE at_ms >= ? ORDER BY seq LIMIT 1", (before_ms,)
    ).fetchone()
    end = first_kept[0] if first_kept else conn.execute(
        "SELECT ifnull(max(seq), 0) + 1 FROM events"
    ).fetchone()[0]
    return conn.execute("DELETE FROM events WHERE seq < ?", (end,)).rowcount


def _sweep(conn: sqlite3.Connection, cutoffs: SweepCutoffs) -> dict[str, int]:
    """Terminal jobs and deleted dispatches only: what a restart resumes is never swept."""
    done: dict[str, int] = {}
    if cutoffs.events_before_ms:
        done["events"] = _delete_events_before(conn, cutoffs.events_before_ms)
    if cutoffs.dispatches_before_ms:
        old = "SELECT dispatch_id FROM dispatches WHERE deleted = 1 AND created_at_ms < ?"
        params = (cutoffs.dispatches_before_ms,)
        conn.execute(f"DELETE FROM jobs WHERE dispatch_id IN ({old})", params)
        done["dispatches"] = conn.execute(
            "DELETE FROM dispatches WHERE deleted = 1 AND created_at_ms < ?", params
        ).rowcount
    if cutoffs.jobs_before_ms:
        terminal = ", ".join("?" * len(_TERMINAL_STATES))
        done["jobs"] = conn.execute(
            f"DELETE FROM jobs WHERE state IN ({terminal}) AND updated_at_ms < ?",
            (*_TERMINAL_STATES, cutoffs.jobs_before_ms),
        ).rowcount
    if cutoffs.usage_before_day:
        sql = "DELETE FROM usage_daily WHERE day < ?"
        done["usage"] = conn.execute(sql, (cutoffs.usage_before_day,)).rowcount
    return done


def _set_hosts(conn: sqlite3.Connection, project_id: str, role: str, hosts: list[str]) -> None:
    conn.execute("DELETE FROM project_hosts WHERE project_id = ? AND role = ?", (project_id, role))
    conn.executemany(
        "INSERT OR REPLACE INTO project_hosts (project_id, host, role) VALUES (?, ?, ?)",
        [(project_id, host, role) for host in hosts],
    )




# --------------------------------------------------------------------------------------------------
# The in-memory key cache


class _KeyCache:
    """Non-revoked keys by key: readers do a bare (atomic) dict lookup, writers hold a lock."""

    def __init__(self) -> None:
        self._keys: dict[str, ApiKey] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> ApiKey | None:
        return self._keys.get(key)

    def replace_all(self, keys: Iterable[ApiKey]) -> None:
        self._keys = {k.key: k for k in keys if not k.revoked}

    def put(self, key: ApiKey) -> None:
        with self._lock:
            if key.revoked:
                self._keys.pop(key.key, None)
            else:
                self._keys[key.key] = key

    def drop(self, key: str) -> None:
        with self._lock:
            self._keys.pop(key, None)

    def drop_project(self, project_id: str) -> None:
        with self._lock:
            for key in [k for k, v in self._keys.items() if v.project_id == project_id]:
                del self._keys[key]


# --------------------------------------------------------------------------------------------------
# The store


class SqliteStore(Store):
    """`Store` on one SQLite file. `stats` counts the writer's ops and commits."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock_ms: Callable[[], int] = _wall_ms,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        commit_window_s: float = 0.0,
    ) -> None:
        self._path = os.fspath(path)
        if self._path in ("", ":memory:") or self._path.startswith("file:"):
            raise ValueError(
                f"SqliteStore needs a file path, not {self._path!r}: "
                "its writer and reader connections must see the same database"
            )
        self._clock_ms = clock_ms
        self._busy_timeout_ms = busy_timeout_ms
        self._commit_window_s = commit_window_s  # see `_Writer.put`
        self._writer: _Writer | None = None
        self._reader_conn: _Reader | None = None
        self._keys = _KeyCache()
        self._slot = RecordSlot()
        self._rooms: dict[RoomKey, Room] = {}  # every stored room, submitted ones at once
        self.stats = StoreStats()

    # -- lifecycle

    async def open(self) -> None:
        if self._writer is not None:
            raise RuntimeError("store is already open")
        writer = _Writer(self._path, self._busy_timeout_ms, self._commit_window_s)
        await writer.start()
        try:
            self._reader_conn = _Reader(self._path, self._busy_timeout_ms)
        except BaseException:
            await writer.stop()
            raise
        self._writer, self.stats = writer, writer.stats
        rows = self._reader.all("SELECT * FROM api_keys WHERE revoked = 0")
        self._keys.replace_all(codec.key_from_row(row) for row in rows)
        rooms = (codec.room_from_row(row) for row in self._reader.all("SELECT * FROM rooms"))
        self._rooms = {(room.project_id, room.name): room for room in rooms}

    async def close(self) -> None:
        writer, self._writer = self._writer, None  # from here on, new writes are refused
        if writer is None:
            return
        self._slot.close_any()
        await writer.stop()
        self._keys.replace_all(())  # a closed store authenticates nobody
        if self._reader_conn is not None:
            self._reader_conn.close()
            self._reader_conn = None

    async def flush(self) -> None:
        await self._write(None, "flush")

    def commit_soon(self) -> None:
        """The hub calls this once an assignment is on its way: the dispatch's records then go
        to the writer together, right away, instead of after the rest of the window."""
        if self._writer is not None:
            self._writer.send_now()

    @property
    def failure(self) -> str:
        if self._writer is not None:
            return self._writer.failure
        return ""

    @property
    def queued(self) -> int:
        """Ops waiting for the writer (not counting the batch it is applying)."""
        return self._writer.queued if self._writer is not None else 0

    # -- the write path

    def _live_writer(self) -> _Writer:
        if self._writer is None:
            raise RuntimeError("store is not open")
        return self._writer

    async def _write(
        self, apply: Callable[[sqlite3.Connection], T] | None, label: str,
        after_commit: Callable[[T], None] | None = None,
    ) -> T:
        """Queue one op and return its result once the batch holding it is committed."""
        writer = self._live_writer()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        hook = cast(Callable[[Any], None] | None, after_commit)
        if apply is not None:  # a flush barrier needs no order of its own
            self._slot.close_any()
        writer.put(_Op(apply, label, future, after_commit=hook))
        return cast(T, await future)

    def _records(self) -> Records:
        """The open `Records` to add a submission to; call with `self._slot.lock` held."""
        writer = self._live_writer()
        records = self._slot.open
        if records is None:
            records = self._slot.open = Records(self._slot)
            writer.put(_Op(None, "records", records=records))
        records.count += 1
        return records


    # -- projects and keys

    async def create_project(self, name: str) -> Project:
        project = Project(ids.new_id(ids.PROJECT), name, self._clock_ms())
        await self._write(partial(_insert_project, project=project), f"project {name!r}")
        return project

    async def delete_project(self, project_id: str) -> None:
        self._keys.drop_project(project_id)  # fail closed while the delete is queued
        for key in [k for k in self._rooms if k[0] == project_id]:
            del self._rooms[key]
        try:
            await self._write(
                partial(_delete_project, project_id=project_id), f"project {project_id}",
                lambda _: self._keys.drop_project(project_id),
            )
        except Exception:
            self._reload_keys("project_id = ?", project_id)
            raise

    def list_projects(self) -> list[Project]:
        rows = self._reader.all("SELECT * FROM projects ORDER BY created_at_ms, rowid")
        return [codec.project_from_row(row) for row in rows]

    def get_project(self, name_or_id: str) -> Project | None:
        row = self._reader.one(
            "SELECT * FROM projects WHERE project_id = ?1 OR name = ?1 "
            "ORDER BY project_id = ?1 DESC LIMIT 1",
            (name_or_id,),
        )
        return codec.project_from_row(row) if row else None

    async def add_key(
        self,
        project_id: str,
        developer: str = "",
        key: str | None = None,
        secret: str | None = None,
    ) -> ApiKey:
        record = ApiKey(
            key=ids.new_id(ids.API_KEY) if key is None else key,
            secret=ids.new_secret() if secret is None else secret,
            project_id=project_id, developer=developer, created_at_ms=self._clock_ms(),
        )
        return await self._write(
            partial(_insert_key, key=record), f"key {record.key}", self._keys.put
        )

    async def revoke_key(self, key: str) -> ApiKey | None:
        self._keys.drop(key)  # at once: no request authenticates with it from here on
        try:
            return await self._write(
                partial(_revoke_key, key=key), f"key {key}", lambda _: self._keys.drop(key)
            )
        except Exception:
            self._reload_keys("key = ?", key)
            raise

    def list_keys(
        self, project_id: str | None = None, include_revoked: bool = False
    ) -> list[ApiKey]:
        where, params = ["1"], []
        if project_id is not None:
            where.append("project_id = ?")
            params.append(project_id)
        if not include_revoked:
            where.append("revoked = 0")
        sql = f"SELECT * FROM api_keys WHERE {' AND '.join(where)} ORDER BY created_at_ms, rowid"
        return [codec.key_from_row(row) for row in self._reader.all(sql, params)]

    def get_key(self, key: str) -> ApiKey | None:
        return self._keys.get(key)

    def _reload_keys(self, where: str, param: str) -> None:
        """After a failed revoke/delete: put back into memory whatever the file still holds."""
        if self._reader_conn is None:
            return
        sql = f"SELECT * FROM api_keys WHERE revoked = 0 AND {where}"
        for row in self._reader.all(sql, (param,)):
            self._keys.put(codec.key_from_row(row))

    # -- rooms

    def submit_room(self, room: Room) -> None:
        key = (room.project_id, room.name)
        with self._slot.lock:
            self._records().rooms[key] = room
        self._rooms[key] = room

    async def save_room(self, room: Room) -> None:
        self.submit_room(room)
        await self.flush()

    async def delete_room(self, project_id: str, name: str) -> None:
        key = (project_id, name)
        with self._slot.lock:
            self._records().rooms[key] = None
        self._rooms.pop(key, None)
        await self.flush()

    def list_rooms(self, project_id: str, names: list[str] | None = None) -> list[Room]:
        wanted = set(names) if names is not None else None
        found = [
            room for (pid, name), room in self._rooms.items()
            if pid == project_id and (wanted is None or name in wanted)
        ]
        return sorted(found, key=lambda room: room.name)

    def get_room(self, project_id: str, name: str) -> Room | None:
        return self._rooms.get((project_id, name))

    # -- webhooks

    async def add_webhook(self, project_id: str, url: str, signing_key: str) -> Webhook:
        hook = Webhook(ids.new_id(ids.WEBHOOK), project_id, url, signing_key, self._clock_ms())
        return await self._write(partial(_insert_webhook, hook=hook), f"webhook {hook.webhook_id}")

    def list_webhooks(self, project_id: str | None = None) -> list[Webhook]:
        sql, params = "SELECT * FROM webhooks", []
        if project_id is not None:
            sql, params = sql + " WHERE project_id = ?", [project_id]
        rows = self._reader.all(sql + " ORDER BY created_at_ms, rowid", params)
        return [codec.webhook_from_row(row) for row in rows]

    async def delete_webhook(self, project_id: str, webhook_id: str) -> bool:
        work = partial(_delete_webhook, project_id=project_id, webhook_id=webhook_id)
        return await self._write(work, f"webhook {webhook_id}")

    # -- dispatches, jobs

    def submit_dispatch(self, record: DispatchRecord) -> None:
        with self._slot.lock:
            self._records().dispatches[record.spec.dispatch_id] = record

    def submit_job(self, record: JobRecord) -> None:
        # The history row is appended by a trigger when the state differs (schema.py).
        with self._slot.lock:
            self._records().jobs.append(record)

    def submit_event(self, event: RecordEvent) -> None:
        with self._slot.lock:
            self._records().events.append(event)

    def get_dispatch(self, project_id: str, dispatch_id: str) -> DispatchRecord | None:
        row = self._reader.one(
            "SELECT * FROM dispatches WHERE dispatch_id = ? AND project_id = ?",
            (dispatch_id, project_id),
        )
        return codec.dispatch_from_row(row) if row else None

    def list_dispatches(
        self, project_id: str, room_name: str | None = None, include_deleted: bool = False
    ) -> list[DispatchRecord]:
        sql, params = "SELECT * FROM dispatches WHERE project_id = ?", [project_id]
        if room_name is not None:
            sql += " AND room_name = ?"
            params.append(room_name)
        if not include_deleted:
            sql += " AND deleted = 0"
        rows = self._reader.all(sql + " ORDER BY created_at_ms, rowid", params)
        return [codec.dispatch_from_row(row) for row in rows]

    def get_job(self, project_id: str, job_id: str) -> JobRecord | None:
        row = self._reader.one(
            "SELECT * FROM jobs WHERE job_id = ? AND project_id = ?", (job_id, project_id)
        )
        return codec.job_from_row(row) if row else None

    def job_history(self, project_id: str, job_id: str) -> list[tuple[str, int]]:
        rows = self._reader.all(
            "SELECT h.state, h.at_ms FROM job_history h JOIN jobs j ON j.job_id = h.job_id "
            "WHERE h.job_id = ? AND j.project_id = ? ORDER BY h.rowid",
            (job_id, project_id),
        )
        return [(str(row["state"]), int(row["at_ms"])) for row in rows]

    def live_state(self) -> tuple[list[DispatchRecord], list[JobRecord]]:
        dispatches = self._reader.all(
            "SELECT * FROM dispatches WHERE deleted = 0 ORDER BY created_at_ms, rowid"
        )
        jobs = self._reader.all(
            f"SELECT * FROM jobs WHERE state IN ({', '.join('?' * len(_LIVE_STATES))}) "
            "ORDER BY created_at_ms, rowid",
            _LIVE_STATES,
        )
        return (
            [codec.dispatch_from_row(row) for row in dispatches],
            [codec.job_from_row(row) for row in jobs],
        )

    # -- events

    def query_events(self, query: EventQuery) -> list[StoredEvent]:
        sql, params = _event_query_sql(query)
        return [codec.event_from_row(row) for row in self._reader.all(sql, params)]

    async def sweep(self, *, events_before_ms: int) -> int:
        """Retention: delete events older than `events_before_ms`; returns how many went."""
        return await self._write(
            partial(_delete_events_before, before_ms=events_before_ms), "sweep events"
        )

    # -- usage, hosts, retention

    def submit_usage(self, project_id: str, owner: str, day: str, **amounts: int) -> None:
        unknown = set(amounts) - set(USAGE_FIELDS)
        if unknown:
            raise ValueError(f"unknown usage fields {sorted(unknown)}")
        values = [int(amounts.get(f, 0)) for f in USAGE_FIELDS]
        with self._slot.lock:
            self._records().add_usage((project_id, owner, day), values)

    def query_usage(self, project_id: str, since_day: str = "") -> list[UsageRow]:
        rows = self._reader.all(
            "SELECT * FROM usage_daily WHERE project_id = ? AND day >= ? ORDER BY day, owner",
            (project_id, since_day),
        )
        return [
            UsageRow(
                project_id=str(r["project_id"]),
                owner=str(r["owner"]),
                day=str(r["day"]),
                **{f: int(r[f]) for f in USAGE_FIELDS},
            )
            for r in rows
        ]

    def job_state_counts(self) -> list[tuple[str, str, int]]:
        rows = self._reader.all(
            "SELECT project_id, state, COUNT(*) AS n FROM jobs GROUP BY project_id, state"
        )
        return [(str(r["project_id"]), str(r["state"]), int(r["n"])) for r in rows]

    async def set_project_hosts(self, project_id: str, role: str, hosts: list[str]) -> None:
        work = partial(_set_hosts, project_id=project_id, role=role, hosts=hosts)
        await self._write(work, f"hosts of {project_id}")

    def project_hosts(self, project_id: str) -> dict[str, str]:
        rows = self._reader.all(
            "SELECT host, role FROM project_hosts WHERE project_id = ?", (project_id,)
        )
        return {str(r["host"]): str(r["role"]) for r in rows}

    async def sweep_old(self, cutoffs: SweepCutoffs) -> dict[str, int]:
        result: dict[str, int] = await self._write(partial(_sweep, cutoffs=cutoffs), "sweep")
        return result

    @property
    def _reader(self) -> _Reader:
        if self._reader_conn is None:
            raise RuntimeError("store is not open")
        return self._reader_conn


def _event_query_sql(query: EventQuery) -> tuple[str, list[Any]]:
    """WHERE clauses for the filters that are set; kinds are prefixes, matched case-sensitively."""
    where, params = ["project_id = ?", "seq > ?"], [query.project_id, query.after_seq]
    for column in ("room_name", "job_id", "dispatch_id", "agent_name"):
        value = getattr(query, column)
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if query.job_id:  # lets SQLite use the job index, which leaves out lines without a job
        where.append("job_id != ''")
    if query.kinds:
        where.append("(" + " OR ".join("substr(kind, 1, ?) = ?" for _ in query.kinds) + ")")
        for prefix in query.kinds:
            params.extend((len(prefix), prefix))
    params.append(max(0, min(query.limit, EVENT_QUERY_MAX)))
    return f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?", params
