"""The example echo agent run by real livekit-agents workers, each in its own process.

    with echo_fleet(server, tmp_path) as fleet:
        jack = fleet.start(suffix="jack")             # registers echo-agent-jack
        await fleet.wait_registered(http)
        ...  # callboard call …; then jack.jobs(), jack.chats()

Each worker is `tests/support/echo_worker.py` (the example's entrypoint on a worker with the
thread executor); it reports through the example's ECHO_AGENT_EVENTS file: `registered` (worker id),
`job` (job id, room, identity, worker id) and `chat` (what the caller said). A worker per process,
because `AgentServer.run()` writes its key into `os.environ` (livekit-wire §9). Stopped by the pid
this harness started: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.clients import project_get
from tests.support.server import DEV_KEY, DEV_SECRET, ServerProcess
from tests.support.worker_procs import (
    poll_registered,
    read_records,
    stop_all,
    stop_process,
    worker_env,
)

WORKER_SCRIPT = Path(__file__).with_name("echo_worker.py")
REGISTER_TIMEOUT_S = 45.0


@dataclass
class EchoAgent:
    suffix: str
    key: str
    secret: str
    events: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def agent_name(self) -> str:
        return f"echo-agent-{self.suffix}" if self.suffix else "echo-agent"

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        return read_records(self.events, kind)

    def jobs(self) -> list[dict[str, Any]]:
        return self.records("job")

    def chats(self) -> list[dict[str, Any]]:
        return self.records("chat")

    @property
    def worker_id(self) -> str | None:
        ids = [r["worker_id"] for r in self.records("registered")]
        return ids[-1] if ids else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def describe(self) -> str:
        log = self.log_path.read_text() if self.log_path.exists() else ""
        tail = "\n".join(log.splitlines()[-40:])
        return f"{self.agent_name} (key {self.key}) records={self.records()}\n{tail}"

    def stop(self, timeout_s: float = 8.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s)
        self.proc = None


@dataclass
class EchoFleet:
    server: ServerProcess
    base: Path
    agents: list[EchoAgent] = field(default_factory=list)

    def start(self, suffix: str = "", key: str = DEV_KEY, secret: str = DEV_SECRET,
              processes: int = 0) -> EchoAgent:
        """One worker process; `processes` > 0: the process executor with that many warm."""
        label = f"echo{len(self.agents)}-{suffix or 'plain'}"
        agent = EchoAgent(suffix, key, secret, self.base / f"{label}.jsonl",
                          self.base / f"{label}.log")
        env = worker_env(self.server, key, secret,
                         drop=("LIVEKIT_", "PYTEST_", "PYTHONWARNINGS", "ECHO_AGENT_"))
        env["ECHO_AGENT_EVENTS"] = str(agent.events)
        if suffix:
            env["LIVEKIT_AGENT_SUFFIX"] = suffix
        if processes:
            env["ECHO_WORKER_PROCESSES"] = str(processes)
        with open(agent.log_path, "ab") as log:
            agent.proc = subprocess.Popen([sys.executable, str(WORKER_SCRIPT)], env=env,
                                          stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.agents.append(agent)
        return agent

    async def wait_registered(self, http: aiohttp.ClientSession,
                              timeout_s: float = REGISTER_TIMEOUT_S) -> None:
        """Until every agent reported its worker id and the server lists it."""
        async def listed(agent: EchoAgent) -> bool:
            if not agent.worker_id:
                return False
            status, body = await project_get(http, self.server, "/workers", agent.key,
                                             agent.secret)
            return status == 200 and agent.worker_id in {w["id"] for w in body["workers"]}

        await poll_registered(self.agents, listed, "echo worker exited",
                              "echo workers not registered in time", timeout_s)

    def close(self) -> None:
        stop_all(self.agents)


@contextlib.contextmanager
def echo_fleet(server: ServerProcess, base: Path) -> Iterator[EchoFleet]:
    base.mkdir(parents=True, exist_ok=True)
    fleet = EchoFleet(server, base)
    try:
        yield fleet
    finally:
        fleet.close()
