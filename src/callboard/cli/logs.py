"""`callboard logs`: the project's event log — dispatches, jobs, workers, protocol errors.

Reads `GET /callboard/v1/events` page by page (`after` = the last sequence number seen). With
`--follow` it then polls for new events and prints them as they come, until Ctrl-C (exit 0); if the
server goes away meanwhile it says so once on stderr and keeps trying, so a server restart does not
end the stream. `--max-seconds` (hidden) bounds the follow loop for tests and scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import click
from rich.console import Console
from rich.text import Text

from callboard.cli.client import Api, reason, run
from callboard.cli.credentials import Credentials, pass_credentials
from callboard.cli.output import console, emit_json_line, warn, when_precise

PAGE = 500
LEVEL_STYLE = {"warning": "yellow", "error": "bold red", "debug": "dim"}
LABELS = (("room_name", "room"), ("dispatch_id", "dispatch"), ("job_id", "job"),
          ("worker_id", "worker"), ("agent_name", "agent"), ("owner", "developer"))

Event = dict[str, Any]


@dataclass(frozen=True)
class Filters:
    room: str | None
    job: str | None
    dispatch: str | None
    agent_name: str | None
    kind: str | None

    def query(self) -> dict[str, str | None]:
        return {"room": self.room, "job": self.job, "dispatch": self.dispatch,
                "agent_name": self.agent_name, "kind": self.kind}


def line(event: Event) -> Text:
    """One event as one line: time, level, kind, the ids it concerns, the message."""
    level = str(event.get("level", "info"))
    text = Text(f"{when_precise(int(event.get('at_ms', 0)))} ")
    text.append(f"{level:<7} ", style=LEVEL_STYLE.get(level, ""))
    text.append(f"{event.get('kind', ''):<20} ", style="bold")
    ids = " ".join(f"{label}={event[key]}" for key, label in LABELS if event.get(key))
    if ids:
        text.append(ids + " ", style="cyan")
    text.append(str(event.get("message", "")))
    return text


async def catch_up(a: Api, filters: Filters, after: int, emit: Callable[[Event], None]) -> int:
    """Print every event after `after`, page by page; the last sequence number seen."""
    while True:
        page = await a.get("/events", after=after, limit=PAGE, **filters.query())
        events: list[Event] = page.get("events", [])
        for event in events:
            emit(event)
        after = int(page.get("next_after", after))
        if len(events) < PAGE:
            return after


async def follow_events(a: Api, filters: Filters, after: int, emit: Callable[[Event], None],
                 interval_s: float, max_s: float | None) -> None:
    """Poll for new events until the deadline (or forever); survive the server going away."""
    deadline = None if max_s is None else time.monotonic() + max_s
    lost = False
    while deadline is None or time.monotonic() < deadline:
        pause = interval_s if deadline is None else min(interval_s, deadline - time.monotonic())
        await asyncio.sleep(max(0.0, pause))
        try:
            after = await catch_up(a, filters, after, emit)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if not lost:
                warn(f"lost the server at {a.base} ({reason(exc)}); still trying")
            lost = True
            continue
        if lost:
            warn(f"back in touch with {a.base}")
            lost = False


def _printer(as_json: bool) -> Callable[[Event], None]:
    if as_json:
        return emit_json_line
    out: Console = console()
    return lambda event: out.print(line(event))


@click.command()
@click.option("--room", help="Only events of this room.")
@click.option("--job", help="Only events of this job.")
@click.option("--dispatch", "dispatch_id", metavar="ID", help="Only events of this dispatch.")
@click.option("--agent-name", help="Only events of this agent name.")
@click.option("--kind", help="Only these kinds, comma-separated prefixes (e.g. job.,worker.).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--poll-interval", type=float, default=1.0, hidden=True,
              help="Seconds between polls with --follow.")
@click.option("--max-seconds", type=float, default=None, hidden=True,
              help="Stop following after this many seconds (for tests and scripts).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per line (JSON Lines).")
@pass_credentials()
def logs(creds: Credentials, room: str | None, job: str | None, dispatch_id: str | None,
         agent_name: str | None, kind: str | None, follow: bool, poll_interval: float,
         max_seconds: float | None, as_json: bool) -> None:
    """Print the project's event log: dispatches, jobs, workers and protocol errors.

    \b
    Examples:
      callboard logs --room r1
      callboard logs --agent-name my-agent --follow
      callboard logs --kind worker. --json | jq .message
    """
    filters = Filters(room, job, dispatch_id, agent_name, kind)
    emit = _printer(as_json)
    if not follow:
        run(creds, lambda a: catch_up(a, filters, 0, emit))  # lines show progress: no spinner
        return

    async def stream(a: Api) -> None:
        after = await catch_up(a, filters, 0, emit)
        await follow_events(a, filters, after, emit, poll_interval, max_seconds)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a follow ends
        run(creds, stream)
