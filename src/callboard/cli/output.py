"""How the CLI prints: rich tables for people, `--json` for scripts, one-line errors, exit codes.

Exit codes: 0 ok, 1 the server (or store) said no, 2 usage error (click's own).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

EXIT_REFUSED = 1


def console() -> Console:
    return Console(no_color=not sys.stdout.isatty(), soft_wrap=True)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    tbl = Table(title=title, show_lines=False)
    for col in columns:
        tbl.add_column(col)
    for row in rows:
        tbl.add_row(*("" if v is None else str(v) for v in row))
    console().print(tbl)


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
