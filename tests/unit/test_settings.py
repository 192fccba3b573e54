"""Settings: defaults, then a TOML file, then CALLBOARD_* env, then flags; bad values say which."""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import fields
from pathlib import Path

import pytest

from callboard import settings as settings_module
from callboard.settings import Settings, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "callboard.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = load_settings(env={})
    assert s == Settings()
    assert (s.host, s.port, s.db, s.dev, s.log_level) == (
        "127.0.0.1", 7880, "./callboard.db", False, "info")
    assert (s.availability_timeout_s, s.pending_ttl_s, s.redispatch_grace_s) == (5.0, 600.0, 10.0)
    assert s.job_start_timeout_s == 60.0
    assert (s.redispatch_count, s.register_timeout_s, s.drain_timeout_s) == (1, 10.0, 30.0)
    assert s.ice_servers == () and s.admin_token == "" and s.extra == {}
    assert s.url == "ws://127.0.0.1:7880"


def test_every_field_has_a_docstring() -> None:
    """STYLE: one frozen Settings object with a docstring per field."""
    body = ast.parse(inspect.getsource(Settings)).body[0]
    assert isinstance(body, ast.ClassDef)
    documented = set()
    for stmt, after in zip(body.body, body.body[1:], strict=False):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            documented.add(stmt.target.id)
    assert documented == {f.name for f in fields(Settings)}


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]


# -- each layer ------------------------------------------------------------------------------------


def test_a_toml_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 9000\nhost = "0.0.0.0"\ndev = true\n'
                           'ice_servers = ["stun:a:3478", "turn:u:p@b:3478"]\n'
                           'availability_timeout_s = 2\n')
    s = load_settings(env={}, config_file=path)
    assert (s.port, s.host, s.dev) == (9000, "0.0.0.0", True)
    assert s.ice_servers == ("stun:a:3478", "turn:u:p@b:3478")
    assert s.availability_timeout_s == 2.0 and isinstance(s.availability_timeout_s, float)
    assert s.url == "ws://127.0.0.1:9000"


def test_environment() -> None:
    s = load_settings(env={"CALLBOARD_PORT": "7000", "CALLBOARD_DEV": "yes",
                           "CALLBOARD_PENDING_TTL_S": "1.5", "CALLBOARD_LOG_LEVEL": "DEBUG",
                           "CALLBOARD_ICE_SERVERS": " stun:a , turn:b ,, ",
                           "LIVEKIT_URL": "ws://elsewhere", "CALLBOARD_NOT_A_SETTING": "x"})
    assert (s.port, s.dev, s.pending_ttl_s, s.log_level) == (7000, True, 1.5, "debug")
    assert s.ice_servers == ("stun:a", "turn:b") and s.extra == {}


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBOARD_REDISPATCH_COUNT", "4")
    assert load_settings().redispatch_count == 4


def test_flags() -> None:
    s = load_settings({"port": 8123, "db": "/tmp/x.db", "dev": True, "log_level": "warning"},
                      env={})
    assert (s.port, s.db, s.dev, s.log_level) == (8123, "/tmp/x.db", True, "warning")


def test_flags_that_are_none_are_unset() -> None:
    s = load_settings({"port": None, "dev": None}, env={"CALLBOARD_PORT": "7001"})
    assert s.port == 7001 and s.dev is False


def test_unknown_flags_are_ignored() -> None:
    assert load_settings({"config": "x.toml", "extra": {"a": 1}}, env={}) == Settings()


# -- precedence ------------------------------------------------------------------------------------


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 1001\nhost = "10.0.0.1"\ndb = "file.db"\nlog_level = "error"\n')
    env = {"CALLBOARD_PORT": "1002", "CALLBOARD_HOST": "10.0.0.2"}
    s = load_settings({"port": 1003}, env=env, config_file=path)
    assert s.port == 1003  # flag beats env and file
    assert s.host == "10.0.0.2"  # env beats file
    assert s.db == "file.db" and s.log_level == "error"  # file beats defaults
    assert s.drain_timeout_s == 30.0  # the default where nobody says otherwise


def test_an_env_false_beats_a_file_true(tmp_path: Path) -> None:
    path = write(tmp_path, "dev = true\nstrict_token_dispatch = true\n")
    s = load_settings(env={"CALLBOARD_DEV": "0"}, config_file=path)
    assert s.dev is False and s.strict_token_dispatch is True


def test_a_flag_false_beats_env_true() -> None:
    assert load_settings({"dev": False}, env={"CALLBOARD_DEV": "true"}).dev is False


# -- coercion --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [("1", True), ("true", True), ("Yes", True),
                                             (" ON ", True), ("0", False), ("false", False),
                                             ("no", False), ("OFF", False), ("", False)])
def test_booleans_from_text(text: str, value: bool) -> None:
    assert load_settings(env={"CALLBOARD_DEV": text}).dev is value


@pytest.mark.parametrize(("raw", "value"), [("7881", 7881), (" 7882 ", 7882), (7883, 7883),
                                            (7884.0, 7884)])
