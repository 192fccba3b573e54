"""Small pieces every `callboard` command shares: server URLs, durations, key=value options.

Exit codes, for every command: 0 ok, 1 the server (or the local config) said no or could not be
reached, 2 usage error — a bad flag value, missing credentials, an unusable config file.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import click

EXIT_REFUSED = 1
EXIT_USAGE = 2

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def http_url(url: str) -> str:
    """ws(s):// becomes http(s)://, and a bare `host:port` gets http://."""
    if url.startswith("ws://"):
        return "http://" + url[5:]
    if url.startswith("wss://"):
        return "https://" + url[6:]
    if "://" not in url:
        return "http://" + url
    return url


def parse_duration_s(text: str) -> float:
    """`30s`, `10m`, `1h`, `2h30m`, `1d`, `1.5h` (Go's style, plus days) -> seconds.

    A bare number is refused: `--valid-for 10` could mean seconds or minutes.
    """
    spec = text.strip().lower()
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(spec):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if not spec or pos != len(spec) or total <= 0:
        raise ValueError(f"{text!r} is not a positive duration: use e.g. 30s, 10m, 1h, 2h30m or 1d")
    return total


if TYPE_CHECKING:  # recent clicks type ParamType by its value; older ones cannot subscript it
    _DurationBase = click.ParamType[float, Any]
else:
    _DurationBase = click.ParamType


class Duration(_DurationBase):
    """A click parameter for durations; a malformed one is a usage error (exit 2)."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration_s(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def parse_pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    """`("k=v", "a=b")` -> `{"k": "v", "a": "b"}`; anything without `=` is a usage error."""
    pairs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        pairs[key] = value
    return pairs
