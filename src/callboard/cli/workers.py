"""`callboard workers …`: the agent workers connected to a project, as the server sees them now."""

from __future__ import annotations

import time
from typing import Any

import click

from callboard.cli.client import Api, run, segment
from callboard.cli.credentials import Credentials, pass_credentials
from callboard.cli.output import ago, emit_json, fields, json_option, table, warn, when

COLUMNS = ["id", "agent name", "developer", "version", "load", "status", "jobs", "address",
           "connected since"]
CROSSTALK_FIX = (
    "give each developer a key of their own (callboard admin keys add PROJECT "
    "--developer NAME): their workers then get only their own dispatches"
)


def _since(ms: int, now_ms: int) -> str:
    return f"{when(ms)} ({ago(ms, now_ms)})" if ms else ""


def _row(w: dict[str, Any], now_ms: int) -> list[Any]:
    return [w["id"], w.get("agent_name") or "(unnamed)", w.get("developer") or "production",
            w.get("version", ""), f"{float(w.get('load', 0)):.2f}",
            w.get("status", "") + (" CROSSTALK" if w.get("crosstalk") else ""),
            len(w.get("jobs", [])), w.get("remote", ""),
            _since(w.get("connected_at_ms", 0), now_ms)]


@click.group()
def workers() -> None:
    """Agent workers connected now: who serves which agent, their load, jobs and address."""


@workers.command("list")
@click.option("--agent-name", help="Only workers registered for this agent name.")
@json_option
@pass_credentials()
def workers_list(creds: Credentials, agent_name: str | None, as_json: bool) -> None:
    """List the project's connected workers."""

    async def work(a: Api) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await a.get("/workers", agent_name=agent_name))["workers"]
        return found

    found = run(creds, work, "listing workers")
    if as_json:
        emit_json(found)
        return
    now_ms = int(time.time() * 1000)
    title = f"workers for {agent_name!r}" if agent_name is not None else "workers"
    table(title, COLUMNS, [_row(w, now_ms) for w in found])
    reasons = sorted({w["crosstalk"] for w in found if w.get("crosstalk")})
    for why in reasons:
        warn(f"crosstalk: {why}; {CROSSTALK_FIX}")


@workers.command("show")
@click.argument("worker_id", metavar="ID")
@json_option
@pass_credentials()
def workers_show(creds: Credentials, worker_id: str, as_json: bool) -> None:
    """Show worker ID: registration, status, load and the jobs it holds."""

    async def work(a: Api) -> dict[str, Any]:
        found: dict[str, Any] = await a.get(f"/workers/{segment(worker_id)}")
        return found

    w = run(creds, work, f"fetching worker {worker_id}")
    if as_json:
        emit_json(w)
        return
    now_ms = int(time.time() * 1000)
    fields(f"worker {w['id']}", [
        ("agent name", w.get("agent_name") or "(unnamed: automatic dispatch)"),
        ("developer", w.get("developer") or "production"),
        ("api key", w.get("api_key", "")),
        ("namespace", w.get("namespace", "")),
        ("job type", w.get("job_type", "")),
        ("version", w.get("version", "")),
        ("status", w.get("status", "")),
        ("load", f"{float(w.get('load', 0)):.2f}"),
        ("jobs", "\n".join(w.get("jobs", [])) or "none"),
        ("reported job count", w.get("reported_job_count", 0)),
        ("address", w.get("remote", "")),
        ("crosstalk", f"{w['crosstalk']}; {CROSSTALK_FIX}" if w.get("crosstalk") else "none"),
        ("connected since", _since(w.get("connected_at_ms", 0), now_ms)),
    ])
