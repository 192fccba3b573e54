"""One `Settings` object for the server, loaded in one place with a stated precedence.

Precedence, highest first: command-line flags, environment `CALLBOARD_<NAME>` (upper-case field
name), a TOML config file (`--config`, keys are the field names), then the defaults below.
"""

from __future__ import annotations

import dataclasses
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
    """How many times a job whose worker never came back is dispatched again."""
    register_timeout_s: float = 10.0
    """A worker must send `register` within this long after connecting."""
    ping_interval_s: float = 10.0
    """WebSocket ping interval on /agent; a peer silent for twice this long is dropped."""
    drain_timeout_s: float = 30.0
    """On SIGTERM: how long running jobs may drain before the server exits."""
    strict_token_dispatch: bool = False
    """LiveKit's behaviour: ignore a token's roomConfig.agents when the room already exists."""
    rtc_node_ip: str = ""
    """Address advertised in ICE candidates (rooms issue)."""
    ice_servers: tuple[str, ...] = ()
    """ICE servers handed to clients, e.g. turn:user:pass@host:3478 (none by default)."""
    webhook_retries: int = 5
    """Attempts per webhook delivery, with backoff."""
    retention_events_days: int = 30
    """How long the event log keeps lines."""
    admin_token: str = ""
    """Admin credential; empty means: read `<db>.admin`, creating it at first start."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Unknown config-file keys, kept so a newer config still loads (and is warned about)."""

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"ws://{host}:{self.port}"


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"setting {name}: expected a boolean, got {value!r}")
    if isinstance(default, tuple):
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(str(v) for v in value)
    try:
        return type(default)(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {name}: expected {type(default).__name__}, got {value!r}") from None


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Settings:
    """Merge defaults < config file < environment < flags (flags whose value is None are unset)."""
    env = os.environ if env is None else env
    names = {f.name: f for f in fields(Settings) if f.name != "extra"}
    merged: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if config_file:
        with open(config_file, "rb") as fh:
            for key, value in tomllib.load(fh).items():
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
