"""`callboard dispatch …`: `lk dispatch` (Twirp AgentDispatchService), plus `explain`."""

from __future__ import annotations

import secrets
from typing import Any

import click
from livekit.protocol.agent import JobStatus
from livekit.protocol.agent_dispatch import AgentDispatch, CreateAgentDispatchRequest

from callboard.cli import explain
from callboard.cli.client import Api, run, segment
from callboard.cli.credentials import Credentials, pass_credentials
from callboard.cli.output import console, emit_json, fail, json_option, proto_json, table, when


def _jobs(d: AgentDispatch) -> str:
    parts = []
    for job in d.state.jobs:
        status = JobStatus.Name(job.state.status).removeprefix("JS_").lower()
        worker = f" on {job.state.worker_id}" if job.state.worker_id else ""
        parts.append(f"{job.id} {status}{worker}")
    return "\n".join(parts) or "none yet"


def _show(title: str, dispatches: list[AgentDispatch], as_json: bool) -> None:
    if as_json:
        emit_json([proto_json(d) for d in dispatches])
        return
    table(title, ["id", "agent", "room", "metadata", "created", "jobs"],
          [(d.id, d.agent_name, d.room, d.metadata, when(d.state.created_at // 1_000_000),
            _jobs(d)) for d in dispatches])


@click.group()
def dispatch() -> None:
    """Agent dispatches: send an agent to a room, list, delete, and explain where one went."""


@dispatch.command("create")
@click.option("--room", help="Room to dispatch to (created if missing).")
@click.option("--new-room", is_flag=True, help="Dispatch to a new room with a generated name.")
@click.option("--agent-name", required=True, help="The agent to dispatch (its agent_name).")
@click.option("--metadata", default="", help="Job metadata (ctx.job.metadata).")
@json_option
@pass_credentials()
def dispatch_create(creds: Credentials, room: str | None, new_room: bool, agent_name: str,
                    metadata: str, as_json: bool) -> None:
    """Dispatch agent --agent-name to --room (or --new-room)."""
    if bool(room) == new_room:
        raise click.UsageError("give exactly one of --room ROOM or --new-room")
    room = room or f"room-{secrets.token_hex(4)}"
    request = CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)

    async def work(a: Api) -> AgentDispatch:
        return await a.lk.agent_dispatch.create_dispatch(request)

    created = run(creds, work, f"dispatching {agent_name} to {room}")
    if as_json:
        emit_json(proto_json(created))
        return
    click.echo(f"dispatched {agent_name} to room {created.room}: {created.id}")
    click.echo(f"see where it went: callboard dispatch explain {created.id}")


@dispatch.command("list")
@click.argument("room")
@json_option
@pass_credentials()
def dispatch_list(creds: Credentials, room: str, as_json: bool) -> None:
    """List the dispatches of ROOM."""

    async def work(a: Api) -> list[AgentDispatch]:
        return await a.lk.agent_dispatch.list_dispatch(room)

    _show(f"dispatches in {room}", run(creds, work, f"listing dispatches of {room}"), as_json)


@dispatch.command("get")
@click.argument("room")
@click.argument("dispatch_id", metavar="ID")
@json_option
@pass_credentials()
def dispatch_get(creds: Credentials, room: str, dispatch_id: str, as_json: bool) -> None:
    """Show dispatch ID of ROOM."""

    async def work(a: Api) -> AgentDispatch | None:
        return await a.lk.agent_dispatch.get_dispatch(dispatch_id, room)

    found = run(creds, work, f"fetching {dispatch_id}")
    if found is None:
        fail(f"dispatch {dispatch_id!r} not found in room {room!r}")
    if as_json:
        emit_json(proto_json(found))
        return
    _show(f"dispatch {dispatch_id}", [found], False)


@dispatch.command("delete")
@click.argument("room")
@click.argument("dispatch_id", metavar="ID")
@json_option
@pass_credentials()
def dispatch_delete(creds: Credentials, room: str, dispatch_id: str, as_json: bool) -> None:
    """Delete dispatch ID of ROOM; its running jobs are told to end."""

    async def work(a: Api) -> AgentDispatch:
        return await a.lk.agent_dispatch.delete_dispatch(dispatch_id, room)

    deleted = run(creds, work, f"deleting {dispatch_id}")
    if as_json:
        emit_json(proto_json(deleted))
    else:
        click.echo(f"deleted dispatch {deleted.id} ({deleted.agent_name} in {deleted.room})")


@dispatch.command("explain")
@click.argument("dispatch_id", metavar="ID")
@json_option
@pass_credentials()
def dispatch_explain(creds: Credentials, dispatch_id: str, as_json: bool) -> None:
    """Explain where dispatch ID went and why — or why it still waits.

    Shows the workers that were candidates (load, status, address), who was offered the job, their
    answers, timings in ms since the dispatch was created, and the outcome.
    """

    async def work(a: Api) -> dict[str, Any]:
        data: dict[str, Any] = await a.get(f"/dispatches/{segment(dispatch_id)}/explain")
        return data

    data = run(creds, work, f"explaining {dispatch_id}")
    if as_json:
        emit_json(data)
        return
    out = console()
    for part in explain.render(data):
        out.print(part)
