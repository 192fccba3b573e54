"""Which media section of a subscriber's offer carries which forwarded track. Pure bookkeeping.

In LiveKit's single-peer-connection mode the client always offers. It offers a few `recvonly`
audio m-lines up front, and adds more when the server sends `media_sections_requirement`. Each
answer puts every wanted track on one such section (the server's side of it becomes `sendonly`):
a track keeps the section it already has, new tracks take free sections in offer order, and a
track no longer wanted frees its section for the next. What does not fit is reported as
`missing`, so the session can ask the client for that many more sections.

The mid → track mapping is read from the SDP text here, because aiortc ignores `a=msid` when the
session's `msid-semantic: WMS` lists no ids (the LiveKit SDKs send it that way).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class MediaSection:
    mid: str
    kind: str  # audio | video | application
    direction: str  # as the offerer sees it: sendrecv | sendonly | recvonly | inactive
    track_id: str = ""  # the msid's track id ("" when there is none)
    port_zero: bool = False  # rejected / stopped section


def media_sections(sdp: str) -> list[MediaSection]:
    """The m-lines of an SDP, in order."""
    sections: list[dict[str, str]] = []
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            fields = line[2:].split()
            port = fields[1] if len(fields) > 1 else "0"
            sections.append({"kind": fields[0] if fields else "", "dir": "sendrecv", "port": port})
        elif sections:
            _section_attribute(sections[-1], line)
    return [
        MediaSection(
            mid=s.get("mid", ""),
            kind=s["kind"],
            direction=s["dir"],
            track_id=s.get("track", ""),
            port_zero=s["port"] == "0",
        )
        for s in sections
    ]


def _section_attribute(section: dict[str, str], line: str) -> None:
    if line.startswith("a=mid:"):
        section["mid"] = line[6:].strip()
    elif line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
        section["dir"] = line[2:]
    elif line.startswith("a=msid:"):
        parts = line[7:].split()
        if len(parts) > 1:
            section["track"] = parts[1]


def published_audio(sections: Iterable[MediaSection]) -> dict[str, str]:
    """mid → the client's track id (its `cid`) for the audio the client sends."""
    return {
        s.mid: s.track_id
        for s in sections
        if s.kind == "audio" and s.direction in ("sendonly", "sendrecv") and s.track_id
        and not s.port_zero
    }  # fmt: skip


def receivable_audio(sections: Iterable[MediaSection]) -> list[str]:
    """The mids of audio sections the client offers to receive on, in offer order."""
    return [
        s.mid
        for s in sections
        if s.kind == "audio" and s.direction in ("recvonly", "sendrecv") and not s.port_zero
    ]


@dataclass(frozen=True)
class Placement:
    assigned: dict[str, str]  # mid → track sid
    missing: int  # wanted tracks without a section


def place(offered: list[str], current: Mapping[str, str], wanted: Iterable[str]) -> Placement:
    """Put the `wanted` track sids on the `offered` mids; keep what already sits well."""
    wanted_list = list(dict.fromkeys(wanted))
    wanted_set = set(wanted_list)
    assigned: dict[str, str] = {}
    placed: set[str] = set()
    for mid, sid in current.items():
        if mid in offered and sid in wanted_set and sid not in placed:
            assigned[mid] = sid
            placed.add(sid)
    free = [mid for mid in offered if mid not in assigned]
    missing = 0
    for sid in wanted_list:
        if sid in placed:
            continue
        if not free:
            missing += 1
            continue
        assigned[free.pop(0)] = sid
    return Placement(assigned, missing)
