"""How the CLI prints: rich tables for people, `--json` for scripts, one-line errors, exit codes.

Exit codes: 0 ok, 1 the server (or store) said no, 2 usage error (click's own).

Colour and the spinner are for terminals only: piped output has no escape codes, and a table that
is piped is not squeezed to 80 columns (ids would fold mid-word for the next `grep`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

import click
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

from callboard.cli.common import EXIT_REFUSED

F = TypeVar("F", bound=Callable[..., Any])

PIPE_WIDTH = 1000  # wide enough that no row of ours wraps when stdout is not a terminal

__all__ = ["EXIT_REFUSED", "console", "emit_json", "fail", "json_option", "spinner", "table"]


def _is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    tty = _is_tty(stream)
    width = None if tty else int(os.environ.get("COLUMNS") or PIPE_WIDTH)
    no_color = not tty or bool(os.environ.get("NO_COLOR"))  # https://no-color.org
    return Console(file=stream, no_color=no_color, soft_wrap=True, width=width,
                   force_terminal=tty, highlight=False)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def proto_json(msg: Message) -> dict[str, Any]:
    """A protobuf message as JSON with its proto field names, empty fields included."""
    return MessageToDict(msg, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)


def emit_json_line(data: Any) -> None:
    """One compact JSON object per line (JSON Lines), for streams such as `logs`."""
    click.echo(json.dumps(data, sort_keys=True, separators=(",", ":")))


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    tbl = Table(title=title, show_lines=False)
    for col in columns:
        tbl.add_column(col, overflow="fold")
    for row in rows:
        tbl.add_row(*("" if v is None else str(v) for v in row))
    console().print(tbl)


def fields(title: str, pairs: Iterable[tuple[str, Any]]) -> None:
    """One record as a two-column table: field, value."""
    tbl = Table(title=title, show_header=False)
    tbl.add_column("field", style="bold")
    tbl.add_column("value", overflow="fold")
    for name, value in pairs:
        tbl.add_row(name, "" if value is None else str(value))
    console().print(tbl)


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")(f)


@contextlib.contextmanager
def spinner(text: str) -> Iterator[None]:
    """A spinner on stderr while something waits; nothing at all when stderr is not a terminal."""
    if not _is_tty(sys.stderr):
        yield
        return
    with console(stderr=True).status(text):
        yield


def when(ms: int) -> str:
    """Epoch milliseconds as local wall-clock time, to the second."""
    if not ms:
        return ""
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def when_precise(ms: int) -> str:
    stamp = datetime.datetime.fromtimestamp(ms / 1000)
    return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def ago(ms: int, now_ms: int) -> str:
    """`3s ago`, `5m ago`, `2h10m ago`: how long since `ms`."""
    secs = max(0, (now_ms - ms) // 1000)
    if secs < 60:
        return f"{secs}s ago"
    if secs < 3600:
        return f"{secs // 60}m ago"
    if secs < 86400:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m ago"
    return f"{secs // 86400}d{secs % 86400 // 3600:02d}h ago"
