"""`callboard token create`: tokens livekit-api's TokenVerifier accepts, and a server too."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from livekit import api
from livekit.api.access_token import Claims

from tests.support.cli import cb, isolate, ok, ok_json, one_line_error, usage_error, write_config
from tests.support.server import DEV_KEY, DEV_SECRET, ServerProcess

KEYS = ["--api-key", "APItest", "--api-secret", "a-test-secret-of-a-decent-length-0123"]


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


def verify(token: str, key: str = KEYS[1], secret: str = KEYS[3]) -> Claims:
    return api.TokenVerifier(key, secret).verify(token)


def test_a_join_token_with_agents_is_what_livekit_api_expects() -> None:
    out = ok(cb("token", "create", "--join", "--room", "r1", "--identity", "alice",
                "--agent", "triage", "--agent", "notes", "--job-metadata", '{"lang": "fr"}',
                *KEYS))
    token = out.strip()
    assert out.count("\n") == 1 and token.count(".") == 2  # the JWT alone: $(…) captures it
    claims = verify(token)
    assert claims.identity == "alice" and claims.name == "alice"
    assert claims.video is not None and claims.video.room_join and claims.video.room == "r1"
    assert not claims.video.room_admin
    assert claims.room_config is not None
    assert [(a.agent_name, a.metadata) for a in claims.room_config.agents] == [
        ("triage", '{"lang": "fr"}'), ("notes", '{"lang": "fr"}')]


def test_json_shows_the_token_and_its_claims() -> None:
    data = ok_json(cb("token", "create", "--join", "--room", "r1", "--identity", "bob",
                      "--name", "Bob B", "--metadata", "m", "--attributes", "team=red",
                      "--attribute", "x=1=2", "--valid-for", "1h", "--json", *KEYS))
    assert set(data) == {"token", "url", "identity", "name", "room", "claims"}
    assert (data["identity"], data["name"], data["room"]) == ("bob", "Bob B", "r1")
    claims = data["claims"]
    assert claims["exp"] - claims["nbf"] == 3600
    assert claims["iss"] == "APItest" and claims["sub"] == "bob"
    assert claims["attributes"] == {"team": "red", "x": "1=2"} and claims["metadata"] == "m"
    assert verify(data["token"]).attributes == {"team": "red", "x": "1=2"}


@pytest.mark.parametrize(("valid_for", "seconds"),
                         [("30s", 30), ("10m", 600), ("2h30m", 9000), ("1d", 86400)])
def test_valid_for(valid_for: str, seconds: int) -> None:
    data = ok_json(cb("token", "create", "--list", "--valid-for", valid_for, "--json", *KEYS))
    assert data["claims"]["exp"] - data["claims"]["nbf"] == seconds


def test_the_default_lifetime_is_lks_five_minutes() -> None:
    claims = ok_json(cb("token", "create", "--list", "--json", *KEYS))["claims"]
    assert claims["exp"] - claims["nbf"] == 300


@pytest.mark.parametrize("valid_for", ["10", "1x", "h", "-5m", "0s", "soon"])
def test_a_malformed_valid_for_is_a_usage_error(valid_for: str) -> None:
    result = cb("token", "create", "--list", "--valid-for", valid_for, *KEYS)
    usage_error(result, "Invalid value for '--valid-for'", "30s, 10m, 1h, 2h30m or 1d")


def test_grants_by_name() -> None:
    data = ok_json(cb("token", "create", "--grant", "roomAdmin,roomList", "--grant",
                      "can_publish=false", "--room", "r", "--json", *KEYS))
    video = data["claims"]["video"]
    assert video["roomAdmin"] and video["roomList"] and video["canPublish"] is False
    claims = verify(data["token"])
    assert claims.video is not None and claims.video.room_admin and claims.video.room_list


def test_lk_style_permission_flags() -> None:
    video = ok_json(cb("token", "create", "--create", "--list", "--admin", "--room", "r",
                       "--json", *KEYS))["claims"]["video"]
    assert video["roomCreate"] and video["roomList"] and video["roomAdmin"]
    assert video["room"] == "r"


@pytest.mark.parametrize(
    ("args", "complaint"),
    [(["--join", "--room", "r"], "--join needs --room and --identity"),
     (["--join", "--identity", "i"], "--join needs --room and --identity"),
     (["--admin"], "--admin needs --room"),
     (["--list", "--agent", "a"], "--agent needs --join"),
     ([], "no permission given"),
     (["--grant", "canPublish=false"], "no permission given"),
     (["--grant", "flyAway"], "unknown grant 'flyAway'"),
     (["--grant", "roomList=maybe"], "NAME or NAME=true|false"),
     (["--list", "--attributes", "novalue"], "not KEY=VALUE")],
)
def test_bad_input_is_a_usage_error(args: list[str], complaint: str) -> None:
    usage_error(cb("token", "create", *args, *KEYS), complaint)


def test_no_url_is_needed_but_a_key_is() -> None:
    ok(cb("token", "create", "--list", env={"LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s"}))
    one_line_error(cb("token", "create", "--list", env={"LIVEKIT_API_KEY": "k"}), 2,
                   "API secret missing")


def test_signed_with_a_configured_project(home: Path) -> None:
    write_config(home, "projects:\n    - name: p\n      url: http://h\n      api_key: APIp\n"
                       "      api_secret: psecret\n")
    data = ok_json(cb("token", "create", "--list", "--project", "p", "--json"))
    assert data["url"] == "http://h" and data["claims"]["iss"] == "APIp"
    verify(data["token"], "APIp", "psecret")


def list_rooms_status(server: ServerProcess, token: str) -> int:
    req = urllib.request.Request(
        f"{server.http_url}/twirp/livekit.RoomService/ListRooms", data=b"{}", method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def test_the_server_accepts_the_token(server: ServerProcess) -> None:
    token = ok(cb("token", "create", "--list", "--dev")).strip()
    assert verify(token, DEV_KEY, DEV_SECRET).video is not None
    assert list_rooms_status(server, token) == 200
    join = ok(cb("token", "create", "--join", "--room", "r", "--identity", "i", "--dev")).strip()
    assert list_rooms_status(server, join) == 403  # no roomList in a join token
    wrong = ok(cb("token", "create", "--list", "--api-key", DEV_KEY, "--api-secret", "nope"))
    assert list_rooms_status(server, wrong.strip()) == 401
