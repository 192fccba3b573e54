"""`callboard room …`: `lk room` (Twirp RoomService) — rooms, their participants, data messages."""

from __future__ import annotations

import click
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.models import DataPacket, ParticipantInfo, Room
from livekit.protocol.room import (
    CreateRoomRequest,
    DeleteRoomRequest,
    ListParticipantsRequest,
    ListRoomsRequest,
    SendDataRequest,
)

from callboard.cli.client import Api, run
from callboard.cli.common import Duration
from callboard.cli.credentials import Credentials, pass_credentials
from callboard.cli.output import emit_json, json_option, proto_json, table, when


def _rooms_table(title: str, rooms: list[Room]) -> None:
    table(title, ["name", "sid", "participants", "created", "empty timeout", "max participants",
                  "metadata"],
          [(r.name, r.sid, r.num_participants, when(r.creation_time_ms or r.creation_time * 1000),
            f"{r.empty_timeout}s" if r.empty_timeout else "", r.max_participants or "",
            r.metadata) for r in rooms])


@click.group()
def room() -> None:
    """Rooms: create (optionally with agents), list, delete, participants, data messages."""


@room.command("create")
@click.argument("name")
@click.option("--empty-timeout", type=Duration(), help="Close the room when empty this long "
              "(e.g. 5m).")
@click.option("--departure-timeout", type=Duration(),
              help="Close the room this long after the last participant leaves.")
@click.option("--max-participants", type=click.IntRange(min=0), default=0,
              help="Most participants at once (0: no limit).")
@click.option("--metadata", default="", help="Room metadata.")
@click.option("--agent", "agents", multiple=True, metavar="NAME",
              help="Dispatch this agent to the room as it is created; repeat for more.")
@click.option("--job-metadata", default="", help="Metadata for the jobs of --agent.")
@json_option
@pass_credentials()
def room_create(creds: Credentials, name: str, empty_timeout: float | None,
                departure_timeout: float | None, max_participants: int, metadata: str,
                agents: tuple[str, ...], job_metadata: str, as_json: bool) -> None:
    """Create room NAME (an existing room is returned as it is, like LiveKit does)."""
    request = CreateRoomRequest(
        name=name,
        empty_timeout=int(empty_timeout or 0),
        departure_timeout=int(departure_timeout or 0),
        max_participants=max_participants,
        metadata=metadata,
        agents=[RoomAgentDispatch(agent_name=a, metadata=job_metadata) for a in agents],
    )

    async def work(a: Api) -> Room:
        return await a.lk.room.create_room(request)

    created = run(creds, work, f"creating room {name}")
    if as_json:
        emit_json(proto_json(created))
        return
    with_agents = f" with {', '.join(agents)} dispatched" if agents else ""
    click.echo(f"room {created.name} ({created.sid}){with_agents}")


@room.command("list")
@click.argument("names", nargs=-1)
@json_option
@pass_credentials()
def room_list(creds: Credentials, names: tuple[str, ...], as_json: bool) -> None:
    """List rooms (all, or only NAMES)."""

    async def work(a: Api) -> list[Room]:
        return list((await a.lk.room.list_rooms(ListRoomsRequest(names=list(names)))).rooms)

    rooms = run(creds, work, "listing rooms")
    if as_json:
        emit_json([proto_json(r) for r in rooms])
    else:
        _rooms_table("rooms", rooms)


@room.command("delete")
@click.argument("name")
@json_option
@pass_credentials()
def room_delete(creds: Credentials, name: str, as_json: bool) -> None:
    """Delete room NAME: its participants are removed and its dispatches end."""

    async def work(a: Api) -> None:
        await a.lk.room.delete_room(DeleteRoomRequest(room=name))

    run(creds, work, f"deleting room {name}")
    if as_json:
        emit_json({"room": name, "deleted": True})
    else:
        click.echo(f"deleted room {name}")


@room.group("participants")
def participants() -> None:
    """The participants of a room."""


@participants.command("list")
@click.argument("room_name", metavar="ROOM")
@json_option
@pass_credentials()
def participants_list(creds: Credentials, room_name: str, as_json: bool) -> None:
    """List the participants of ROOM (agents included)."""

    async def work(a: Api) -> list[ParticipantInfo]:
        reply = await a.lk.room.list_participants(ListParticipantsRequest(room=room_name))
        return list(reply.participants)

    people = run(creds, work, f"listing participants of {room_name}")
    if as_json:
        emit_json([proto_json(p) for p in people])
        return
    table(f"participants in {room_name}", ["identity", "name", "sid", "kind", "state", "joined",
                                           "tracks"],
          [(p.identity, p.name, p.sid, ParticipantInfo.Kind.Name(p.kind).lower(),
            ParticipantInfo.State.Name(p.state).lower(),
            when(p.joined_at_ms or p.joined_at * 1000), len(p.tracks)) for p in people])


@room.command("send-data")
@click.argument("room_name", metavar="ROOM")
@click.argument("data")
@click.option("--topic", default="", help="Topic of the message.")
@click.option("--identity", "identities", multiple=True, metavar="IDENTITY",
              help="Send only to this participant; repeat for more (default: everyone).")
@click.option("--lossy", is_flag=True, help="Send lossy (unreliable) instead of reliable.")
@json_option
@pass_credentials()
def send_data(creds: Credentials, room_name: str, data: str, topic: str,
              identities: tuple[str, ...], lossy: bool, as_json: bool) -> None:
    """Send DATA (text) to the participants of ROOM."""
    kind = DataPacket.Kind.LOSSY if lossy else DataPacket.Kind.RELIABLE
    request = SendDataRequest(room=room_name, data=data.encode(), topic=topic, kind=kind,
                              destination_identities=list(identities))

    async def work(a: Api) -> None:
        await a.lk.room.send_data(request)

    run(creds, work, f"sending to {room_name}")
    if as_json:
        emit_json({"room": room_name, "bytes": len(request.data), "topic": topic,
                   "destination_identities": list(identities), "lossy": lossy})
        return
    to = ", ".join(identities) if identities else "everyone"
    click.echo(f"sent {len(request.data)} bytes to {to} in {room_name}"
               + (f" on topic {topic}" if topic else ""))
