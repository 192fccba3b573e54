"""A real callboard server process for tests: 127.0.0.1, a free port, a real SQLite file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

DEV_KEY = "devkey"
DEV_SECRET = "secret"
DEV_ADMIN = "dev-admin"

# Short timers so tests exercise grace windows and timeouts in seconds, not minutes.
FAST_SETTINGS = {
    "CALLBOARD_AVAILABILITY_TIMEOUT_S": "1.5",
    "CALLBOARD_REDISPATCH_GRACE_S": "3",
    "CALLBOARD_REGISTER_TIMEOUT_S": "2",
    "CALLBOARD_DRAIN_TIMEOUT_S": "1",
    "CALLBOARD_PING_INTERVAL_S": "5",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    db: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    log_path: Path | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        env = {**os.environ, **FAST_SETTINGS, **self.env}
        self.log_path = self.db.with_suffix(".log")
        with open(self.log_path, "a") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "callboard.cli.main",
                    "server",
                    "--dev",
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--db",
                    str(self.db),
                    "--log-level",
                    "debug",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.http_url + "/", timeout=1) as resp:
                    if resp.read() == b"OK":
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not answer within {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        return rc

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()
