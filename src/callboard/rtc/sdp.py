"""SDP and ICE candidate text: what goes into trickle messages, and what comes out of them.

aiortc gathers every local candidate before it produces an answer and writes them into the SDP.
LiveKit clients expect the answer without candidates and the candidates trickled after it, each
as JSON with all of `candidate`, `sdpMid` and `sdpMLineIndex` (the Rust SDK unwraps that JSON and
the candidate parse: a missing key or a malformed line aborts the client process). So the answer
is stripped of candidate lines here and the distinct candidates become trickle JSON, all on the
first (bundle-leading) media section.

With `node_ip` set, host candidates advertise that address instead of the interface's own, keeping
the port: this works for 1:1 NAT (a cloud VM's public IP forwarding every UDP port to the VM);
it cannot work behind port-translating NAT, because aiortc picks random ports.
"""

from __future__ import annotations

import json

from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp


class BadCandidate(ValueError):
    """A trickle message whose candidate cannot be used."""


def split_candidates(sdp: str, node_ip: str = "") -> tuple[str, list[str]]:
    """The SDP without candidate lines, and its distinct candidates (`candidate:…` strings)."""
    kept: list[str] = []
    candidates: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            text = _advertised(line[2:], node_ip)
            fields = text.split()
            identity = (fields[2].lower(), fields[4], fields[5]) if len(fields) > 5 else (text,)
            if identity not in seen:
                seen.add(identity)
                candidates.append(text)
        elif line != "a=end-of-candidates":
            kept.append(_connection_line(line, node_ip))
    return "\r\n".join(kept) + "\r\n", candidates


def _advertised(candidate: str, node_ip: str) -> str:
    """Rewrite a host candidate's address to `node_ip` (when set); others pass unchanged."""
    fields = candidate.split()
    if not node_ip or len(fields) < 8 or fields[6] != "typ" or fields[7] != "host":
        return candidate
    fields[4] = node_ip
    return " ".join(fields)


def _connection_line(line: str, node_ip: str) -> str:
    if node_ip and line.startswith("c=IN IP4 ") and line != "c=IN IP4 0.0.0.0":
        return f"c=IN {'IP6' if ':' in node_ip else 'IP4'} {node_ip}"
    return line


def first_mid(sdp: str) -> str:
    for line in sdp.splitlines():
        if line.startswith("a=mid:"):
            return line[len("a=mid:") :].strip()
    return "0"


def trickle_json(candidate: str, mid: str, mline_index: int = 0) -> str:
    return json.dumps({"candidate": candidate, "sdpMid": mid, "sdpMLineIndex": mline_index})


def parse_trickle(candidate_init: str) -> RTCIceCandidate | None:
    """A client's trickle JSON as an aiortc candidate; None for end-of-candidates."""
    try:
        init = json.loads(candidate_init)
    except ValueError:
        raise BadCandidate("trickle candidateInit is not JSON") from None
    if not isinstance(init, dict):
        raise BadCandidate("trickle candidateInit is not a JSON object")
    text = init.get("candidate")
    if not isinstance(text, str):
        raise BadCandidate("trickle candidateInit has no candidate string")
    if not text:
        return None
    candidate = _parse_candidate(text.removeprefix("a=").removeprefix("candidate:"))
    mid, index = init.get("sdpMid"), init.get("sdpMLineIndex")
    candidate.sdpMid = mid if isinstance(mid, str) else None
    candidate.sdpMLineIndex = index if isinstance(index, int) else None
    if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
        raise BadCandidate("trickle candidate has neither sdpMid nor sdpMLineIndex")
    return candidate


def _parse_candidate(text: str) -> RTCIceCandidate:
    try:
        return candidate_from_sdp(text)
    except (AssertionError, ValueError, IndexError):
        raise BadCandidate(f"malformed ICE candidate {text[:80]!r}") from None
