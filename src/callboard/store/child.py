"""The store writer's SQLite work, in a process of its own.

Why a process: SQLite releases the GIL while it runs a statement but the calling thread must win
the GIL back after each one, and the server's event loop holds it most of the time; a writer
thread in the server's process spent most of its batches waiting for the GIL, and every
acknowledgement waits for a batch. Here SQLite runs with no GIL to share. The store's writer
(`sqlite._Writer`, on the server's event loop) gathers batches and resolves futures; it sends
each batch here (rows already encoded, explicit writes as picklable functions) and reads back
the outcomes.

Checkpoints run here too, on a thread and a connection of their own (`Checkpointer`): copying the
WAL back into the database file and fsyncing it was a fifth of the writer's time when SQLite did
it inside a commit, and every acknowledgement queued behind that commit. After each commit the
kernel is asked to start writing the WAL's new pages to disk (`Writeback`), so that the
checkpoint's fsync finds little left to write.

Protocol, over the child's stdin/stdout: length-prefixed pickles. First ("open", path,
busy_timeout_ms) -> ("ready",) or ("error", exc). Then ("batch", items) -> ("done", results,
stats) for each batch, in order. EOF on stdin: close the file and exit (a server killed mid-batch
loses only what it never acknowledged).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import signal
import sqlite3
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any, BinaryIO, Final

from callboard.store import pending

log = logging.getLogger("callboard.store.sqlite")

_LENGTH = struct.Struct("!I")

# The writer checkpoints by itself only when the WAL passes this many pages (SQLite's default is
# 1,000): a safety net for a checkpointer that cannot keep up, e.g. behind a long-lived reader.
WRITER_AUTOCHECKPOINT_PAGES: Final = 16_000
CHECKPOINT_INTERVAL_S: Final = 0.25  # at most this often, and only after a commit
SYNC_FILE_RANGE_WRITE: Final = 2  # <linux/fs.h>: start writeback of dirty pages, do not wait

Item = tuple[str, Any]  # ("records", [(table, rows), ...]) or ("call", function of a connection)
Result = tuple[Any, BaseException | None, list[str]]  # value, error, failed-row messages


def frame(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def send(stream: BinaryIO, message: object) -> None:
    stream.write(frame(message))
    stream.flush()


class Frames:
    """Messages out of a byte stream that arrives in arbitrary pieces (the parent's side)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        messages = []
        start = 0
        while len(buffer) - start >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer, start)
            end = start + _LENGTH.size + size
            if len(buffer) < end:
                break
            messages.append(pickle.loads(buffer[start + _LENGTH.size:end]))
            start = end
        del buffer[:start]
        return messages


def receive(stream: BinaryIO) -> Any:
    """The next message, or None at EOF (a partial message counts as EOF)."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


class Committer:
    """Applies one batch in one transaction; if anything in it fails, each item alone (records
    then row by row), so only what is bad is lost. Counts what it did for the store's stats."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.commits = 0
        self.retried_batches = 0
        self.failed_ops = 0

    def apply(self, items: list[Item]) -> list[Result]:
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            # Locked past busy_timeout by another process: no item's fault, and retrying them one
            # by one would wait busy_timeout per item.
            self.failed_ops += len(items)
            return [(None, exc, []) for _ in items]
        try:
            values = [self._run(kind, payload) for kind, payload in items]
            conn.execute("COMMIT")
        except Exception as exc:
            rollback(conn)
            if len(items) == 1 and items[0][0] == "call":
                self.failed_ops += 1
                return [(None, exc, [])]
            self.retried_batches += 1
            return [self._alone(kind, payload) for kind, payload in items]
        self.commits += 1
        return [(value, None, []) for value in values]

    def _run(self, kind: str, payload: Any) -> Any:
        if kind == "records":
            for name, rows in payload:
                pending.TABLES[name].write(self.conn, rows)
            return None
        function: Callable[[sqlite3.Connection], Any] = payload
        return function(self.conn)

    def _alone(self, kind: str, payload: Any) -> Result:
        conn = self.conn
        failures: list[str] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            if kind == "records":
                value = None
                for name, rows in payload:
                    failures += pending.TABLES[name].one_by_one(conn, rows)
            else:
                value = payload(conn)
            conn.execute("COMMIT")
        except Exception as exc:
            rollback(conn)
            self.failed_ops += 1
            return (None, exc, [])
        self.commits += 1
        self.failed_ops += len(failures)
        return (value, None, failures)

    def stats(self) -> tuple[int, int, int]:
        counts = (self.commits, self.retried_batches, self.failed_ops)
        self.commits = self.retried_batches = self.failed_ops = 0
        return counts


