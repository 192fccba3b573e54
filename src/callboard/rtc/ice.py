"""ICE servers from the settings: for clients (JoinResponse) and the server's own peer connections.

Settings hold one string per server, `scheme:[user:password@]host[:port][?transport=udp|tcp]`
(e.g. `turn:alice:s3cret@turn.example.com:3478?transport=udp`). Clients get every server. The
server's own peer connections use only STUN servers: a STUN answer tells aiortc the NAT's public
address (a server-reflexive candidate), whereas a TURN allocation per participant would relay the
server's own traffic for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCIceServer
from aiortc.rtcicetransport import parse_stun_turn_uri
from livekit.protocol import rtc as signal

_SCHEMES = ("stun", "stuns", "turn", "turns")


@dataclass(frozen=True)
class IceServer:
    url: str  # without credentials
    username: str = ""
    credential: str = ""

    @property
    def is_stun(self) -> bool:
        return self.url.startswith("stun")


def parse_ice_server(text: str) -> IceServer:
    """Raise ValueError, naming the entry, for anything aiortc and the clients could not use."""
    scheme, sep, rest = text.strip().partition(":")
    if not sep or scheme not in _SCHEMES or not rest:
        raise ValueError(f"ICE server {text!r}: expected stun:, stuns:, turn: or turns:HOST[:PORT]")
    username = credential = ""
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
        username, _, credential = userinfo.partition(":")
    url = f"{scheme}:{rest}"
    try:
        parse_stun_turn_uri(url)
    except ValueError as exc:
        raise ValueError(f"ICE server {text!r}: {exc}") from None
    return IceServer(url, username, credential)


def parse_ice_servers(entries: tuple[str, ...]) -> tuple[IceServer, ...]:
    return tuple(parse_ice_server(entry) for entry in entries)


def for_clients(servers: tuple[IceServer, ...]) -> list[signal.ICEServer]:
    return [
        signal.ICEServer(urls=[s.url], username=s.username, credential=s.credential)
        for s in servers
    ]


def for_server(servers: tuple[IceServer, ...]) -> list[RTCIceServer]:
    """Only STUN, as an explicit (maybe empty) list: aiortc's default reaches a public server."""
    return [RTCIceServer(urls=s.url) for s in servers if s.is_stun]
