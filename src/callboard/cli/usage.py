"""`callboard usage`: the project's usage per developer and day (`GET /callboard/v1/usage`).

Dispatches, agent sessions (a job from its assignment to its end) and participant sessions (a
non-agent participant from join to leave), with their minutes; sessions still running count once
they end. `--since` takes a day (YYYY-MM-DD) or a number of days (`7d`, today included).
"""

from __future__ import annotations

from typing import Any

import click

from callboard.cli.client import Api, run
from callboard.cli.credentials import Credentials, pass_credentials
from callboard.cli.output import emit_json, json_option, table

COLUMNS = [
    "day",
    "developer",
    "dispatches",
    "agent sessions",
    "agent minutes",
    "participant sessions",
    "participant minutes",
]


def _row(day: str, who: str, u: dict[str, Any]) -> list[Any]:
    return [
        day,
        who,
        u["dispatches"],
        u["agent_sessions"],
        f"{u['agent_session_minutes']:.2f}",
        u["participant_sessions"],
        f"{u['participant_minutes']:.2f}",
    ]


@click.command()
@click.option(
    "--since",
    default="30d",
    show_default=True,
    help="First day: YYYY-MM-DD, or Nd for the last N days.",
)
@click.option("--developer", help="Only this developer's usage.")
@json_option
@pass_credentials()
def usage(creds: Credentials, since: str, developer: str | None, as_json: bool) -> None:
    """Usage per developer and day: dispatches, agent-session and participant minutes."""

    async def work(a: Api) -> dict[str, Any]:
        found: dict[str, Any] = await a.get("/usage", since=since, developer=developer)
        return found

    body = run(creds, work, "fetching usage")
    if as_json:
        emit_json(body)
        return
    rows = [_row(d["day"], d["developer"] or "production", d) for d in body["days"]]
    rows += [_row("total", who, u) for who, u in sorted(body["totals"].items())]
    table(f"usage since {body['since']}", COLUMNS, rows)