class Checkpointer:
    """PASSIVE checkpoints from a second connection, after commits, at most every `interval_s`.

    A passive checkpoint never blocks the writer (nor readers): it copies what it can and the rest
    waits for the next one. Once everything is copied, SQLite restarts the WAL from its start at
    the next commit, so the file stops growing."""

    def __init__(self, path: str, busy_timeout_ms: int,
                 interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        from callboard.store.sqlite import connect  # the parent's own module, for its setup

        self._conn = connect(path, busy_timeout_ms, check_same_thread=False)
        self._interval_s = interval_s
        self._committed = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpointer", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        self._committed.set()

    def stop(self) -> None:
        """A last checkpoint, then the thread ends and its connection closes."""
        self._stopping.set()
        self._committed.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._committed.wait()
                self._committed.clear()
                self._checkpoint()
                self._stopping.wait(self._interval_s)
            self._checkpoint()
        finally:
            self._conn.close()

    def _checkpoint(self) -> None:
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            # The writer's own safety net (`WRITER_AUTOCHECKPOINT_PAGES`) still bounds the WAL.
            log.exception("store: checkpoint failed")


class Writeback:
    """Asks the kernel to start writing a file's dirty pages to disk, and returns at once.

    Why: with synchronous=NORMAL the WAL reaches the disk only when a checkpoint fsyncs it, and by
    then it holds a quarter of a second of commits: each commit appends every page it touched (a
    lone dispatch touches about thirty, 4 KiB each), so tens of MB go out in one burst. On this
    machine such a burst took ~10 ms and slowed every process meanwhile: in `bench/dispatch.py`,
    one caller, the dispatches that overlapped one made the p99 (1.3-1.5 ms with the bursts,
    0.8-0.9 ms without). Started after each commit, while the server waits for the commit's reply
    anyway, the writeback goes out one commit at a time. It promises nothing: no flush, no wait;
    durability is still the checkpoint's fsync. Linux only (sync_file_range(2)); elsewhere, or if
    the call fails, it does nothing."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None
        self._call = _sync_file_range()

    def start(self) -> None:
        if self._call is None:
            return
        if self._fd is None:
            try:
                self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:  # not there yet: SQLite creates the WAL at the first write
                return
        if self._call(self._fd, 0, 0, SYNC_FILE_RANGE_WRITE) != 0:
            error = ctypes.get_errno()
            log.warning("store: no early writeback of %s: %s", self._path, os.strerror(error))
            self._call = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def rollback(conn: sqlite3.Connection) -> None:
    """Never raises: it runs while handling another error, which is the one worth reporting."""
    if not conn.in_transaction:  # SQLite rolls back by itself on some errors (SQLITE_FULL, …)
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        log.exception("store: rollback failed")


def serve(incoming: BinaryIO, outgoing: BinaryIO) -> None:
    from callboard.store.sqlite import connect_writer  # the parent's own module, for its setup

    opening = receive(incoming)
    if opening is None:
        return
    _, path, busy_timeout_ms = opening
    try:
        conn = connect_writer(path, busy_timeout_ms)
    except BaseException as exc:  # reported to the parent, which raises it from open()
        send(outgoing, ("error", exc))
        return
    try:
        conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES}")
        checkpointer = Checkpointer(path, busy_timeout_ms)
    except BaseException as exc:
        conn.close()
        send(outgoing, ("error", exc))
        return
    send(outgoing, ("ready",))
    committer = Committer(conn)
    writeback = Writeback(path + "-wal")
    try:
        while (message := receive(incoming)) is not None:
            _, items = message
            results = committer.apply(items)
            writeback.start()
            send(outgoing, ("done", results, committer.stats()))
            checkpointer.committed()
    finally:
        checkpointer.stop()
        writeback.close()
        conn.close()


def _yield_on_wakeup() -> None:
    """SCHED_BATCH: the same CPU share, but waking up (a batch arrived) does not preempt the
    thread that woke it. Otherwise each batch the server writes to the pipe may take the server's
    core from it mid-burst. Under load (`bench/dispatch.py`, `/proc/<tid>/schedstat`) the
    server's event-loop thread waited for a CPU 8.5-10 % of the time before, 7 % after, and ran
    4 % more. Where the policy does not exist the process runs as it is."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def main() -> None:
    # The parent decides when writing ends (EOF on stdin, after its last flush): a Ctrl-C or a
    # SIGTERM sent to the whole process group must not stop the writer before the parent drains.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _yield_on_wakeup()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # stdout carries the protocol: nothing else may print to it.
    outgoing = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, outgoing)


if __name__ == "__main__":
    main()
