"""Which server and key a command uses: `lk`'s rules, with callboard's own environment names first.

Precedence (livekit-wire §7):
1. `--project NAME`: that project of `~/.livekit/cli-config.yaml`, as a whole.
2. URL, key and secret, each from its flag, else `$CALLBOARD_URL` / `$CALLBOARD_API_KEY` /
   `$CALLBOARD_API_SECRET`, else `$LIVEKIT_URL` / `$LIVEKIT_API_KEY` / `$LIVEKIT_API_SECRET`.
3. `--dev`: whatever is still missing from 2 is the dev server's (http://127.0.0.1:7880, devkey,
   secret) — so `--dev --url http://127.0.0.1:7999` works.
4. The default project of the config file, as a whole (like `lk`, it is not mixed with a partial
   set from 2; a warning names what it ignores).

Nothing complete → a usage error (exit 2) that says which of URL / key / secret is missing and where
it looked. The config file is only read when it is needed, so a broken one does not stop a command
that has everything from flags or the environment.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from callboard.cli import config
from callboard.cli.common import EXIT_USAGE
from callboard.cli.output import fail, warn

T = TypeVar("T")

DEV_URL = "http://127.0.0.1:7880"
DEV_KEY = "devkey"
DEV_SECRET = "secret"

FIELDS = ("url", "api_key", "api_secret")
LABELS = {"url": "URL", "api_key": "API key", "api_secret": "API secret"}
FLAGS = {"url": "--url", "api_key": "--api-key", "api_secret": "--api-secret"}
ENV = {"url": "URL", "api_key": "API_KEY", "api_secret": "API_SECRET"}


class CredentialError(Exception):
    """No usable credentials; the message says what is missing and where we looked."""


@dataclass(frozen=True)
class Credentials:
    url: str
    api_key: str
    api_secret: str
    source: str  # for messages: "--project acme", "--dev", "flags/environment", ...


@dataclass(frozen=True)
class CredentialFlags:
    project: str | None = None
    url: str | None = None
    api_key: str | None = None
    api_secret: str | None = None
    dev: bool = False


def resolve(
    flags: CredentialFlags, need_url: bool = True, env: Mapping[str, str] | None = None
) -> Credentials:
    """Apply the precedence above; `CredentialError` or `config.ConfigError` when it fails."""
    env = os.environ if env is None else env
    if flags.project:
        return _named_project(flags.project)
    given = _given(flags, env)
    found = dict(given)
    if flags.dev:
        defaults = {"url": DEV_URL, "api_key": DEV_KEY, "api_secret": DEV_SECRET}
        found = {k: found.get(k) or defaults[k] for k in FIELDS}
    missing = [k for k in FIELDS if not found.get(k) and (need_url or k != "url")]
    if not missing:
        source = "--dev" if flags.dev else "flags/environment"
        return Credentials(found.get("url", ""), found["api_key"], found["api_secret"], source)
    cfg = config.load()
    default = cfg.default()
    if default is None:
        raise CredentialError(_nothing_found(missing, cfg))
    if given:
        ignored = ", ".join(sorted(LABELS[k] for k in given))
        warn(f"using default project {default.name!r} of {config.display_path(cfg.path)}; "
             f"ignoring the {ignored} given without the rest (give URL, key and secret together)")
    return _checked(default, f"default project {default.name}", need_url)


def _given(flags: CredentialFlags, env: Mapping[str, str]) -> dict[str, str]:
    """Each field's first non-empty value among its flag, CALLBOARD_* and LIVEKIT_*."""
    out: dict[str, str] = {}
    for key in FIELDS:
        value = getattr(flags, key) or env.get(f"CALLBOARD_{ENV[key]}") or env.get(
            f"LIVEKIT_{ENV[key]}")
        if value:
            out[key] = value
    return out


def _named_project(name: str) -> Credentials:
    cfg = config.load()
    project = cfg.find(name)
    if project is None:
        where = config.display_path(cfg.path)
        names = ", ".join(p.name for p in cfg.projects)
        known = f"configured: {names}" if names else "no projects configured"
        raise CredentialError(f"project {name!r} not found in {where} ({known}); "
                              f"add it with `callboard project add {name} --url … --api-key … "
                              f"--api-secret …`")
    return _checked(project, f"project {name}", need_url=True)


def _checked(project: config.Project, source: str, need_url: bool) -> Credentials:
    missing = [k for k in FIELDS if not getattr(project, k) and (need_url or k != "url")]
    if missing:
        what = _words([LABELS[k] for k in missing])
        raise CredentialError(f"{source} in {config.display_path(config.config_path())} has no "
                              f"{what}")
    return Credentials(project.url, project.api_key, project.api_secret, source)


def _nothing_found(missing: list[str], cfg: config.CliConfig) -> str:
    what = _words([LABELS[k] for k in missing])
    flags = "/".join(FLAGS[k] for k in missing)
    envs = ", ".join(f"${p}_{ENV[k]}" for p in ("CALLBOARD", "LIVEKIT") for k in missing)
    where = config.display_path(cfg.path)
    if not cfg.path.exists():
        default = f"{where} (no such file)"
    elif cfg.default_project:
        default = f"{where} (default project {cfg.default_project!r} is not in it)"
    else:
        default = f"{where} (no default project)"
    return (f"no credentials: {what} missing; looked at {flags}, {envs} and the default project "
            f"of {default}; use --dev for a local dev server, --project NAME, or "
            f"`callboard project add`")


def _words(items: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def credential_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add lk's credential flags to a command; they reach it as one `CredentialFlags`."""
    options = [
        click.option("--dev", is_flag=True,
                     help=f"Use the local dev server ({DEV_URL}, key {DEV_KEY}, secret "
                          f"{DEV_SECRET}) for whatever is not given otherwise."),
        click.option("--api-secret", metavar="SECRET",
                     help="API secret (default $CALLBOARD_API_SECRET, $LIVEKIT_API_SECRET)."),
        click.option("--api-key", metavar="KEY",
                     help="API key (default $CALLBOARD_API_KEY, $LIVEKIT_API_KEY)."),
        click.option("--url", metavar="URL",
                     help="Server URL, ws(s):// or http(s):// (default $CALLBOARD_URL, "
                          "$LIVEKIT_URL)."),
        click.option("--project", metavar="NAME",
                     help="Use this project of ~/.livekit/cli-config.yaml (default: flags, "
                          "environment, --dev, then its default project)."),
    ]
    for option in options:
        f = option(f)
    return f


def pass_credentials(need_url: bool = True) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Add the credential flags; hand the command its resolved `Credentials` first.

    A usage problem (nothing found, unknown project, unusable config file) ends the command with a
    one-line error and exit code 2.
    """

    def decorate(f: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(f)
        def run(*args: Any, project: str | None, url: str | None, api_key: str | None,
                api_secret: str | None, dev: bool, **kwargs: Any) -> T:
            flags = CredentialFlags(project, url, api_key, api_secret, dev)
            return f(resolve_or_fail(flags, need_url), *args, **kwargs)

        return credential_options(run)

    return decorate


def resolve_or_fail(flags: CredentialFlags, need_url: bool = True) -> Credentials:
    try:
        return resolve(flags, need_url)
    except (CredentialError, config.ConfigError) as exc:
        fail(str(exc), EXIT_USAGE)
