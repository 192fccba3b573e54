"""The CLI's small shared pieces: durations, KEY=VALUE options, server URLs, time formatting."""

from __future__ import annotations

import click
import pytest

from callboard.cli.client import check_url, refusal
from callboard.cli.common import http_url, parse_duration_s, parse_pairs
from callboard.cli.output import ago


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("1h", 3600), ("2h30m", 9000), ("1d", 86400), ("1.5h", 5400),
     ("1h0m30s", 3630), ("500ms", 0.5), (" 5M ", 300)],
)
def test_durations_like_go_plus_days(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "1x", "h", "-5m", "5m-", "1h 30m", "0s", "m5", "1e3s"])
def test_malformed_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_s(text)


def test_key_value_pairs() -> None:
    assert parse_pairs(("a=1", "b=x=y", "c="), "--attributes") == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(click.BadParameter, match="not KEY=VALUE"):
        parse_pairs(("novalue",), "--attributes")
    with pytest.raises(click.BadParameter):
        parse_pairs(("=v",), "--attributes")


@pytest.mark.parametrize(
    ("url", "expected"),
    [("ws://h:7880", "http://h:7880"), ("wss://h", "https://h"), ("h:7880", "http://h:7880"),
     ("http://h:1/", "http://h:1/"), ("https://h", "https://h")],
)
def test_http_url(url: str, expected: str) -> None:
    assert http_url(url) == expected


def test_check_url_accepts_livekit_style_urls() -> None:
    assert check_url("ws://127.0.0.1:7880/") == "http://127.0.0.1:7880"
    assert check_url("wss://x.example.com") == "https://x.example.com"


@pytest.mark.parametrize("url", ["http://[::1", "http://h:99999", "ftp://h", "http://"])
def test_check_url_refuses_malformed_urls_as_usage_errors(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        check_url(url)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: bad server URL {url!r}")


def test_refusal_shows_the_twirp_code_and_text() -> None:
    assert refusal("http://h", "not_found", "room 'x' not found", 404) == (
        "server said not_found: room 'x' not found")
    assert "answered HTTP 404 without a Twirp error" in refusal("http://h", "unknown", "", 404)
    assert refusal("http://h", "internal", "", 500) == "server said internal (HTTP 500)"


def test_ago() -> None:
    now = 10_000_000
    assert ago(now - 5_000, now) == "5s ago"
    assert ago(now - 125_000, now) == "2m ago"
    assert ago(now - 3_723_000, now) == "1h02m ago"
    assert ago(now - 90_000_000, now) == "1d01h ago"
    assert ago(now + 5_000, now) == "0s ago"
