"""`callboard admin …` against a real server process, and offline on a stopped server's database.

Commands run in-process through click's CliRunner (fast, and the output is the user's), plus a few
through the installed `callboard` executable to prove the entry point itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from livekit import api

from callboard import __version__
from callboard.cli.main import cli
from tests.support.server import DEV_ADMIN, ServerProcess, free_port

CALLBOARD = Path(sys.executable).parent / "callboard"
CLEAN_ENV = {"CALLBOARD_ADMIN_TOKEN": None, "CALLBOARD_URL": None}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No credential leaks in from the environment or a callboard.db.admin in the cwd."""
    for name in CLEAN_ENV:
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    yield


def cb(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env={**CLEAN_ENV, **(env or {})},
                              catch_exceptions=False)


def online(server: ServerProcess, *args: str, input: str | None = None) -> Result:
    return cb("admin", "--url", server.http_url, "--admin-token", DEV_ADMIN, *args, input=input)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def assert_one_line_error(result: Result, exit_code: int, *needles: str) -> str:
    assert result.exit_code == exit_code, result.output
    text = result.output.strip()
    assert "\n" not in text and "Traceback" not in text, text
    assert text.startswith("error: "), text
    for needle in needles:
        assert needle in text, text
    return text


def env_lines(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def list_rooms_status(server: ServerProcess, key: str, secret: str) -> int:
    """A Twirp call signed with `key`: 200 when the key works, 401 when it does not."""
    token = api.AccessToken(key, secret).with_grants(api.VideoGrants(room_list=True)).to_jwt()
    req = urllib.request.Request(
        f"{server.http_url}/twirp/livekit.RoomService/ListRooms", data=b"{}", method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def project_names(result: Result) -> list[str]:
    return [p["name"] for p in json.loads(ok(result))]


# -- projects --------------------------------------------------------------------------------------


def test_project_create_list_delete(server: ServerProcess) -> None:
    out = ok(online(server, "project", "create", "acme"))
    assert out.startswith("created project acme (P_")
    created = json.loads(ok(online(server, "project", "create", "beta", "--json")))
    assert created["name"] == "beta" and created["id"].startswith("P_")
    assert project_names(online(server, "project", "list", "--json")) == ["dev", "acme", "beta"]
    table = ok(online(server, "project", "list"))
    assert "acme" in table and "beta" in table and created["id"] in table
    assert ok(online(server, "project", "delete", "acme", "--yes")) == "deleted project acme\n"
    assert project_names(online(server, "project", "list", "--json")) == ["dev", "beta"]


def test_project_delete_asks_first(server: ServerProcess) -> None:
    ok(online(server, "project", "create", "acme"))
    refused = online(server, "project", "delete", "acme", input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert "acme" in project_names(online(server, "project", "list", "--json"))
    ok(online(server, "project", "delete", "acme", input="y\n"))
    assert "acme" not in project_names(online(server, "project", "list", "--json"))


def test_project_errors_come_from_the_server(server: ServerProcess) -> None:
    ok(online(server, "project", "create", "acme"))
    assert_one_line_error(online(server, "project", "create", "acme"), 1, "already_exists")
    assert_one_line_error(online(server, "project", "create", "bad name!"), 1,
                          "invalid_argument", "project name")
    assert_one_line_error(online(server, "project", "delete", "nope", "--yes"), 1, "not_found")
    assert_one_line_error(online(server, "project", "create", "é/../x"), 1, "invalid_argument")
    # names travel in URL paths: odd ones are quoted, never a crash or another route
    assert_one_line_error(online(server, "project", "delete", "é", "--yes"), 1, "not_found")
    assert_one_line_error(online(server, "keys", "list", "a/b?c#d"), 1, "not_found")
    assert_one_line_error(online(server, "keys", "revoke", "API x/y"), 1, "not_found")


# -- keys ------------------------------------------------------------------------------------------


def test_keys_add_prints_what_a_worker_needs(server: ServerProcess) -> None:
    ok(online(server, "project", "create", "acme"))
    out = ok(online(server, "keys", "add", "acme"))
    assert out.splitlines()[0] == "added production key to project acme"
    env = env_lines(out)
    assert set(env) == {"LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"}
    assert env["LIVEKIT_URL"] == server.ws_url
    assert env["LIVEKIT_API_KEY"].startswith("API") and len(env["LIVEKIT_API_SECRET"]) >= 32
    assert list_rooms_status(server, env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]) == 200


def test_keys_add_for_a_developer_as_json(server: ServerProcess) -> None:
    ok(online(server, "project", "create", "acme"))
    key = json.loads(ok(online(server, "keys", "add", "acme", "--developer", "jack", "--json")))
    assert key["developer"] == "jack" and key["kind"] == "developer"
    assert key["url"] == server.ws_url and key["key"].startswith("API") and key["secret"]
    assert list_rooms_status(server, key["key"], key["secret"]) == 200
    text = ok(online(server, "keys", "add", "acme", "--developer", "jill"))
    assert text.splitlines()[0] == "added developer jill key to project acme"
    assert "LIVEKIT_API_SECRET=" in text


def test_keys_list_never_shows_secrets(server: ServerProcess) -> None:
    ok(online(server, "project", "create", "acme"))
    prod = json.loads(ok(online(server, "keys", "add", "acme", "--json")))
    dev = json.loads(ok(online(server, "keys", "add", "acme", "--developer", "jack", "--json")))
    listed = json.loads(ok(online(server, "keys", "list", "acme", "--json")))
    assert [(k["key"], k["kind"], k["developer"]) for k in listed] == [
        (prod["key"], "production", ""), (dev["key"], "developer", "jack")]
    assert all("secret" not in k for k in listed)
    table = ok(online(server, "keys", "list", "acme"))
    assert prod["key"] in table and dev["key"] in table and "jack" in table
    assert prod["secret"] not in table and dev["secret"] not in table


def test_keys_revoke_acts_at_once(server: ServerProcess) -> None:
    ok(online(server, "project", "create", "acme"))
    key = json.loads(ok(online(server, "keys", "add", "acme", "--json")))
    assert list_rooms_status(server, key["key"], key["secret"]) == 200
    out = ok(online(server, "keys", "revoke", key["key"]))
    assert out == f"revoked {key['key']} (0 workers disconnected)\n"
    assert list_rooms_status(server, key["key"], key["secret"]) == 401
    listed = json.loads(ok(online(server, "keys", "list", "acme", "--json")))
    assert [(k["key"], k["revoked"]) for k in listed] == [(key["key"], True)]
    assert_one_line_error(online(server, "keys", "revoke", "APInotakey0000"), 1, "not_found")


def test_keys_of_an_unknown_project(server: ServerProcess) -> None:
    assert_one_line_error(online(server, "keys", "add", "nope"), 1, "not_found", "nope")
    assert_one_line_error(online(server, "keys", "list", "nope"), 1, "not_found")


def test_a_bad_developer_name_is_refused(server: ServerProcess) -> None:
    assert_one_line_error(online(server, "keys", "add", "dev", "--developer", "a b"), 1,
                          "invalid_argument", "developer")


# -- credentials and connection errors -------------------------------------------------------------


def test_a_wrong_admin_token(server: ServerProcess) -> None:
    result = cb("admin", "--url", server.http_url, "--admin-token", "wrong", "project", "list")
    assert_one_line_error(result, 1, "unauthenticated", "wrong admin credential")


def test_an_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cb("admin", "--dev", "--url", url, "project", "list")
    assert_one_line_error(result, 1, f"cannot reach callboard at {url}")


def test_a_port_that_does_not_speak_http() -> None:
    import socket
    import threading

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
        result = cb("admin", "--dev", "--url", f"http://127.0.0.1:{port}", "project", "list")
        thread.join(5)
    assert_one_line_error(result, 1, "cannot reach callboard")


def test_a_missing_credential_is_a_usage_error() -> None:
    result = cb("admin", "--url", "http://127.0.0.1:9", "project", "list")
    assert_one_line_error(result, 2, "no admin credential", "--admin-token", "--dev")


def test_help_needs_no_credential() -> None:
    for args in (["admin", "--help"], ["admin", "project", "--help"],
                 ["admin", "keys", "add", "--help"]):
        result = cb(*args)
        assert result.exit_code == 0 and "Usage:" in result.output, result.output


def test_dev_flag_uses_the_dev_credential(server: ServerProcess) -> None:
    result = cb("admin", "--dev", "--url", server.http_url, "project", "list", "--json")
    assert project_names(result) == ["dev"]


def test_credential_and_url_from_the_environment(server: ServerProcess) -> None:
    result = cb("admin", "project", "list", "--json",
                env={"CALLBOARD_URL": server.http_url, "CALLBOARD_ADMIN_TOKEN": DEV_ADMIN})
    assert project_names(result) == ["dev"]


def test_credential_from_callboard_db_admin_in_the_cwd(server: ServerProcess) -> None:
    Path("callboard.db.admin").write_text(DEV_ADMIN + "\n")
    assert project_names(cb("admin", "--url", server.http_url, "project", "list", "--json")) == [
        "dev"]


@pytest.mark.parametrize("form", ["ws", "bare"])
def test_the_url_may_be_livekits_ws_url_or_host_port(server: ServerProcess, form: str) -> None:
    url = server.ws_url if form == "ws" else f"{server.host}:{server.port}"
    assert project_names(cb("admin", "--dev", "--url", url, "project", "list", "--json")) == [
        "dev"]


def test_db_and_url_together_is_a_usage_error(tmp_path: Path) -> None:
    result = cb("admin", "--db", str(tmp_path / "x.db"), "--url", "http://h", "project", "list")
    assert result.exit_code == 2 and "--db works offline" in result.output


# -- offline, on a stopped server's database -------------------------------------------------------


def test_offline_on_a_stopped_servers_database(server: ServerProcess) -> None:
    ok(online(server, "project", "create", "acme"))
    online_key = json.loads(ok(online(server, "keys", "add", "acme", "--json")))
    assert server.stop() == 0
    db = str(server.db)

    def off(*args: str, input: str | None = None) -> Result:
        return cb("admin", "--db", db, *args, input=input)

    assert project_names(off("project", "list", "--json")) == ["dev", "acme"]
    assert "acme" in ok(off("project", "list"))
    out = ok(off("keys", "add", "acme", "--developer", "jill"))
    env = env_lines(out)
    assert out.splitlines()[0] == "added developer jill key to project acme"
    assert set(env) == {"LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"}  # no server, so no URL
    listed = json.loads(ok(off("keys", "list", "acme", "--json")))
    assert [k["key"] for k in listed] == [online_key["key"], env["LIVEKIT_API_KEY"]]
    assert all("secret" not in k for k in listed)
    assert ok(off("keys", "revoke", online_key["key"])) == f"revoked {online_key['key']}\n"
    ok(off("project", "create", "beta"))
    ok(off("project", "create", "gamma", "--json"))
    ok(off("project", "delete", "gamma", "--yes"))

    server.start()  # the server sees what was done offline
    assert project_names(online(server, "project", "list", "--json")) == ["dev", "acme", "beta"]
    assert list_rooms_status(server, online_key["key"], online_key["secret"]) == 401
    assert list_rooms_status(server, env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]) == 200
    revoked = {k["key"]: k["revoked"]
               for k in json.loads(ok(online(server, "keys", "list", "acme", "--json")))}
    assert revoked == {online_key["key"]: True, env["LIVEKIT_API_KEY"]: False}


def test_offline_errors_are_one_line(server: ServerProcess, tmp_path: Path) -> None:
    server.stop()
    db = str(server.db)
    assert_one_line_error(cb("admin", "--db", db, "project", "create", "dev"), 1,
                          "already exists")
    assert_one_line_error(cb("admin", "--db", db, "project", "create", "bad name"), 2,
                          "project name")
    assert_one_line_error(cb("admin", "--db", db, "keys", "add", "nope"), 1, "'nope' not found")
    assert_one_line_error(cb("admin", "--db", db, "keys", "add", "dev", "--developer", "a/b"), 2,
                          "developer")
    assert_one_line_error(cb("admin", "--db", db, "keys", "list", "nope"), 1, "not found")
    assert_one_line_error(cb("admin", "--db", db, "keys", "revoke", "APInope"), 1, "not found")
    assert_one_line_error(cb("admin", "--db", db, "project", "delete", "nope", "--yes"), 1,
                          "not found")
    missing = str(tmp_path / "missing.db")
    assert_one_line_error(cb("admin", "--db", missing, "project", "list"), 1, "no database at")
    assert not Path(missing).exists()


# -- the installed executable ----------------------------------------------------------------------


def run_exe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CALLBOARD), *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})


