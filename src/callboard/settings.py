"""One `Settings` object for the server, loaded in one place with a stated precedence.

Precedence, highest first: command-line flags, environment `CALLBOARD_<NAME>` (upper-case field
name), a TOML config file (`--config`, keys are the field names), then the defaults below.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    """Address to listen on. Use 0.0.0.0 behind a TLS reverse proxy for a team server."""
    port: int = 7880
    """TCP port for every surface (/agent, /twirp, /rtc, /callboard/v1): LiveKit's default."""
    db: str = "./callboard.db"
    """SQLite file. The admin credential is written beside it (`<db>.admin`, mode 0600)."""
    dev: bool = False
    """Ensure a project `dev` with key `devkey` / secret `secret`, and a fixed admin credential."""
    log_level: str = "info"
    """debug | info | warning | error."""
    availability_timeout_s: float = 5.0
    """How long one worker may take to answer an availability request before the next is tried."""
    pending_ttl_s: float = 600.0
    """How long a dispatch with no worker waits in the pending queue before it expires."""
    redispatch_grace_s: float = 10.0
    """After a worker's connection drops, how long its jobs wait for it to migrate them back."""
    redispatch_count: int = 1
    """How many times a failed job is dispatched again: its worker did not come back, or never
    reported it running."""
    job_start_timeout_s: float = 60.0
    """An assigned job whose worker reports nothing of it (running, or an end) within this long
    fails; the worker is told to stop it and the dispatch gets its next attempt. 0: wait forever."""
    register_timeout_s: float = 10.0
    """A worker must send `register` within this long after connecting."""
    ping_interval_s: float = 10.0
    """/agent keep-alive: a worker quiet this long gets a WebSocket ping; one silent for twice this
    long (no frame, no pong) is dropped. 0: never."""
    store_commit_window_ms: float = 1.0
    """Group commit: after the first write arrives, the store writer gathers more for this long
    before committing, or until a job assignment is sent, whichever comes first. API calls are
    acknowledged after the commit; assignments to workers never wait for it, and the commit does
    not compete with the dispatch that is still on its way to a worker. Writes nobody awaits (a
    worker's status report, room events) wait up to 20 ms for one that somebody does."""
    drain_timeout_s: float = 30.0
    """On SIGTERM: how long running jobs may drain before the server exits."""
    strict_token_dispatch: bool = False
    """LiveKit's behaviour: ignore a token's roomConfig.agents when the room already exists."""
    rtc_node_ip: str = ""
    """Address advertised in ICE candidates (rooms issue)."""
    ice_servers: tuple[str, ...] = ()
    """ICE servers handed to clients, e.g. turn:user:pass@host:3478 (none by default). The server's
    own peer connections use only the STUN ones (to learn a NAT's public address)."""
    rtc_ping_interval_s: int = 5
    """How often /rtc clients ping (whole seconds: the LiveKit SDK aborts its process on 0)."""
    rtc_ping_timeout_s: int = 15
    """A /rtc client silent this long (no ping, no message) is removed from its room."""
    room_empty_timeout_s: int = 300
    """A room nobody ever joined closes after this long, unless it sets its own empty_timeout."""
    room_departure_timeout_s: int = 20
    """A room closes this long after its last participant left, unless it sets departure_timeout."""
    rtc_data_packets_per_s: float = 500.0
    """Data rate limit per participant, in packets per second (excess dropped, logged once)."""
    rtc_data_bytes_per_s: float = 4_194_304.0
    """Data rate limit per participant, in bytes per second (excess dropped, logged once)."""
    webhook_retries: int = 5
    """Attempts per webhook delivery, with backoff."""
    retention_events_days: int = 30
    """How long the event log keeps lines (agent log lines included); 0 keeps them forever."""
    retention_jobs_days: int = 30
    """How long finished jobs (and their state history) are kept; 0 keeps them forever."""
    retention_dispatches_days: int = 30
    """How long deleted dispatches (by API, or their room closed) are kept, with their jobs; 0
    keeps them forever."""
    retention_rooms_days: int = 7
    """A stored room older than this with nobody in it is closed by the sweep; 0 never."""
    retention_usage_days: int = 400
    """How many days of per-day usage rows are kept; 0 keeps them forever."""
    retention_sweep_interval_s: float = 3600.0
    """How often the retention sweep runs (first run a minute after start)."""
    enable_recording: bool = True
    """Set `enable_recording` on jobs, so an agent whose LIVEKIT_OBSERVABILITY_URL points here
    uploads its log lines (`callboard logs --job`), traces and session report."""
    metrics_public: bool = False
    """Serve `/metrics` without credentials (every project). Off: the admin credential sees every
    project, a project token (roomAdmin or roomList) only its own."""
    admin_token: str = ""
    """Admin credential; empty means: read `<db>.admin`, creating it at first start."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Unknown config-file keys, kept so a newer config still loads (and is warned about)."""

    @property
    def url(self) -> str:
        """The ws:// URL clients use: a wildcard host becomes loopback, IPv6 gets brackets."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"ws://{host}:{self.port}"


LOG_LEVELS = ("debug", "info", "warning", "error")
_POSITIVE = frozenset(
    {
        "availability_timeout_s",
        "register_timeout_s",
        "ping_interval_s",
        "rtc_ping_interval_s",
        "rtc_ping_timeout_s",
        "rtc_data_packets_per_s",
        "rtc_data_bytes_per_s",
        "retention_sweep_interval_s",
    }
)


def _bad(name: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"setting {name}: expected {expected}, got {value!r}")


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise _bad(name, "a boolean", value)


def _to_int(name: str, value: Any) -> int:
    """A TOML `true` or `2.5` is refused rather than read as 1 or 2."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _bad(name, "an integer", value)


