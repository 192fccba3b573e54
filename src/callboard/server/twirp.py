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

from callboard.protocol import convert
from callboard.protocol.errors import ApiError, InvalidArgument
from callboard.server import services
from callboard.server.auth import Caller, authenticate, request_token, require
from callboard.server.hub import Hub

log = logging.getLogger("callboard.twirp")

MAX_BODY_BYTES = 2 * 1024 * 1024
Handler = Callable[[Hub, Caller, Any], Awaitable[Message]]


@dataclass(frozen=True)
class Method:
    request_type: type[Message]
    handler: Handler


def twirp_error(exc: ApiError) -> web.Response:
    return web.json_response(exc.to_json(), status=exc.http_status)


# -- AgentDispatchService


async def create_dispatch(hub: Hub, caller: Caller, req: dpb.CreateAgentDispatchRequest) -> Message:
    require(caller, "room_admin", room=req.room)
    services.validate_attributes(dict(req.attributes))
    agent = services.AgentRequest(req.agent_name, req.metadata)
    record = await services.create_dispatch(hub, caller, req.room, agent)
    return convert.agent_dispatch(record, services.jobs_of(hub, record))


async def delete_dispatch(hub: Hub, caller: Caller, req: dpb.DeleteAgentDispatchRequest) -> Message:
    require(caller, "room_admin", room=req.room)
    record = await services.delete_dispatch(hub, caller, req.dispatch_id, req.room)
    return convert.agent_dispatch(record, services.jobs_of(hub, record))


async def list_dispatch(hub: Hub, caller: Caller, req: dpb.ListAgentDispatchRequest) -> Message:
    require(caller, "room_admin", room=req.room)
    records = services.list_dispatches(hub, caller, req.room, req.dispatch_id)
    return dpb.ListAgentDispatchResponse(
        agent_dispatches=[convert.agent_dispatch(r, services.jobs_of(hub, r)) for r in records]
    )


# -- RoomService


async def create_room(hub: Hub, caller: Caller, req: rpb.CreateRoomRequest) -> Message:
    require(caller, "room_create")
    agents = [services.AgentRequest(a.agent_name, a.metadata) for a in req.agents]
    room, _ = await services.create_room(
        hub,
        caller,
        req.name,
        metadata=req.metadata,
        empty_timeout_s=req.empty_timeout,
        departure_timeout_s=req.departure_timeout,
        max_participants=req.max_participants,
        agents=agents,
    )
    return convert.room_message(room)


async def list_rooms(hub: Hub, caller: Caller, req: rpb.ListRoomsRequest) -> Message:
    require(caller, "room_list")
    rooms = hub.store.list_rooms(caller.project_id, list(req.names) or None)
    return rpb.ListRoomsResponse(rooms=[convert.room_message(r) for r in rooms])


async def delete_room(hub: Hub, caller: Caller, req: rpb.DeleteRoomRequest) -> Message:
    require(caller, "room_create")
    await services.delete_room(hub, caller, req.room)
    return rpb.DeleteRoomResponse()


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
        reply = await method.handler(hub, caller, req)
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