def test_the_executable_against_the_server(server: ServerProcess) -> None:
    created = run_exe("admin", "--dev", "--url", server.http_url, "project", "create", "exe")
    assert created.returncode == 0 and created.stdout.startswith("created project exe"), created
    added = run_exe("admin", "--admin-token", DEV_ADMIN, "--url", server.http_url, "keys", "add",
                    "exe", "--developer", "jack")
    assert added.returncode == 0, added
    env = env_lines(added.stdout)
    assert env["LIVEKIT_URL"] == server.ws_url
    assert list_rooms_status(server, env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]) == 200
    listed = run_exe("admin", "--dev", "--url", server.http_url, "project", "list", "--json")
    assert [p["name"] for p in json.loads(listed.stdout)] == ["dev", "exe"]


def test_the_executable_fails_in_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    unreachable = run_exe("admin", "--dev", "--url", url, "project", "list")
    assert unreachable.returncode == 1 and unreachable.stdout == ""
    assert unreachable.stderr.startswith("error: cannot reach callboard")
    assert unreachable.stderr.count("\n") == 1 and "Traceback" not in unreachable.stderr
    no_credential = run_exe("admin", "--url", url, "keys", "list", "dev")
    assert no_credential.returncode == 2 and "no admin credential" in no_credential.stderr


def test_python_dash_m_runs_the_cli() -> None:
    """The test fixture starts the server with `python -m callboard.cli.main`."""
    result = subprocess.run([sys.executable, "-m", "callboard.cli.main", "--version"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and __version__ in result.stdout
