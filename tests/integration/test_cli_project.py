"""`callboard project …` on an lk-written ~/.livekit/cli-config.yaml, and using its projects."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.support.cli import (
    LK_CONFIG,
    cb,
    config_file,
    isolate,
    ok,
    ok_json,
    one_line_error,
    run_exe,
    usage_error,
    write_config,
)
from tests.support.clients import new_project
from tests.support.server import DEV_KEY, DEV_SECRET, ServerProcess


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


def load(home: Path) -> dict[str, object]:
    data: dict[str, object] = YAML(typ="safe").load(config_file(home).read_text())
    return data


def add(name: str, url: str = "http://127.0.0.1:7880", *extra: str) -> str:
    return ok(cb("project", "add", name, "--url", url, "--api-key", f"key-{name}",
                 "--api-secret", f"secret-{name}", *extra))


def test_add_to_an_lk_written_file_keeps_everything_else(home: Path) -> None:
    write_config(home, LK_CONFIG, mode=0o644)
    out = add("local", "ws://127.0.0.1:7880")
    assert out == "added project local to ~/.livekit/cli-config.yaml\n"
    text = config_file(home).read_text()
    for line in LK_CONFIG.splitlines():  # untouched, byte for byte, line by line
        assert line in text.splitlines(), line
    data = load(home)
    assert data["default_project"] == "cloud"
    assert data["projects"][-1] == {  # type: ignore[index]
        "name": "local", "project_id": "", "url": "ws://127.0.0.1:7880", "api_key": "key-local",
        "api_secret": "secret-local"}
    assert stat.S_IMODE(config_file(home).stat().st_mode) == 0o600


def test_list_remove_set_default_round_trip(home: Path) -> None:
    write_config(home, LK_CONFIG)
    add("local", "http://127.0.0.1:7880", "--default")
    listed = ok_json(cb("project", "list", "--json"))
    assert [(p["name"], p["default"]) for p in listed] == [
        ("cloud", False), ("staging", False), ("local", True)]
    assert all("api_secret" not in p for p in listed)
    table = ok(cb("project", "list"))
    assert "local" in table and "wss://my-app-x7k9.livekit.cloud" in table
    assert "cloudsecret" not in table and "secret-local" not in table
    assert ok(cb("project", "set-default", "staging")) == "default project is now staging\n"
    assert load(home)["default_project"] == "staging"
    out = ok(cb("project", "remove", "staging"))
    assert out == "removed project staging (it was the default: there is none now)\n"
    data = load(home)
    assert data["default_project"] == "" and data["theme"] == "dark"
    assert [p["name"] for p in data["projects"]] == ["cloud", "local"]  # type: ignore[attr-defined]
    assert "# a comment someone wrote by hand" in config_file(home).read_text()


def test_first_project_becomes_the_default_in_a_new_file(home: Path) -> None:
    assert add("a") == "added project a (default) to ~/.livekit/cli-config.yaml\n"
    assert add("b") == "added project b to ~/.livekit/cli-config.yaml\n"
    assert load(home)["default_project"] == "a"
    assert stat.S_IMODE(config_file(home).parent.stat().st_mode) == 0o700


def test_refusals(home: Path) -> None:
    add("a")
    one_line_error(cb("project", "add", "a", "--url", "http://h", "--api-key", "k",
                      "--api-secret", "s"), 1, "project 'a' already exists")
    one_line_error(cb("project", "remove", "nope"), 1, "project 'nope' not found",
                   "configured: a")
    one_line_error(cb("project", "set-default", "nope"), 1, "project 'nope' not found")
    usage_error(cb("project", "add", "b", "--url", "127.0.0.1:7880", "--api-key", "k",
                   "--api-secret", "s"), "is not a server URL")
    usage_error(cb("project", "add", "b", "--url", "http://h"), "Missing option '--api-key'")
    assert [p["name"] for p in ok_json(cb("project", "list", "--json"))] == ["a"]


def test_an_invalid_yaml_file_is_never_overwritten(home: Path) -> None:
    broken = "default_project: a\nprojects: [\n  - name: a\n"
    path = write_config(home, broken)
    for args in (["project", "add", "b", "--url", "http://h", "--api-key", "k", "--api-secret",
                  "s"], ["project", "remove", "a"], ["project", "set-default", "a"],
                 ["project", "list"]):
        one_line_error(cb(*args), 2, "~/.livekit/cli-config.yaml is not valid YAML",
                       "will not overwrite")
    assert path.read_text() == broken


def test_commands_use_the_default_project(server: ServerProcess, home: Path) -> None:
    key, secret = new_project(server, "acme")
    ok(cb("project", "add", "acme", "--url", server.ws_url, "--api-key", key, "--api-secret",
          secret))
    ok(cb("room", "create", "acme-room"))
    assert [r["name"] for r in ok_json(cb("room", "list", "--json"))] == ["acme-room"]
    # the dev project does not see acme's room: the right key was used
    assert ok_json(cb("room", "list", "--json", "--dev", "--url", server.http_url)) == []


def test_project_flag_picks_a_project(server: ServerProcess, home: Path) -> None:
    key, secret = new_project(server, "acme")
    write_config(home, LK_CONFIG)  # default: a cloud project we must not talk to
    ok(cb("project", "add", "acme", "--url", server.http_url, "--api-key", key, "--api-secret",
          secret))
    ok(cb("room", "create", "r", "--project", "acme"))
    assert [r["name"] for r in ok_json(cb("room", "list", "--project", "acme", "--json"))] == [
        "r"]
    one_line_error(cb("room", "list", "--project", "nope"), 2, "project 'nope' not found",
                   "configured: cloud, staging, acme")


def test_environment_beats_the_default_project(server: ServerProcess, home: Path) -> None:
    write_config(home, LK_CONFIG)
    env = {"LIVEKIT_URL": server.ws_url, "LIVEKIT_API_KEY": DEV_KEY,
           "LIVEKIT_API_SECRET": "wrong", "CALLBOARD_API_SECRET": DEV_SECRET}
    assert ok_json(cb("room", "list", "--json", env=env)) == []


def test_the_executable_with_a_configured_project(server: ServerProcess, home: Path) -> None:
    added = run_exe("project", "add", "dev", "--url", server.http_url, "--api-key", DEV_KEY,
                    "--api-secret", DEV_SECRET, home=home)
    assert added.returncode == 0, added.stderr
    created = run_exe("room", "create", "exe-room", home=home)
    assert created.returncode == 0 and created.stdout.startswith("room exe-room (RM_"), created
    listed = run_exe("room", "list", home=home)
    assert listed.returncode == 0 and "exe-room" in listed.stdout
    assert "\x1b[" not in listed.stdout  # no colours when not a terminal


def test_admin_keys_add_can_save_the_key_as_a_project(server: ServerProcess, home: Path) -> None:
    admin = ["admin", "--dev", "--url", server.http_url]
    ok(cb(*admin, "project", "create", "acme"))
    result = cb(*admin, "keys", "add", "acme", "--developer", "jack", "--save-project", "acme-jack")
    out = ok(result)
    assert "LIVEKIT_API_SECRET=" in out
    assert result.stderr == (
        "saved as project acme-jack, the default in ~/.livekit/cli-config.yaml\n")
    saved = load(home)["projects"][0]  # type: ignore[index]
    assert saved["url"] == server.ws_url and saved["api_key"] in out and saved["api_secret"] in out
    assert ok_json(cb("workers", "list", "--json")) == []  # acme's default-project key works
    again = cb(*admin, "keys", "add", "acme", "--save-project", "acme-jack")
    one_line_error(again, 2, "project 'acme-jack' already exists")
    keys = ok_json(cb(*admin, "keys", "list", "acme", "--json"))
    assert len(keys) == 1  # refused before a key was made
    server.stop()
    one_line_error(cb("admin", "--db", str(server.db), "keys", "add", "acme", "--save-project",
                      "x"), 2, "--save-project needs the server's URL")
