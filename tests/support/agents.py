"""Real livekit-agents workers for compat tests, each in its own process (livekit-wire §9).

`AgentServer.run()` writes LIVEKIT_API_KEY/SECRET into `os.environ`, so a worker per key needs a
process of its own; the process is `tests/support/agent_worker.py`. It reports to a JSON-lines file
(registrations with the worker id the server gave, and every entrypoint run), which this harness
reads. Workers are stopped by the pid this harness started: SIGTERM, then SIGKILL.

    with agent_fleet(server, tmp_path) as fleet:
        jack = fleet.start("my-agent-jack")
        await fleet.wait_registered(http)
        ...
        await wait_for(lambda: len(jack.jobs()) == 10)
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from livekit import api
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

from tests.support.clients import project_get, wait_for
from tests.support.server import DEV_KEY, DEV_SECRET, ServerProcess
from tests.support.worker_procs import (
    poll_registered,
    read_records,
    stop_all,
    stop_process,
    worker_env,
)

WORKER_SCRIPT = Path(__file__).with_name("agent_worker.py")
REGISTER_TIMEOUT_S = 45.0  # measured on 2 cores: 1 worker ≈1.6 s, 3 started together ≈3.2 s


@dataclass
class AgentProcess:
    """One livekit-agents worker process and what it reported."""

    name: str
    key: str
    secret: str
    out: Path
    log_path: Path
    load: float | None = None
    hold_dir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.out)

    def jobs(self) -> list[dict[str, Any]]:
        """Every entrypoint run, in order (a job run twice appears twice)."""
        return [r for r in self.records() if r["event"] == "job"]

    def job_ids(self) -> list[str]:
        return [r["job_id"] for r in self.jobs()]

    def registrations(self) -> list[str]:
        """Worker ids, one per (re)registration."""
        return [r["worker_id"] for r in self.records() if r["event"] == "registered"]

    @property
    def worker_id(self) -> str | None:
        ids = self.registrations()
        return ids[-1] if ids else None

    async def active_jobs(self, session: aiohttp.ClientSession) -> int:
        """The SDK's own count of running jobs, from its health server's `/worker` endpoint."""
        ports = [r["http_port"] for r in self.records() if r["event"] == "registered"]
        assert ports, "worker has not registered yet"
        async with session.get(f"http://127.0.0.1:{ports[-1]}/worker") as resp:
            body = await resp.json(content_type=None)
        return int(body.get("active_jobs", 0))

    def release(self, job_id: str = "all") -> None:
        """Let a held job (or all of them, now and later) call ctx.shutdown()."""
        assert self.hold_dir is not None, "worker was not started with hold=True"
        (self.hold_dir / job_id).touch()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 6.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s)
        self.proc = None

    def describe(self) -> str:
        tail = "\n".join(self.log().splitlines()[-40:])
        stderr = self.log_path.with_suffix(".stderr")
        err = stderr.read_text()[-3000:] if stderr.exists() else ""
        return (f"worker {self.name!r} (key {self.key}, pid "
                f"{self.proc.pid if self.proc else '-'}), records={self.records()}\n"
                f"--- log tail ---\n{tail}\n--- stderr ---\n{err}")


@dataclass
class AgentFleet:
    server: ServerProcess
    base: Path
    workers: list[AgentProcess] = field(default_factory=list)

    def start(self, name: str = "", key: str = DEV_KEY, secret: str = DEV_SECRET,
              load: float | None = None, hold: bool = False, decline: int = 0) -> AgentProcess:
        """Start one worker process (returns at once; see `wait_registered`)."""
        n = len(self.workers)
        label = f"agent{n}-{name or 'unnamed'}"
        worker = AgentProcess(name=name, key=key, secret=secret, out=self.base / f"{label}.jsonl",
                              log_path=self.base / f"{label}.log", load=load)
        args = [sys.executable, str(WORKER_SCRIPT), "--name", name, "--out", str(worker.out),
                "--log", str(worker.log_path)]
        if load is not None:
            args += ["--load", repr(load)]
        if decline:
            args += ["--decline", str(decline)]
        if hold:
            worker.hold_dir = self.base / f"{label}-hold"
            worker.hold_dir.mkdir()
            args += ["--hold", str(worker.hold_dir)]
        env = worker_env(self.server, key, secret, drop=("LIVEKIT_", "PYTEST_", "PYTHONWARNINGS"))
        with open(worker.log_path.with_suffix(".stderr"), "ab") as stderr:
            worker.proc = subprocess.Popen(args, env=env, stdout=stderr, stderr=stderr,
                                           stdin=subprocess.DEVNULL)
        worker.started_at = time.monotonic()
        self.workers.append(worker)
        return worker

    async def listed(self, session: aiohttp.ClientSession,
                     key: str = DEV_KEY, secret: str = DEV_SECRET) -> dict[str, dict[str, Any]]:
        """The server's `/callboard/v1/workers` for the key's project, by worker id."""
        status, body = await project_get(session, self.server, "/workers", key, secret)
        assert status == 200, body
        return {w["id"]: w for w in body["workers"]}

    async def wait_registered(self, session: aiohttp.ClientSession,
                              workers: list[AgentProcess] | None = None,
                              timeout_s: float = REGISTER_TIMEOUT_S) -> None:
        """Until each worker has registered (by its own account) and the server lists that id."""
        async def listed(worker: AgentProcess) -> bool:
            return bool(worker.worker_id) and worker.worker_id in await self.listed(
                session, worker.key, worker.secret)

        await poll_registered(workers if workers is not None else self.workers, listed,
                              "worker process exited",
                              f"workers not registered within {timeout_s}s", timeout_s)

    def all_jobs(self) -> list[dict[str, Any]]:
        return [job | {"worker": w.name} for w in self.workers for job in w.jobs()]

    def close(self) -> None:
        for worker in self.workers:
            if worker.hold_dir is not None:
                worker.release()
        stop_all(self.workers)


@contextlib.contextmanager
def agent_fleet(server: ServerProcess, base: Path) -> Iterator[AgentFleet]:
    base.mkdir(parents=True, exist_ok=True)
    fleet = AgentFleet(server, base)
    try:
        yield fleet
    finally:
        fleet.close()


# Polling helpers shared by the compat tests --------------------------------------------------

JOB_TIMEOUT_S = 30.0


async def explain(http: aiohttp.ClientSession, server: ServerProcess, dispatch_id: str,
                  key: str = DEV_KEY, secret: str = DEV_SECRET) -> dict[str, Any]:
    status, body = await project_get(http, server, f"/dispatches/{dispatch_id}/explain", key,
                                     secret)
    assert status == 200, body
    return body


async def wait_all_ended(http: aiohttp.ClientSession, server: ServerProcess,
                         dispatch_ids: list[str], key: str = DEV_KEY, secret: str = DEV_SECRET,
                         timeout_s: float = JOB_TIMEOUT_S) -> dict[str, dict[str, Any]]:
    """Poll explain until every dispatch has exactly one job and it is `success`; return them."""
    last: dict[str, dict[str, Any]] = {}

    async def ended() -> bool:
        for d in dispatch_ids:
            if d in last and last[d]["jobs"][0]["state"] == "success":
                continue
            last[d] = await explain(http, server, d, key, secret)
            jobs = last[d]["jobs"]
            assert len(jobs) <= 1, f"dispatch {d} has {len(jobs)} jobs: {jobs}"
            if not jobs or jobs[0]["state"] != "success":
                return False
        return True

    try:
        await wait_for(ended, timeout_s=timeout_s, interval_s=0.1)
    except AssertionError:
        states = {d: [j["state"] for j in b["jobs"]] for d, b in last.items()}
        traces = {d: [(t["what"], t["detail"].get("reason") or t["detail"].get("why") or "")
                      for t in b["trace"][-6:]]
                  for d, b in last.items() if [j["state"] for j in b["jobs"]] != ["success"]}
        raise AssertionError(f"not all jobs ended in success: {states}\n"
                             f"last trace lines: {traces}") from None
    return last


async def wait_jobs(workers: list[AgentProcess], counts: list[int],
                    timeout_s: float = JOB_TIMEOUT_S) -> None:
    """Until each worker's entrypoint has run at least its count of jobs."""
    try:
        await wait_for(
            lambda: all(len(w.jobs()) >= n for w, n in zip(workers, counts, strict=True)),
            timeout_s=timeout_s)
    except AssertionError:
        raise AssertionError("entrypoint runs missing: " + "\n".join(
            f"{w.name}: {len(w.jobs())}/{n}\n{w.describe()}"
            for w, n in zip(workers, counts, strict=True))) from None


async def dispatch_many(lk: api.LiveKitAPI, agent_name: str, rooms: list[str],
                        batch: int = 25) -> list[api.AgentDispatch]:
    out: list[api.AgentDispatch] = []
    for i in range(0, len(rooms), batch):
        out += await asyncio.gather(*(
            lk.agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name=agent_name, room=room))
            for room in rooms[i:i + batch]))
    return out
