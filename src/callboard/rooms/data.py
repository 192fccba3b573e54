"""Data packets between participants: decode, stamp the sender, and work out the receivers.

The server never trusts what a client says about who sent a packet: identity and sid are
overwritten with the sender's own (top level, and inside a `user` packet for older clients).
Receivers come from `destination_identities` (or, for older clients, the user packet's
identities and sids); no destinations means everyone else in the room.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum

from google.protobuf.message import DecodeError
from livekit.protocol import models


class Drop(StrEnum):
    """Why a data packet was not delivered (counted as `data.dropped.<reason>`)."""

    OVERSIZE = "oversize"
    NOT_ALLOWED = "not_allowed"
    RATE_LIMITED = "rate_limited"
    MALFORMED = "malformed"
    UNKNOWN_DESTINATION = "unknown_destination"
    RECEIVER_BUSY = "receiver_busy"


def decode(payload: bytes) -> models.DataPacket | None:
    try:
        packet = models.DataPacket.FromString(payload)
    except DecodeError:
        return None
    return packet if packet.WhichOneof("value") is not None else None


def stamp(packet: models.DataPacket, identity: str, sid: str) -> None:
    packet.participant_identity = identity
    packet.participant_sid = sid
    if packet.HasField("user"):
        packet.user.participant_identity = identity
        packet.user.participant_sid = sid


def wanted_identities(
    packet: models.DataPacket, identity_of_sid: Callable[[str], str | None]
) -> set[str]:
    """The identities a packet is addressed to; empty means everyone.

    Unknown sids become impossible identities, so they count as unknown destinations.
    """
    wanted = set(packet.destination_identities)
    if not wanted and packet.HasField("user"):
        wanted = set(packet.user.destination_identities)
        for sid in packet.user.destination_sids:
            wanted.add(identity_of_sid(sid) or "\0" + sid)
    return wanted


def server_packet(
    payload: bytes, kind: int, destinations: Iterable[str], topic: str | None
) -> models.DataPacket:
    """A user packet sent by the server (RoomService SendData): no sender identity."""
    user = models.UserPacket(payload=payload)
    if topic is not None:
        user.topic = topic
    return models.DataPacket(
        kind=kind,  # type: ignore[arg-type]
        user=user,
        destination_identities=list(destinations),
    )
