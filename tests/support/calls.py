"""Placing `callboard call` from tests: the installed executable, its JSON report parsed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.cli import run_exe


@dataclass
class CallResult:
    rc: int
    body: dict[str, Any]
    stdout: str
    stderr: str

    def describe(self) -> str:
        return f"exit {self.rc}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def place_call(home: Path, *args: str, suffix: str = "", env: dict[str, str] | None = None,
               timeout_s: float = 90) -> CallResult:
    """`callboard call ARGS… --json` with HOME=home and nothing else from our environment."""
    extra = dict(env or {})
    if suffix:
        extra["LIVEKIT_AGENT_SUFFIX"] = suffix
    done = run_exe("call", *args, "--json", home=home, env=extra, timeout_s=timeout_s)
    try:
        body = json.loads(done.stdout)
    except ValueError:
        body = {}
    return CallResult(done.returncode, body, done.stdout, done.stderr)
