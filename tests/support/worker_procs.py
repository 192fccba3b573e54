"""Worker processes started by tests: environment, JSON-lines records, stop by pid, registration.

The fleets (`tests.support.agents`, `tests.support.echo_agents`) and the room tests run real
livekit-agents workers, one per process because `AgentServer.run()` writes its key into
`os.environ` (livekit-wire §9). Each process reports to a JSON-lines file of `{"event": ...}`
records; a process is stopped by the pid the test started: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tests.support.server import DEV_KEY, DEV_SECRET, ServerProcess


class WorkerLike(Protocol):
    proc: subprocess.Popen[bytes] | None

    def alive(self) -> bool: ...

    def describe(self) -> str: ...

    def stop(self) -> None: ...


W = TypeVar("W", bound=WorkerLike)


def worker_env(
    server: ServerProcess, key: str, secret: str, drop: tuple[str, ...] = ("LIVEKIT_", "PYTEST_")
) -> dict[str, str]:
    """This process's environment without the `drop` prefixes, pointed at `server` with the key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env |= {"LIVEKIT_URL": server.ws_url, "LIVEKIT_API_KEY": key, "LIVEKIT_API_SECRET": secret}
    return env


def read_records(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The whole JSON lines written so far (a line still being written is skipped), of `kind`."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    return [r for r in lines if kind is None or r["event"] == kind]


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM (unless it has exited), then SIGKILL after `timeout_s`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_all(workers: Sequence[WorkerLike]) -> None:
    """SIGTERM to every running worker first, so they shut down together; then stop each."""
    for worker in workers:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.stop()


async def poll_registered(
    workers: Sequence[W],
    listed: Callable[[W], Awaitable[bool]],
    exited: str,
    late: str,
    timeout_s: float,
) -> None:
    """Until `listed(worker)` for each; a worker that exits, or the deadline, fails the test."""
    todo = list(workers)
    deadline = time.monotonic() + timeout_s
    while todo:
        for worker in list(todo):
            if not worker.alive():
                raise AssertionError(f"{exited}\n{worker.describe()}")
            if await listed(worker):
                todo.remove(worker)
        if not todo:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{late}:\n" + "\n".join(w.describe() for w in todo))
        await asyncio.sleep(0.1)


@contextlib.contextmanager
def worker_process(
    server: ServerProcess,
    script: Path,
    name: str,
    out: Path,
    key: str = DEV_KEY,
    secret: str = DEV_SECRET,
    extra_args: Sequence[str] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """`python SCRIPT --name NAME --out OUT` as a worker for `key`, its output in OUT's `.log`;
    stopped on the way out (8 s after SIGTERM, SIGKILL)."""
    with open(out.with_suffix(".log"), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), "--name", name, "--out", str(out), *extra_args],
            env=worker_env(server, key, secret), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        yield proc
    finally:
        stop_process(proc, 8)
