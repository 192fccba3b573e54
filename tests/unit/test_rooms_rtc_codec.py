"""The /rtc/v1 codec pieces: join_request decoding, SDP candidate handling, ICE server settings."""

from __future__ import annotations

import base64
import gzip
import json

import pytest
from livekit.protocol import models
from livekit.protocol import rtc as pb

from callboard.rtc import ice, sdp, signal

OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def wrapped(request: pb.JoinRequest, *, compress: bool = True) -> pb.WrappedJoinRequest:
    inner = request.SerializeToString()
    return pb.WrappedJoinRequest(
        compression=pb.WrappedJoinRequest.Compression.GZIP if compress else 0,
        join_request=gzip.compress(inner) if compress else inner,
    )


def encode(message: pb.WrappedJoinRequest, *, padded: bool) -> str:
    text = base64.urlsafe_b64encode(message.SerializeToString()).decode()
    return text if padded else text.rstrip("=")


# -- join_request


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("compress", [True, False])
def test_join_request_decodes_padded_or_not_gzipped_or_not(padded: bool, compress: bool) -> None:
    request = pb.JoinRequest(
        client_info=models.ClientInfo(sdk=models.ClientInfo.SDK.PYTHON, protocol=17),
        publisher_offer=pb.SessionDescription(type="offer", sdp=OFFER, id=3),
    )
    for length in range(5):  # vary the length so every padding case occurs
        request.metadata = "x" * length
        decoded = signal.decode_join_request(
            encode(wrapped(request, compress=compress), padded=padded)
        )
        assert decoded == request


def test_standard_base64_and_a_plus_turned_space_are_accepted() -> None:
    request = pb.JoinRequest(metadata="\xfb\xff" * 40)
    raw = wrapped(request, compress=False).SerializeToString()
    text = base64.b64encode(raw).decode()
    assert signal.decode_join_request(text) == request


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("!!!!", "not base64url"),
        ("a", "not base64url"),
        (base64.urlsafe_b64encode(b"\xff\xff\xff").decode(), "WrappedJoinRequest"),
        ("CAE", "carries no JoinRequest"),  # WrappedJoinRequest{compression: GZIP} and nothing
    ],
)
def test_garbage_join_requests_are_refused(text: str, needle: str) -> None:
    with pytest.raises(signal.BadJoinRequest, match=needle):
        signal.decode_join_request(text)


