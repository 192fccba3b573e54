"""Twirp server APIs on aiohttp (livekit-wire §4): `POST /twirp/livekit.<Service>/<Method>`.

Bodies are binary protobuf (`application/protobuf`) or protojson (`application/json`); the reply
uses the request's format. Every failure is a Twirp error JSON with its code and HTTP status.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import agent_dispatch as dpb
from livekit.protocol import room as rpb
from livekit.protocol.rtc import UpdateSubscription

from callboard.protocol import convert
from callboard.protocol.errors import ApiError, InvalidArgument
from callboard.rooms.contract import RoomView
from callboard.rooms.state import DataKind
from callboard.rtc.manager import RoomManager
from callboard.server import services
from callboard.server.auth import Caller, authenticate, request_token, require
from callboard.server.hub import Hub
from callboard.store.base import Room

log = logging.getLogger("callboard.twirp")

MAX_BODY_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Api:
    """What a handler works with: the dispatch hub and the live rooms."""

    hub: Hub
    rooms: RoomManager


Handler = Callable[[Api, Caller, Any], Awaitable[Message]]


@dataclass(frozen=True)
class Method:
    request_type: type[Message]
    handler: Handler


def twirp_error(exc: ApiError) -> web.Response:
    return web.json_response(exc.to_json(), status=exc.http_status)


# -- AgentDispatchService


async def create_dispatch(api: Api, caller: Caller, req: dpb.CreateAgentDispatchRequest) -> Message:
    require(caller, "room_admin", room=req.room)
    if req.attributes:  # none: nothing to measure (most calls)
        services.validate_attributes(dict(req.attributes))
    agent = services.AgentRequest(req.agent_name, req.metadata)
    record = await services.create_dispatch(
        api.hub, caller, req.room, agent, before_ack=lambda room: _open_live(api, caller, room)
    )
    return convert.agent_dispatch(record, services.jobs_of(api.hub, record))


async def delete_dispatch(api: Api, caller: Caller, req: dpb.DeleteAgentDispatchRequest) -> Message:
    require(caller, "room_admin", room=req.room)
    record = await services.delete_dispatch(api.hub, caller, req.dispatch_id, req.room)
    return convert.agent_dispatch(record, services.jobs_of(api.hub, record))


async def list_dispatch(api: Api, caller: Caller, req: dpb.ListAgentDispatchRequest) -> Message:
    require(caller, "room_admin", room=req.room)
    records = services.list_dispatches(api.hub, caller, req.room, req.dispatch_id)
    return dpb.ListAgentDispatchResponse(
        agent_dispatches=[convert.agent_dispatch(r, services.jobs_of(api.hub, r)) for r in records]
    )


# -- RoomService: rooms


async def create_room(api: Api, caller: Caller, req: rpb.CreateRoomRequest) -> Message:
    require(caller, "room_create")
    config = services.RoomConfig(
        metadata=req.metadata,
        empty_timeout_s=req.empty_timeout,
        departure_timeout_s=req.departure_timeout,
        max_participants=req.max_participants,
        agents=[services.AgentRequest(a.agent_name, a.metadata) for a in req.agents],
    )
    opened: list[RoomView | None] = []
    room, _ = await services.create_room(
        api.hub, caller, req.name, config,
        before_ack=lambda stored: opened.append(_open_live(api, caller, stored)),
    )
    live = opened[0] if opened else None
    return convert.room_message(live) if live is not None else convert.room_message(room)


def _open_live(api: Api, caller: Caller, stored: Room) -> RoomView:
    """A stored room the room model does not track yet starts now (room_started, its timers)."""
    live = api.rooms.model.get_room(caller.project_id, stored.name)
    return live if live is not None else api.rooms.open_room(stored, caller.key)


async def list_rooms(api: Api, caller: Caller, req: rpb.ListRoomsRequest) -> Message:
    """Stored rooms, and live ones a join made a moment ago (saved in the background); a live
    room shows its participant count."""
    require(caller, "room_list")
    wanted = set(req.names) or None
    rooms = api.hub.store.list_rooms(caller.project_id, list(req.names) or None)
    stored = {r.name: r for r in rooms}
    live = {
        v.name: v
        for v in api.rooms.model.list_rooms(caller.project_id)
        if wanted is None or v.name in wanted
    }
    out = [
        convert.room_message(live[name]) if name in live else convert.room_message(stored[name])
        for name in sorted(stored.keys() | live.keys())
    ]
    return rpb.ListRoomsResponse(rooms=out)


async def delete_room(api: Api, caller: Caller, req: rpb.DeleteRoomRequest) -> Message:
    """Everyone in it is disconnected (leave, ROOM_DELETED) and its jobs end."""
    require(caller, "room_create")

    def close_live() -> bool:
        return api.rooms.close_room(caller.project_id, req.room, services.ROOM_DELETED)

    await services.delete_room(api.hub, caller, req.room, close_live)
    return rpb.DeleteRoomResponse()


async def update_room_metadata(
    api: Api, caller: Caller, req: rpb.UpdateRoomMetadataRequest
) -> Message:
    require(caller, "room_admin", room=req.room)
    view = await api.rooms.update_room_metadata(caller.project_id, req.room, req.metadata)
    return convert.room_message(view)


# -- RoomService: participants (LiveKit: roomAdmin for that room)


async def list_participants(
    api: Api, caller: Caller, req: rpb.ListParticipantsRequest
) -> Message:
    require(caller, "room_admin", room=req.room)
    infos = api.rooms.participant_infos(caller.project_id, req.room)
    return rpb.ListParticipantsResponse(participants=infos)


async def get_participant(api: Api, caller: Caller, req: rpb.RoomParticipantIdentity) -> Message:
    require(caller, "room_admin", room=req.room)
    return api.rooms.participant_info(caller.project_id, req.room, req.identity)


async def remove_participant(
    api: Api, caller: Caller, req: rpb.RoomParticipantIdentity
) -> Message:
    """Kick: the participant gets leave{DISCONNECT, PARTICIPANT_REMOVED}; the others are told."""
    require(caller, "room_admin", room=req.room)
    api.rooms.remove_participant(caller.project_id, req.room, req.identity)
    return rpb.RemoveParticipantResponse()


async def update_participant(
    api: Api, caller: Caller, req: rpb.UpdateParticipantRequest
) -> Message:
    """As LiveKit: empty metadata or name leaves it unchanged; an empty attribute value deletes
    the attribute; the permission is replaced only when sent."""
    require(caller, "room_admin", room=req.room)
    return api.rooms.update_participant(
        caller.project_id,
        req.room,
        req.identity,
        metadata=req.metadata or None,
        name=req.name or None,
        attributes=dict(req.attributes),
        permission=req.permission if req.HasField("permission") else None,
    )


async def mute_published_track(api: Api, caller: Caller, req: rpb.MuteRoomTrackRequest) -> Message:
    """The publisher is told to mute (or unmute), subscribers see it, the relay stops at once."""
    require(caller, "room_admin", room=req.room)
    track = api.rooms.mute_published_track(
        caller.project_id, req.room, req.identity, req.track_sid, req.muted
    )
    return rpb.MuteRoomTrackResponse(track=track)


async def update_subscriptions(
    api: Api, caller: Caller, req: rpb.UpdateSubscriptionsRequest
) -> Message:
    """Subscribe or unsubscribe a participant as if it had asked itself."""
    require(caller, "room_admin", room=req.room)
    update = UpdateSubscription(
        track_sids=list(req.track_sids),
        subscribe=req.subscribe,
        participant_tracks=list(req.participant_tracks),
    )
    api.rooms.update_subscriptions(caller.project_id, req.room, req.identity, update)
    return rpb.UpdateSubscriptionsResponse()


async def send_data(api: Api, caller: Caller, req: rpb.SendDataRequest) -> Message:
    """Data from the server to everyone, or to `destination_identities` (or the deprecated
    `destination_sids`); identities not in the room are skipped, like LiveKit."""
    require(caller, "room_admin", room=req.room)
    kind = int(req.kind)
    if kind not in {k.value for k in DataKind}:
        raise InvalidArgument(f"unknown data packet kind {kind}", "kind")
    destinations = list(req.destination_identities)
    if req.destination_sids:
        members = api.rooms.list_participants(caller.project_id, req.room)
        by_sid = {p.sid: p.identity for p in members}
        destinations += [by_sid[sid] for sid in req.destination_sids if sid in by_sid]
        if not destinations:
            return rpb.SendDataResponse()  # only unknown sids: nobody to send to
    api.rooms.send_data(
        caller.project_id,
        req.room,
        req.data,
        DataKind(kind),
        destinations,
        req.topic if req.HasField("topic") else None,
    )
    return rpb.SendDataResponse()


METHODS: dict[tuple[str, str], Method] = {
    ("AgentDispatchService", "CreateDispatch"): Method(
        dpb.CreateAgentDispatchRequest, create_dispatch
    ),
    ("AgentDispatchService", "DeleteDispatch"): Method(
        dpb.DeleteAgentDispatchRequest, delete_dispatch
    ),
    ("AgentDispatchService", "ListDispatch"): Method(dpb.ListAgentDispatchRequest, list_dispatch),
    ("RoomService", "CreateRoom"): Method(rpb.CreateRoomRequest, create_room),
    ("RoomService", "ListRooms"): Method(rpb.ListRoomsRequest, list_rooms),
    ("RoomService", "DeleteRoom"): Method(rpb.DeleteRoomRequest, delete_room),
    ("RoomService", "UpdateRoomMetadata"): Method(
        rpb.UpdateRoomMetadataRequest, update_room_metadata
    ),
    ("RoomService", "ListParticipants"): Method(rpb.ListParticipantsRequest, list_participants),
    ("RoomService", "GetParticipant"): Method(rpb.RoomParticipantIdentity, get_participant),
    ("RoomService", "RemoveParticipant"): Method(rpb.RoomParticipantIdentity, remove_participant),
    ("RoomService", "UpdateParticipant"): Method(
        rpb.UpdateParticipantRequest, update_participant
    ),
    ("RoomService", "SendData"): Method(rpb.SendDataRequest, send_data),
    ("RoomService", "MutePublishedTrack"): Method(rpb.MuteRoomTrackRequest, mute_published_track),
    ("RoomService", "UpdateSubscriptions"): Method(
        rpb.UpdateSubscriptionsRequest, update_subscriptions
    ),
}


def _is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/json"


def _decode(request_type: type[Message], body: bytes, as_json: bool) -> Message:
    msg = request_type()
    try:
        if as_json:
            json_format.Parse(body.decode() or "{}", msg, ignore_unknown_fields=True)
        else:
            msg.ParseFromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:
        kind = "JSON" if as_json else "protobuf"
        raise ApiError(
            "malformed",
            f"request body is not a valid {kind} {request_type.DESCRIPTOR.full_name}: {exc}",
        ) from None
    return msg


def _encode(msg: Message, as_json: bool) -> web.Response:
    if as_json:
        text = json_format.MessageToJson(msg, indent=None, preserving_proto_field_name=False)
        return web.Response(text=text, content_type="application/json")
    return web.Response(body=msg.SerializeToString(), content_type="application/protobuf")


async def handle_twirp(request: web.Request) -> web.Response:
    hub: Hub = request.app["hub"]
    service, method_name = request.match_info["service"], request.match_info["method"]
    try:
        method = _route(service, method_name, request.method)
        as_json = _is_json(request.content_type)
        body = await _read_body(request)
        caller = authenticate(hub.store, request_token(request))
        req = _decode(method.request_type, body, as_json)
        reply = await method.handler(Api(hub, request.app["rooms"]), caller, req)
    except ApiError as exc:
        log.info("twirp %s/%s -> %s: %s", service, method_name, exc.code, exc.msg)
        return twirp_error(exc)
    return _encode(reply, as_json)


def _route(service: str, method_name: str, http_method: str) -> Method:
    if http_method != "POST":
        raise ApiError("bad_route", f"twirp requires POST, got {http_method}")
    name = service.removeprefix("livekit.")
    method = METHODS.get((name, method_name))
    if method is None or not service.startswith("livekit."):
        raise ApiError("bad_route", f"no such method: {service}/{method_name}")
    return method


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise InvalidArgument(
            f"request body of {request.content_length} bytes exceeds {MAX_BODY_BYTES}", "body"
        )
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise InvalidArgument(f"request body exceeds {MAX_BODY_BYTES} bytes", "body") from None
