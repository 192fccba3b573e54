"""`callboard env`: the four variables, and a dotenv file merged without losing its other lines."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from callboard.cli.credentials import Credentials
from callboard.cli.env import merge, quote, variables, write, ws_url
from tests.support.cli import cb, isolate, usage_error


def test_ws_url() -> None:
    assert ws_url("http://h:7880") == "ws://h:7880"
    assert ws_url("https://cb.example.com/") == "wss://cb.example.com"
    assert ws_url("wss://cb.example.com") == "wss://cb.example.com"
    assert ws_url("h:7880") == "ws://h:7880"


def test_variables() -> None:
    got = variables(Credentials("https://cb.example.com", "APIk", "s3", "x"))
    assert got == {"LIVEKIT_URL": "wss://cb.example.com", "LIVEKIT_API_KEY": "APIk",
                   "LIVEKIT_API_SECRET": "s3",
                   "LIVEKIT_OBSERVABILITY_URL": "https://cb.example.com"}


def test_merge_replaces_in_place_and_keeps_everything_else() -> None:
    text = ("# my settings\nOPENAI_API_KEY=sk-1\nLIVEKIT_URL=ws://old\n\n"
            "export LIVEKIT_API_KEY=old\nLIVEKIT_URL=dup\nTAIL='x y'")
    got = merge(text, {"LIVEKIT_URL": "ws://new", "LIVEKIT_API_KEY": "k",
                       "LIVEKIT_API_SECRET": "s"})
    assert got == ("# my settings\nOPENAI_API_KEY=sk-1\nLIVEKIT_URL=ws://new\n\n"
                   "LIVEKIT_API_KEY=k\nTAIL='x y'\nLIVEKIT_API_SECRET=s\n")
    assert merge("", {"A": "1"}) == "A=1\n"


def test_quote() -> None:
    assert quote("ws://h:1") == "ws://h:1"
    assert quote("a b$c") == "'a b$c'"


def test_write_is_private(tmp_path: Path) -> None:
    path = tmp_path / ".env.local"
    path.write_text("KEEP=1\n")
    path.chmod(0o644)
    write(path, {"LIVEKIT_API_SECRET": "s"})
    assert path.read_text() == "KEEP=1\nLIVEKIT_API_SECRET=s\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_command_prints_and_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)
    out = cb("env", "--url", "http://10.0.0.1:7880", "--api-key", "k", "--api-secret", "s")
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines() == [
        "LIVEKIT_URL=ws://10.0.0.1:7880", "LIVEKIT_API_KEY=k", "LIVEKIT_API_SECRET=s",
        "LIVEKIT_OBSERVABILITY_URL=http://10.0.0.1:7880"]
    (tmp_path / "cwd" / ".env.local").write_text("OTHER=1\n")
    done = cb("env", "--dev", "--write", ".env.local")
    assert done.exit_code == 0 and "wrote LIVEKIT_URL" in done.stderr
    assert (tmp_path / "cwd" / ".env.local").read_text().splitlines()[:2] == [
        "OTHER=1", "LIVEKIT_URL=ws://127.0.0.1:7880"]


def test_missing_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)
    done = cb("env")
    assert done.exit_code == 2 and "no credentials" in done.stderr
    usage_error(cb("env", "--write"), "requires an argument")