def test_integers(raw: object, value: int) -> None:
    s = load_settings({"port": raw}, env={})
    assert s.port == value and type(s.port) is int


@pytest.mark.parametrize(("raw", "value"), [("2.5", 2.5), ("3", 3.0), (4, 4.0), ("1e1", 10.0),
                                            (0, 0.0)])
def test_floats(raw: object, value: float) -> None:
    s = load_settings({"redispatch_grace_s": raw}, env={})
    assert s.redispatch_grace_s == value and type(s.redispatch_grace_s) is float


def test_tuples_from_a_list_or_comma_separated_text() -> None:
    assert load_settings({"ice_servers": ["a", "b"]}, env={}).ice_servers == ("a", "b")
    assert load_settings({"ice_servers": ("a",)}, env={}).ice_servers == ("a",)
    assert load_settings({"ice_servers": "a,b"}, env={}).ice_servers == ("a", "b")
    assert load_settings({"ice_servers": ""}, env={}).ice_servers == ()


def test_log_level_is_normalised() -> None:
    assert load_settings({"log_level": " Warning "}, env={}).log_level == "warning"


@pytest.mark.parametrize(("host", "url"), [("0.0.0.0", "ws://127.0.0.1:7880"),
                                           ("::", "ws://127.0.0.1:7880"),
                                           ("10.1.2.3", "ws://10.1.2.3:7880"),
                                           ("::1", "ws://[::1]:7880"),
                                           ("box.local", "ws://box.local:7880")])
def test_url(host: str, url: str) -> None:
    assert Settings(host=host).url == url


# -- bad values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("port", "http", "an integer"),
        ("port", "", "an integer"),
        ("port", "78.5", "an integer"),
        ("port", 7880.5, "an integer"),
        ("port", True, "an integer"),
        ("port", "70000", "a TCP port"),
        ("port", -1, "a TCP port"),
        ("dev", "maybe", "a boolean"),
        ("availability_timeout_s", "soon", "a number"),
        ("availability_timeout_s", "nan", "a finite number"),
        ("availability_timeout_s", "inf", "a finite number"),
        ("availability_timeout_s", "0", "a duration > 0"),
        ("register_timeout_s", -1, "a duration > 0"),
        ("pending_ttl_s", False, "a number"),
        ("redispatch_grace_s", "-1", "a value >= 0"),
        ("redispatch_count", -2, "a value >= 0"),
        ("webhook_retries", "many", "an integer"),
        ("log_level", "verbose", "debug | info | warning | error"),
        ("host", 127, "a string"),
        ("ice_servers", 5, "a list of strings"),
        ("ice_servers", ["stun:a", 3], "a list of strings"),
        ("ice_servers", {"url": "stun:a"}, "a list of strings"),
    ],
)
def test_a_bad_value_names_the_setting(name: str, raw: object, expected: str) -> None:
    pattern = f"^setting {name}: expected {re.escape(expected)}.*, got "
    with pytest.raises(ValueError, match=pattern):
        load_settings({name: raw}, env={})


def test_a_bad_env_value_names_the_setting() -> None:
    with pytest.raises(ValueError, match="setting redispatch_count: expected an integer, got 'x'"):
        load_settings(env={"CALLBOARD_REDISPATCH_COUNT": "x"})


def test_a_bad_file_value_names_the_setting(tmp_path: Path) -> None:
    path = write(tmp_path, "port = true\n")
    with pytest.raises(ValueError, match="setting port: expected an integer, got True"):
        load_settings(env={}, config_file=path)


def test_a_bad_file_value_overridden_by_a_flag_is_never_read(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = "nope"\n')
    assert load_settings({"port": 1}, env={}, config_file=path).port == 1


def test_a_file_that_is_not_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "port = = 3\n")
    with pytest.raises(ValueError, match=f"config file {path}: not valid TOML"):
        load_settings(env={}, config_file=path)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"config file .*nope\.toml: No such file"):
        load_settings(env={}, config_file=tmp_path / "nope.toml")


# -- unknown keys ----------------------------------------------------------------------------------


def test_unknown_file_keys_go_to_extra(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 7999\nfuture_knob = 3\nlog-level = "debug"\n'
                           '[sip]\nport = 5060\n')
    s = load_settings(env={}, config_file=path)
    assert s.port == 7999 and s.log_level == "info"
    assert s.extra == {"future_knob": 3, "log-level": "debug", "sip": {"port": 5060}}


def test_the_extra_field_is_not_a_setting_of_its_own(tmp_path: Path) -> None:
    path = write(tmp_path, "extra = 1\n")
    assert load_settings(env={"CALLBOARD_EXTRA": "x"}, config_file=path).extra == {"extra": 1}


def test_the_precedence_is_stated_where_it_is_implemented() -> None:
    doc = settings_module.__doc__ or ""
    assert "flags" in doc and "CALLBOARD_" in doc and "TOML" in doc
