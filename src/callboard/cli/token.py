"""`callboard token create`: access tokens, as `lk token create` makes them.

The token is signed locally with the API key and secret (no server is contacted, so no URL is
needed). `--agent` puts `roomConfig.agents` in the token: when the holder joins and the room is
created, those agents are dispatched to it — the usual way to test an agent from a client app.
"""

from __future__ import annotations

import dataclasses
import datetime
import warnings
from typing import Any

import click
import jwt
from jwt.warnings import InsecureKeyLengthWarning
from livekit import api
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration

from callboard.cli.common import Duration, parse_pairs
from callboard.cli.credentials import Credentials, pass_credentials
from callboard.cli.output import emit_json

DEFAULT_VALID_FOR = "5m"  # lk's default


def _bool_grants() -> dict[str, str]:
    """Every yes/no video grant, by a normalised name (no `_`, lower case) -> the field name.

    So `roomAdmin` (lk's spelling, the JWT's), `room_admin` and `roomadmin` all work.
    """
    not_flags = ("room", "destination_room", "can_publish_sources")
    return {
        f.name.replace("_", ""): f.name
        for f in dataclasses.fields(api.VideoGrants)
        if f.name not in not_flags
    }


GRANTS = _bool_grants()


def parse_grants(values: tuple[str, ...]) -> dict[str, bool]:
    """`("roomAdmin,roomList", "canPublish=false")` -> `{"room_admin": True, ...}`."""
    out: dict[str, bool] = {}
    for value in values:
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, _, flag = item.partition("=")
            field = GRANTS.get(name.replace("_", "").lower())
            if field is None:
                known = ", ".join(sorted({_camel(f) for f in GRANTS.values()}))
                raise click.BadParameter(f"unknown grant {name!r} (known: {known})",
                                         param_hint="--grant")
            if flag.lower() not in ("", "true", "false"):
                raise click.BadParameter(f"{item!r}: a grant is NAME or NAME=true|false",
                                         param_hint="--grant")
            out[field] = flag.lower() != "false"
    return out


def _camel(name: str) -> str:
    return "".join(w.capitalize() if i else w for i, w in enumerate(name.split("_")))


@click.group()
def token() -> None:
    """Access tokens for clients, agents and scripts."""


@token.command("create")
@click.option("--join", is_flag=True, help="Allow joining --room as --identity.")
@click.option("--create", "can_create", is_flag=True, help="Allow creating and deleting rooms.")
@click.option("--list", "can_list", is_flag=True, help="Allow listing rooms.")
@click.option("--admin", is_flag=True, help="Allow moderating --room (and dispatching to it).")
@click.option("--room", help="Room name (needed with --join and --admin).")
@click.option("--identity", help="Participant identity (needed with --join).")
@click.option("--name", help="Participant name (default: the identity).")
@click.option("--metadata", help="Participant metadata.")
@click.option("--attributes", "--attribute", "attributes", multiple=True, metavar="KEY=VALUE",
              help="Participant attribute; repeat for more.")
@click.option("--agent", "agents", multiple=True, metavar="NAME",
              help="Dispatch this agent when the room is created by the holder; repeat for more "
                   "(needs --join).")
@click.option("--job-metadata", default="", help="Metadata for the jobs of --agent.")
@click.option("--valid-for", type=Duration(), default=DEFAULT_VALID_FOR, show_default=True,
              help="How long the token is valid: 30s, 10m, 1h, 2h30m, 1d.")
@click.option("--grant", "grants", multiple=True, metavar="GRANTS",
              help="More video grants, comma-separated: roomAdmin,roomList,canPublish=false,…")
@click.option("--json", "as_json", is_flag=True, help="Print the token and its claims as JSON.")
@pass_credentials(need_url=False)
def token_create(creds: Credentials, join: bool, can_create: bool, can_list: bool, admin: bool,
                 room: str | None, identity: str | None, name: str | None, metadata: str | None,
                 attributes: tuple[str, ...], agents: tuple[str, ...], job_metadata: str,
                 valid_for: float, grants: tuple[str, ...], as_json: bool) -> None:
    """Create an access token and print it (the JWT alone, so `$(…)` captures it).

    \b
    Example: a token to join room r1 as alice, with agent my-agent dispatched to the room:
      callboard token create --join --room r1 --identity alice --agent my-agent --dev
    """
    video = _video_grants(join, can_create, can_list, admin, room or "", parse_grants(grants))
    if join and not (room and identity):
        raise click.UsageError("--join needs --room and --identity")
    if admin and not room:
        raise click.UsageError("--admin needs --room")
    if agents and not join:
        raise click.UsageError("--agent needs --join: agents are dispatched when the holder joins")
    at = api.AccessToken(creds.api_key, creds.api_secret).with_grants(video)
    at.with_ttl(datetime.timedelta(seconds=valid_for))
    if identity:
        at.with_identity(identity).with_name(name or identity)
    elif name:
        at.with_name(name)
    if metadata:
        at.with_metadata(metadata)
    if attrs := parse_pairs(attributes, "--attributes"):
        at.with_attributes(attrs)
    if agents:
        dispatches = [RoomAgentDispatch(agent_name=a, metadata=job_metadata) for a in agents]
        at.with_room_config(RoomConfiguration(agents=dispatches))
    jwt_text = _sign(at)
    if as_json:
        emit_json(_describe(jwt_text, creds, identity, name or identity, room))
    else:
        click.echo(jwt_text)


def _video_grants(join: bool, can_create: bool, can_list: bool, admin: bool, room: str,
                  extra: dict[str, bool]) -> api.VideoGrants:
    chosen: dict[str, Any] = {}
    for field, on in (("room_join", join), ("room_create", can_create), ("room_list", can_list),
                      ("room_admin", admin)):
        if on:
            chosen[field] = True
    chosen.update(extra)
    if not any(v is True for v in chosen.values()):
        raise click.UsageError("no permission given: use --join, --create, --list, --admin or "
                               "--grant NAME,…")
    return api.VideoGrants(room=room, **chosen)


def _sign(at: api.AccessToken) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # lk's dev secret is short
        return at.to_jwt()


def _describe(token_text: str, creds: Credentials, identity: str | None, name: str | None,
              room: str | None) -> dict[str, Any]:
    claims = jwt.decode(token_text, options={"verify_signature": False})
    return {"token": token_text, "url": creds.url, "identity": identity or "",
            "name": name or "", "room": room or "", "claims": claims}
