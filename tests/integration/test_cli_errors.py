"""Bad input and bad days, for every client command: one line, the right exit code, no traceback.

Exit codes: 1 when the server said no or could not be reached, 2 for usage errors (bad flags,
missing credentials, an unknown project, an unusable config file).
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from callboard.cli.main import cli
from tests.support.cli import (
    LK_CONFIG,
    cb,
    creds,
    isolate,
    ok,
    ok_json,
    one_line_error,
    run_exe,
    write_config,
)
from tests.support.server import DEV_KEY, ServerProcess, free_port

# One read-only call of each client command group that talks to a server.
SERVER_COMMANDS = [
    ["room", "list"],
    ["room", "create", "r"],
    ["room", "participants", "list", "r"],
    ["room", "send-data", "r", "x"],
    ["dispatch", "create", "--room", "r", "--agent-name", "a"],
    ["dispatch", "list", "r"],
    ["dispatch", "explain", "AD_x"],
    ["workers", "list"],
    ["workers", "show", "AW_x"],
    ["logs"],
]


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=" ".join)
def test_an_unreachable_server(command: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    one_line_error(cb(*command, "--dev", "--url", url), 1,
                   f"error: cannot reach callboard at {url}: connection refused")


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for tests that change nothing on it."""
    proc = ServerProcess(db=tmp_path_factory.mktemp("shared") / "callboard.db")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=" ".join)
def test_a_wrong_secret(shared_server: ServerProcess, command: list[str]) -> None:
    one_line_error(cb(*command, *creds(shared_server, DEV_KEY, "not-the-secret")), 1,
                   "server said unauthenticated:")


def test_an_unknown_key(shared_server: ServerProcess) -> None:
    one_line_error(cb("room", "list", *creds(shared_server, "APInope", "x")), 1,
                   "server said unauthenticated:")


@pytest.mark.parametrize("command", [*SERVER_COMMANDS, ["token", "create", "--list"]],
                         ids=" ".join)
def test_missing_credentials(command: list[str]) -> None:
    text = one_line_error(cb(*command), 2, "no credentials:", "missing",
                          "~/.livekit/cli-config.yaml (no such file)", "--dev")
    assert ("URL, API key and API secret missing" in text) == (command[0] != "token")


def test_missing_credentials_names_only_what_is_missing() -> None:
    one_line_error(cb("room", "list", env={"LIVEKIT_URL": "ws://h:7880",
                                          "LIVEKIT_API_KEY": "k"}), 2,
                   "API secret missing", "--api-secret", "$CALLBOARD_API_SECRET",
                   "$LIVEKIT_API_SECRET")


def test_an_unknown_project(home: Path) -> None:
    one_line_error(cb("room", "list", "--project", "nope"), 2,
                   "project 'nope' not found in ~/.livekit/cli-config.yaml",
                   "no projects configured")
    write_config(home, LK_CONFIG)
    one_line_error(cb("dispatch", "list", "r", "--project", "nope"), 2,
                   "configured: cloud, staging")


def test_an_invalid_config_file(server: ServerProcess, home: Path) -> None:
    broken = "projects:\n  - name: [oops\n"
    path = write_config(home, broken)
    one_line_error(cb("room", "list"), 2, "~/.livekit/cli-config.yaml is not valid YAML")
    one_line_error(cb("room", "list", "--project", "x"), 2, "is not valid YAML")
    # a command that has its credentials elsewhere does not need the file
    assert ok_json(cb("room", "list", "--json", *creds(server))) == []
    assert path.read_text() == broken


@pytest.mark.parametrize("url", ["http://[::1", "http://h:99999", "ftp://h:1"])
def test_a_malformed_url(url: str) -> None:
    one_line_error(cb("room", "list", "--dev", "--url", url), 2, "bad server URL")


@pytest.fixture
def not_callboard() -> Iterator[str]:
    """An HTTP server that answers everything with an HTML 404, like a stray web server."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def do_POST(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_server_that_is_not_callboard(not_callboard: str) -> None:
    one_line_error(cb("room", "list", "--dev", "--url", not_callboard), 1,
                   "answered HTTP 404 without a Twirp error")
    one_line_error(cb("workers", "list", "--dev", "--url", not_callboard), 1,
                   "answered HTTP 404 on /callboard/v1: is it a callboard server?")


def test_a_port_that_does_not_speak_http() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def babble() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

        thread = threading.Thread(target=babble, daemon=True)
        thread.start()
        port = listener.getsockname()[1]
        result = cb("room", "list", "--dev", "--url", f"http://127.0.0.1:{port}")
        thread.join(5)
    one_line_error(result, 1, "cannot reach callboard")


def all_commands() -> list[list[str]]:
    found: list[list[str]] = []

    def walk(group: click.Group, path: list[str]) -> None:
        for name, command in group.commands.items():
            found.append([*path, name])
            if isinstance(command, click.Group):
                walk(command, [*path, name])

    walk(cli, [])
    return found


@pytest.mark.parametrize("path", [[], *all_commands()], ids=lambda p: " ".join(p) or "callboard")
def test_every_command_has_help(path: list[str]) -> None:
    for flag in ("--help", "-h"):
        out = ok(cb(*path, flag))
        assert out.startswith("Usage: ") and len(out.splitlines()) > 3, out
        description = out.split("\n\n")[1].strip()
        assert description and not description.startswith("Options:"), out


def test_help_needs_no_credentials_or_config(home: Path) -> None:
    write_config(home, "not: [valid\n")
    assert "--agent-name" in ok(cb("dispatch", "create", "--help"))


# -- through the installed executable --------------------------------------------------------


def test_the_executable_works_against_a_server(server: ServerProcess, home: Path) -> None:
    env = {"LIVEKIT_URL": server.ws_url, "LIVEKIT_API_KEY": DEV_KEY,
           "LIVEKIT_API_SECRET": "secret"}
    created = run_exe("dispatch", "create", "--new-room", "--agent-name", "a", "--json",
                      home=home, env=env)
    assert created.returncode == 0, created.stderr
    assert created.stderr == ""  # no warnings (the dev secret is short), no spinner off a TTY
    token = run_exe("token", "create", "--join", "--room", "r", "--identity", "i", home=home,
                    env=env)
    assert token.returncode == 0 and token.stdout.count(".") == 2


def test_the_executable_fails_in_one_line(home: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    unreachable = run_exe("workers", "list", "--dev", "--url", url, home=home)
    assert unreachable.returncode == 1 and unreachable.stdout == ""
    assert unreachable.stderr == f"error: cannot reach callboard at {url}: connection refused\n"
    missing = run_exe("room", "list", home=home)
    assert missing.returncode == 2 and missing.stderr.startswith("error: no credentials:")
    assert missing.stderr.count("\n") == 1
    bad = run_exe("token", "create", "--list", "--valid-for", "forever", "--dev", home=home)
    assert bad.returncode == 2 and "Invalid value for '--valid-for'" in bad.stderr