def _to_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _bad(name, "a number", value)
    try:
        number = float(value)
    except ValueError:
        raise _bad(name, "a number", value) from None
    if not math.isfinite(number):
        raise _bad(name, "a finite number", value)
    return number


def _to_tuple(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _bad(name, "a list of strings (or one comma-separated string)", value)


def _to_str(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _bad(name, "a string", value)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Convert a raw value (flag, env text, TOML value) to the type of its default; check it."""
    converted: Any
    if isinstance(default, bool):
        converted = _to_bool(name, value)
    elif isinstance(default, tuple):
        converted = _to_tuple(name, value)
    elif isinstance(default, int):
        converted = _to_int(name, value)
    elif isinstance(default, float):
        converted = _to_float(name, value)
    else:
        converted = _to_str(name, value)
    return _check(name, converted)


def _check(name: str, value: Any) -> Any:
    if name == "log_level":
        value = value.strip().lower()
        if value not in LOG_LEVELS:
            raise _bad(name, " | ".join(LOG_LEVELS), value)
    elif name == "port" and not 0 <= value <= 65535:
        raise _bad(name, "a TCP port 0-65535", value)
    elif name in _POSITIVE and value <= 0:
        raise _bad(name, "a duration > 0", value)
    elif isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise _bad(name, "a value >= 0", value)
    return value


def _read_config(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ValueError(f"config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path}: not valid TOML: {exc}") from None


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Settings:
    """Merge defaults < config file < environment < flags (flags whose value is None are unset).

    Raises ValueError naming the setting (or the config file) when a value is unusable.
    """
    env = os.environ if env is None else env
    names = {f.name for f in fields(Settings) if f.name != "extra"}
    merged: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if config_file:
        for key, value in _read_config(config_file).items():
            (merged if key in names else extra)[key] = value
    for name in names:
        env_value = env.get(f"CALLBOARD_{name.upper()}")
        if env_value is not None:
            merged[name] = env_value
    for name, value in (flags or {}).items():
        if value is not None and name in names:
            merged[name] = value
    defaults = Settings()
    coerced = {k: _coerce(k, v, getattr(defaults, k)) for k, v in merged.items()}
    return dataclasses.replace(defaults, **coerced, extra=extra)
