"""`callboard env`: the environment an agent needs to reach this server, like `lk app env`.

Prints (or writes into a dotenv file) LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET and
LIVEKIT_OBSERVABILITY_URL for the resolved credentials — a developer's key once it was added with
`callboard project add`, so `callboard env --project mine --write .env.local` is the whole setup of
a laptop. Writing replaces only those four lines of the file and keeps every other line (comments,
other variables, their order) as it was; the file is written mode 0600 (it holds a secret).
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import click

from callboard.cli.common import http_url
from callboard.cli.credentials import Credentials, pass_credentials
from callboard.cli.output import emit_json, fail

NAMES = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "LIVEKIT_OBSERVABILITY_URL")
_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def ws_url(url: str) -> str:
    """What livekit-agents wants in LIVEKIT_URL: ws(s)://, whatever the config file holds."""
    base = http_url(url).rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :]
    return "ws://" + base[len("http://") :]


def variables(creds: Credentials) -> dict[str, str]:
    """The four variables, in order; the observability URL is the server's own HTTP base."""
    return {
        "LIVEKIT_URL": ws_url(creds.url),
        "LIVEKIT_API_KEY": creds.api_key,
        "LIVEKIT_API_SECRET": creds.api_secret,
        "LIVEKIT_OBSERVABILITY_URL": http_url(creds.url).rstrip("/"),
    }


def quote(value: str) -> str:
    """A dotenv value: bare when it is safe, else single-quoted the shell's way."""
    return value if re.fullmatch(r"[A-Za-z0-9_./:@%+,=-]*", value) else shlex.quote(value)


def merge(text: str, values: dict[str, str]) -> str:
    """`text` (a dotenv file) with `values` set: lines of those names replaced in place (the
    first occurrence; later duplicates dropped), missing names appended, all else kept."""
    out: list[str] = []
    done: set[str] = set()
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line)
        name = match.group(1) if match else None
        if name in values:
            if name not in done:
                out.append(f"{name}={quote(values[name])}")
                done.add(name)
            continue
        out.append(line)
    out += [f"{name}={quote(value)}" for name, value in values.items() if name not in done]
    return "\n".join(out) + "\n"


def write(path: Path, values: dict[str, str]) -> None:
    try:
        old = path.read_text() if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}")
    new = merge(old, values)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new)
        os.chmod(path, 0o600)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")


@click.command()
@click.option(
    "--write",
    "write_to",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Set the variables in FILE (e.g. .env.local), keeping its other lines.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the variables as a JSON object.")
@pass_credentials()
def env(creds: Credentials, write_to: Path | None, as_json: bool) -> None:
    """Print the LIVEKIT_* variables an agent needs for these credentials (or --write them).

    \b
    Examples:
      callboard env --project mine                 # KEY=value lines, for `eval`/`source`
      callboard env --project mine --write .env.local
    """
    values = variables(creds)
    if write_to is not None:
        write(write_to, values)
        click.echo(f"wrote {', '.join(values)} to {write_to} ({creds.source})", err=True)
        return
    if as_json:
        emit_json(values)
        return
    for name, value in values.items():
        click.echo(f"{name}={quote(value)}")