def test_truncated_gzip_is_refused() -> None:
    message = wrapped(pb.JoinRequest(metadata="m" * 1000))
    message.join_request = message.join_request[: len(message.join_request) // 2]
    with pytest.raises(signal.BadJoinRequest, match=r"truncated|gzip"):
        signal.decode_join_request(encode(message, padded=False))


def test_truncated_protobuf_is_refused() -> None:
    raw = wrapped(pb.JoinRequest(metadata="m" * 100), compress=False).SerializeToString()
    text = base64.urlsafe_b64encode(raw[:-10]).decode()
    with pytest.raises(signal.BadJoinRequest):
        signal.decode_join_request(text)


def test_a_gzip_bomb_is_refused() -> None:
    bomb = pb.WrappedJoinRequest(
        compression=pb.WrappedJoinRequest.Compression.GZIP,
        join_request=gzip.compress(b"\0" * (10 * 1024 * 1024)),
    )
    with pytest.raises(signal.BadJoinRequest, match="decompressed"):
        signal.decode_join_request(encode(bomb, padded=True))


def test_unknown_compression_is_refused() -> None:
    message = pb.WrappedJoinRequest(compression=7, join_request=b"\x1a\x01m")  # type: ignore[arg-type]
    with pytest.raises(signal.BadJoinRequest, match="compression"):
        signal.decode_join_request(encode(message, padded=True))


def test_join_response_never_carries_a_zero_ping_interval() -> None:
    settings = signal.SignalSettings(ping_interval_s=0, ping_timeout_s=0, node_id="ND_1")
    join = signal.join_response(settings, models.Room(), models.ParticipantInfo(), []).join
    assert join.ping_interval >= 1 and join.ping_timeout > join.ping_interval
    assert join.server_info.version == signal.COMPAT_VERSION  # semver >= 1.8.0: RPC works
    assert join.server_version == signal.COMPAT_VERSION


def test_leave_reconnect_says_it_can_reconnect() -> None:
    leave = signal.leave(models.DisconnectReason.STATE_MISMATCH, pb.LeaveRequest.Action.RECONNECT)
    assert leave.leave.can_reconnect and leave.leave.action == pb.LeaveRequest.Action.RECONNECT
    assert not signal.leave(models.DisconnectReason.ROOM_DELETED).leave.can_reconnect


# -- SDP and candidates

ANSWER = "\r\n".join(
    [
        "v=0",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 10.0.0.5",
        "a=mid:0",
        "a=candidate:aa 1 udp 2130706431 10.0.0.5 40000 typ host",
        "a=candidate:bb 1 udp 2130706431 172.17.0.1 40001 typ host",
        "a=candidate:cc 1 udp 1694498815 203.0.113.9 40000 typ srflx raddr 10.0.0.5 rport 40000",
        "a=end-of-candidates",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=mid:1",
        "a=candidate:aa 1 udp 2130706431 10.0.0.5 40000 typ host",
        "",
    ]
)


def test_candidates_are_split_out_of_the_answer_once_each() -> None:
    stripped, candidates = sdp.split_candidates(ANSWER)
    assert "a=candidate" not in stripped and "end-of-candidates" not in stripped
    assert "c=IN IP4 10.0.0.5" in stripped and stripped.endswith("\r\n")
    assert [c.split()[4] for c in candidates] == ["10.0.0.5", "172.17.0.1", "203.0.113.9"]
    assert all(c.startswith("candidate:") for c in candidates)


def test_node_ip_rewrites_host_candidates_only() -> None:
    stripped, candidates = sdp.split_candidates(ANSWER, node_ip="198.51.100.7")
    assert [c.split()[4:6] for c in candidates] == [
        ["198.51.100.7", "40000"],
        ["198.51.100.7", "40001"],
        ["203.0.113.9", "40000"],
    ]
    assert "c=IN IP4 198.51.100.7" in stripped


def test_trickle_json_has_all_three_keys() -> None:
    init = json.loads(sdp.trickle_json("candidate:aa 1 udp 1 10.0.0.5 4 typ host", "0"))
    assert init == {
        "candidate": "candidate:aa 1 udp 1 10.0.0.5 4 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }
    assert sdp.first_mid(ANSWER) == "0"


def test_a_client_trickle_parses() -> None:
    text = json.dumps(
        {
            "sdpMid": "0",
            "sdpMLineIndex": 0,
            "candidate": "candidate:365 1 udp 2122260223 10.99.0.1 39478 typ host generation 0",
        }
    )
    candidate = sdp.parse_trickle(text)
    assert candidate is not None
    assert (candidate.ip, candidate.port, candidate.type, candidate.sdpMid) == (
        "10.99.0.1",
        39478,
        "host",
        "0",
    )
    assert sdp.parse_trickle(json.dumps({"candidate": "", "sdpMid": "0"})) is None


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        json.dumps({"sdpMid": "0"}),
        json.dumps({"candidate": "candidate:1 1 udp", "sdpMid": "0"}),
        json.dumps({"candidate": "candidate:a 1 udp x 1.2.3.4 5 typ host"}),
        json.dumps({"candidate": "candidate:a 1 udp 1 1.2.3.4 5 typ host"}),
    ],
)
def test_bad_trickles_are_refused(text: str) -> None:
    with pytest.raises(sdp.BadCandidate):
        sdp.parse_trickle(text)


# -- ICE servers


def test_ice_servers_split_credentials_from_the_url() -> None:
    servers = ice.parse_ice_servers(
        ("stun:stun.example.com:3478", "turn:alice:s3cret@turn.example.com:3478?transport=udp")
    )
    assert servers[1] == ice.IceServer(
        "turn:turn.example.com:3478?transport=udp", "alice", "s3cret"
    )
    clients = ice.for_clients(servers)
    assert [list(s.urls) for s in clients] == [
        ["stun:stun.example.com:3478"],
        ["turn:turn.example.com:3478?transport=udp"],
    ]
    assert clients[1].username == "alice" and clients[1].credential == "s3cret"
    assert [s.urls for s in ice.for_server(servers)] == ["stun:stun.example.com:3478"]
    assert ice.for_server(()) == []


@pytest.mark.parametrize("entry", ["http://x", "stun:", "turn:u:p@", "stun:host:port:extra"])
def test_bad_ice_servers_are_refused_by_name(entry: str) -> None:
    with pytest.raises(ValueError, match="ICE server"):
        ice.parse_ice_server(entry)
