"""Credential precedence, as `lk` has it: --project, flags/env, --dev, the default project."""

from __future__ import annotations

from pathlib import Path

import pytest

from callboard.cli import config
from callboard.cli.credentials import CredentialError, CredentialFlags, Credentials, resolve
from tests.support.cli import LK_CONFIG, isolate, write_config

CLOUD = Credentials("wss://my-app-x7k9.livekit.cloud", "APIcloudkey", "cloudsecret",
                    "default project cloud")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


def test_flags() -> None:
    got = resolve(CredentialFlags(url="http://h:1", api_key="k", api_secret="s"), env={})
    assert got == Credentials("http://h:1", "k", "s", "flags/environment")


def test_callboard_env_beats_livekit_env_field_by_field() -> None:
    env = {"CALLBOARD_URL": "http://cb", "LIVEKIT_URL": "http://lk", "LIVEKIT_API_KEY": "lkkey",
           "CALLBOARD_API_SECRET": "cbsecret", "LIVEKIT_API_SECRET": "lksecret"}
    got = resolve(CredentialFlags(), env=env)
    assert (got.url, got.api_key, got.api_secret) == ("http://cb", "lkkey", "cbsecret")


def test_flags_beat_the_environment() -> None:
    env = {"LIVEKIT_URL": "http://lk", "LIVEKIT_API_KEY": "lkkey", "LIVEKIT_API_SECRET": "x"}
    got = resolve(CredentialFlags(api_key="flagkey"), env=env)
    assert (got.url, got.api_key, got.api_secret) == ("http://lk", "flagkey", "x")


def test_project_beats_everything(home: Path) -> None:
    write_config(home, LK_CONFIG)
    env = {"LIVEKIT_URL": "http://lk", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s"}
    got = resolve(CredentialFlags(project="staging", url="http://flag", dev=True), env=env)
    assert got == Credentials("https://staging.example.com", "APIstaging", "stagingsecret",
                              "project staging")


def test_dev_fills_only_what_is_missing() -> None:
    assert resolve(CredentialFlags(dev=True), env={}) == Credentials(
        "http://127.0.0.1:7880", "devkey", "secret", "--dev")
    got = resolve(CredentialFlags(dev=True, url="http://127.0.0.1:7999"), env={})
    assert (got.url, got.api_key, got.api_secret) == ("http://127.0.0.1:7999", "devkey", "secret")
    env = {"LIVEKIT_API_KEY": "envkey", "LIVEKIT_API_SECRET": "envsecret"}
    got = resolve(CredentialFlags(dev=True), env=env)
    assert (got.url, got.api_key) == ("http://127.0.0.1:7880", "envkey")


def test_dev_beats_the_default_project(home: Path) -> None:
    write_config(home, LK_CONFIG)
    assert resolve(CredentialFlags(dev=True), env={}).source == "--dev"


def test_the_default_project_when_nothing_else(home: Path) -> None:
    write_config(home, LK_CONFIG)
    assert resolve(CredentialFlags(), env={}) == CLOUD


def test_a_partial_set_falls_back_to_the_whole_default_project_with_a_warning(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(home, LK_CONFIG)
    assert resolve(CredentialFlags(url="http://elsewhere"), env={}) == CLOUD
    err = capsys.readouterr().err
    assert "using default project 'cloud'" in err and "ignoring the URL" in err


def test_a_token_needs_no_url() -> None:
    got = resolve(CredentialFlags(api_key="k", api_secret="s"), need_url=False, env={})
    assert (got.url, got.api_key, got.api_secret) == ("", "k", "s")


def test_nothing_found_says_what_is_missing_and_where_it_looked() -> None:
    with pytest.raises(CredentialError) as info:
        resolve(CredentialFlags(), env={"LIVEKIT_URL": "http://h"})
    text = str(info.value)
    assert "API key and API secret missing" in text
    for place in ("--api-key/--api-secret", "$CALLBOARD_API_KEY", "$LIVEKIT_API_SECRET",
                  "~/.livekit/cli-config.yaml (no such file)", "--dev", "--project"):
        assert place in text, place
    assert "$LIVEKIT_URL" not in text  # it was found


def test_nothing_found_with_a_config_without_default(home: Path) -> None:
    write_config(home, "projects: []\n")
    with pytest.raises(CredentialError, match=r"URL, API key and API secret missing.*"
                                              r"\(no default project\)"):
        resolve(CredentialFlags(), env={})
    write_config(home, "default_project: gone\nprojects: []\n")
    with pytest.raises(CredentialError, match="default project 'gone' is not in it"):
        resolve(CredentialFlags(), env={})


def test_an_unknown_project_lists_the_known_ones(home: Path) -> None:
    write_config(home, LK_CONFIG)
    with pytest.raises(CredentialError, match=r"project 'nope' not found in "
                                              r"~/.livekit/cli-config.yaml \(configured: cloud, "
                                              r"staging\)"):
        resolve(CredentialFlags(project="nope"), env={})
    write_config(home, "")
    with pytest.raises(CredentialError, match="no projects configured"):
        resolve(CredentialFlags(project="nope"), env={})


def test_a_project_without_a_secret(home: Path) -> None:
    write_config(home, "projects:\n    - name: half\n      url: http://h\n      api_key: k\n")
    with pytest.raises(CredentialError, match=r"project half in .* has no API secret"):
        resolve(CredentialFlags(project="half"), env={})


def test_a_broken_config_only_matters_when_it_is_needed(home: Path) -> None:
    write_config(home, "projects: [\n")
    got = resolve(CredentialFlags(url="http://h", api_key="k", api_secret="s"), env={})
    assert got.api_key == "k"
    assert resolve(CredentialFlags(dev=True), env={}).api_key == "devkey"
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        resolve(CredentialFlags(), env={})
