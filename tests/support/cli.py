"""Running the `callboard` CLI in tests: in-process through click's CliRunner, or as the executable.

Every CLI test isolates itself with `isolate`: HOME is a temporary folder (so
`~/.livekit/cli-config.yaml` is the test's own), no CALLBOARD_* / LIVEKIT_* variable leaks in from
the environment, and the working directory is empty.

Async tests (those holding a light worker, whose reader runs on the test's event loop) call
`acb`, which runs the command in a thread: the CLI runs its own event loop with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from callboard.cli.main import cli
from tests.support.server import DEV_KEY, DEV_SECRET, ServerProcess

CALLBOARD = Path(sys.executable).parent / "callboard"
CREDENTIAL_ENV = (
    "CALLBOARD_URL", "CALLBOARD_API_KEY", "CALLBOARD_API_SECRET", "CALLBOARD_ADMIN_TOKEN",
    "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "LIVEKIT_TOKEN",
)

LK_CONFIG = """\
default_project: cloud
default_user: ""
projects:
    - name: cloud
      project_id: p_2x7k9
      url: wss://my-app-x7k9.livekit.cloud
      api_key: APIcloudkey
      api_secret: cloudsecret
    - name: staging
      project_id: ""
      url: https://staging.example.com
      api_key: APIstaging
      api_secret: stagingsecret
users:
    - id: u_123
      name: Jo
      email: jo@example.com
      session_token: tok
      session_expiry: 1893456000
device_name: "jo's laptop"
theme: dark
# a comment someone wrote by hand
future_field:
    nested: [1, 2, 3]
    flag: true
"""


def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME in tmp_path, no credentials from the environment, an empty cwd; returns HOME."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    for name in CREDENTIAL_ENV:
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    return home


def config_file(home: Path) -> Path:
    return home / ".livekit" / "cli-config.yaml"


def write_config(home: Path, text: str, mode: int = 0o600) -> Path:
    path = config_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def cb(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    """Run `callboard ARGS…` in-process."""
    return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)


async def acb(*args: str, env: dict[str, str] | None = None) -> Result:
    """`cb` from an async test: in a thread, so the test's event loop keeps running."""
    return await asyncio.to_thread(cb, *args, env=env)


def creds(server: ServerProcess, key: str = DEV_KEY, secret: str = DEV_SECRET) -> list[str]:
    """The credential flags for `server`."""
    return ["--url", server.http_url, "--api-key", key, "--api-secret", secret]


def ok(result: Result) -> str:
    """The command's stdout; the command must have succeeded."""
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    return result.stdout


def ok_json(result: Result) -> Any:
    return json.loads(ok(result))


def one_line_error(result: Result, exit_code: int, *needles: str) -> str:
    """The command failed with `exit_code` and said why in one line on stderr, no traceback."""
    assert result.exit_code == exit_code, f"exit {result.exit_code}: {result.output}"
    text = result.stderr.strip()
    assert "\n" not in text and "Traceback" not in text, text
    assert text.startswith("error: "), text
    for needle in needles:
        assert needle in text, text
    return text


def usage_error(result: Result, *needles: str) -> str:
    """click's own usage errors (exit 2) are a few lines: usage, hint, the error."""
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}"
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result.stderr


def run_exe(*args: str, home: Path, env: dict[str, str] | None = None,
            timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed `callboard` executable, with nothing from our environment but PATH."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    return subprocess.run([str(CALLBOARD), *args], capture_output=True, text=True,
                          timeout=timeout_s, env={**base, **(env or {})})
