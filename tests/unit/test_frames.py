"""Worker frames: binary protobuf and text protojson in, the same out; anything else is the peer's
protocol violation with a close code (1003 unsupported data, 1009 too big), never a crash."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from livekit.protocol import agent as pb
from livekit.protocol import models

from callboard.protocol.errors import WS_MESSAGE_TOO_BIG, WS_UNSUPPORTED_DATA, ProtocolViolation
from callboard.protocol.frames import (
    MAX_FRAME_BYTES,
    Format,
    decode_worker_message,
    encode_server_message,
)

WORKER_MESSAGES: dict[str, pb.WorkerMessage] = {
    "register": pb.WorkerMessage(register=pb.RegisterWorkerRequest(
        type=pb.JT_PUBLISHER, agent_name="my-agent", version="1.8.9", ping_interval=30,
        namespace="ns", deployment="staging",
        allowed_permissions=models.ParticipantPermission(can_publish=True, can_subscribe=True,
                                                         can_publish_data=True, hidden=True),
    )),
    "availability": pb.WorkerMessage(availability=pb.AvailabilityResponse(
        job_id="AJ_abc", available=True, supports_resume=True, participant_name="Agent",
        participant_identity="agent-AJ_abc", participant_metadata="{}",
        participant_attributes={"lk.agent.name": "my-agent"},
    )),
    "update_worker": pb.WorkerMessage(update_worker=pb.UpdateWorkerStatus(
        status=pb.WS_FULL, load=0.75, job_count=3, draining=True, seq=9)),
    "update_job": pb.WorkerMessage(update_job=pb.UpdateJobStatus(
        job_id="AJ_abc", status=pb.JS_FAILED, error="entrypoint raised")),
    "ping": pb.WorkerMessage(ping=pb.WorkerPing(timestamp=1_750_000_000_123)),
    "simulate_job": pb.WorkerMessage(simulate_job=pb.SimulateJobRequest(
        type=pb.JT_ROOM, room=models.Room(name="r", sid="RM_x"))),
    "migrate_job": pb.WorkerMessage(migrate_job=pb.MigrateJobRequest(job_ids=["AJ_1", "AJ_2"])),
}

SERVER_MESSAGES: dict[str, pb.ServerMessage] = {
    "register": pb.ServerMessage(register=pb.RegisterWorkerResponse(
        worker_id="AW_abcdefghijkm",
        server_info=models.ServerInfo(version="callboard-0.1.0", protocol=16, node_id="n1"))),
    "availability": pb.ServerMessage(availability=pb.AvailabilityRequest(
        job=pb.Job(id="AJ_1", dispatch_id="AD_1", type=pb.JT_ROOM, agent_name="a",
                   room=models.Room(name="r", sid="RM_1"), metadata="m"),
        resuming=True)),
    "assignment": pb.ServerMessage(assignment=pb.JobAssignment(
        job=pb.Job(id="AJ_1", room=models.Room(name="r")), token="x.y.z", url="")),
    "termination": pb.ServerMessage(termination=pb.JobTermination(job_id="AJ_1")),
    "pong": pb.ServerMessage(pong=pb.WorkerPong(last_timestamp=5, timestamp=6)),
}


def assert_violation(data: bytes | str, close_code: int, match: str) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation, match=match) as info:
        decode_worker_message(data)
    assert info.value.close_code == close_code
    assert info.value.reason == str(info.value)
    return info.value


# -- every message kind, both formats --------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(WORKER_MESSAGES))
def test_binary_decode_of_every_worker_message(kind: str) -> None:
    sent = WORKER_MESSAGES[kind]
    msg, fmt = decode_worker_message(sent.SerializeToString())
    assert fmt is Format.BINARY
    assert msg.WhichOneof("message") == kind and msg == sent


@pytest.mark.parametrize("kind", sorted(WORKER_MESSAGES))
def test_protojson_decode_of_every_worker_message(kind: str) -> None:
    sent = WORKER_MESSAGES[kind]
    msg, fmt = decode_worker_message(json_format.MessageToJson(sent))
    assert fmt is Format.TEXT
    assert msg.WhichOneof("message") == kind and msg == sent


def test_protojson_accepts_proto_field_names_and_enum_numbers() -> None:
    text = json.dumps({"update_job": {"job_id": "AJ_1", "status": 1}})
    msg, _ = decode_worker_message(text)
    assert msg.update_job.job_id == "AJ_1" and msg.update_job.status == pb.JS_RUNNING


def test_protojson_ignores_fields_a_newer_sdk_might_add() -> None:
    text = json.dumps({"ping": {"timestamp": "7", "futureField": {"x": 1}}, "alsoNew": []})
    msg, _ = decode_worker_message(text)
    assert msg.ping.timestamp == 7


def test_livekit_agents_register_omits_the_room_job_type() -> None:
    """JT_ROOM = 0 is not on the wire: an empty `type` reads as JT_ROOM."""
    sent = pb.WorkerMessage(register=pb.RegisterWorkerRequest(agent_name="a", version="1.8.9"))
    assert b"\x08" not in sent.register.SerializeToString()[:1]
    msg, _ = decode_worker_message(sent.SerializeToString())
    assert msg.register.type == pb.JT_ROOM and not msg.register.HasField("allowed_permissions")


def test_an_empty_frame_is_an_empty_message() -> None:
    assert decode_worker_message(b"")[0].WhichOneof("message") is None
    assert decode_worker_message("{}")[0].WhichOneof("message") is None


def test_update_worker_without_status_is_distinguishable() -> None:
    """livekit-wire §1: status only changes when present; `status` is proto3 optional."""
    msg, _ = decode_worker_message(
        pb.WorkerMessage(update_worker=pb.UpdateWorkerStatus(load=0.5)).SerializeToString())
    assert not msg.update_worker.HasField("status") and msg.update_worker.load == 0.5
    msg, _ = decode_worker_message(json.dumps({"updateWorker": {"status": "WS_AVAILABLE"}}))
    assert msg.update_worker.HasField("status")


# -- malformed frames ------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"\x08", b"\xff\xff\xff", b"\x0a\x05ab", b"\x00",
                                  b"\x0a\x02\x12\x80"])
def test_malformed_protobuf(data: bytes) -> None:
    assert_violation(data, WS_UNSUPPORTED_DATA, "binary frame is not a protobuf WorkerMessage")


def test_invalid_utf8_in_a_protobuf_string_field() -> None:
    data = b"\x0a\x04B\x02\xff\xfe"  # register{agent_name (field 8): 0xff 0xfe}
    assert_violation(data, WS_UNSUPPORTED_DATA, "not a protobuf WorkerMessage")


@pytest.mark.parametrize("text", ["", "hello", "{", "{'register': {}}", "register", "[" * 100_000])
def test_text_that_is_not_json(text: str) -> None:
    assert_violation(text, WS_UNSUPPORTED_DATA, "text frame is not JSON")


@pytest.mark.parametrize(("text", "kind"), [('"register"', "string"), ("[]", "array"),
                                            ("[{}]", "array"), ("null", "null"),
                                            ("3", "number"), ("1.5", "number"),
                                            ("true", "boolean")])
def test_json_that_is_not_an_object(text: str, kind: str) -> None:
    assert_violation(text, WS_UNSUPPORTED_DATA,
                     f"text frame is a JSON {kind}, not a protojson WorkerMessage object")


@pytest.mark.parametrize(
    "obj",
    [
        {"register": 5},
        {"register": {"agentName": ["a"]}},
        {"updateJob": {"status": []}},
        {"updateWorker": {"load": "heavy"}},
        {"ping": {"timestamp": 1e400}},
        {"migrateJob": {"jobIds": [1]}},
        {"register": {}, "ping": {}},  # two members of the `message` oneof
        {"register": {"allowedPermissions": {"canPublish": "yes"}}},
        {"register": {"agentName": "\ud800"}},
    ],
)
def test_json_of_the_wrong_shape(obj: object) -> None:
    assert_violation(json.dumps(obj), WS_UNSUPPORTED_DATA, "not a protojson WorkerMessage")


def test_deeply_nested_json_is_a_violation_not_a_recursion_error() -> None:
    text = '{"register": ' * 50_000 + "{}" + "}" * 50_000
    assert_violation(text, WS_UNSUPPORTED_DATA, "text frame")


# -- the 2 MiB limit -------------------------------------------------------------------------------


def register_of_size(size: int) -> bytes:
    """A valid binary register frame of exactly `size` bytes."""
    filler = size
    while True:
        data = pb.WorkerMessage(register=pb.RegisterWorkerRequest(agent_name="a" * filler))
        raw = data.SerializeToString()
        if len(raw) == size:
            return raw
        filler -= len(raw) - size


def test_a_frame_of_exactly_2_mib_is_accepted() -> None:
    data = register_of_size(MAX_FRAME_BYTES)
    msg, _ = decode_worker_message(data)
    assert len(msg.register.agent_name) > MAX_FRAME_BYTES - 16


def test_a_binary_frame_over_2_mib() -> None:
    violation = assert_violation(register_of_size(MAX_FRAME_BYTES + 1), WS_MESSAGE_TOO_BIG,
                                 "exceeds the 2097152 byte limit")
    assert "2097153 bytes" in violation.reason


def test_a_3_mib_text_frame() -> None:
    text = json.dumps({"register": {"agentName": "a" * (3 * 1024 * 1024)}})
    assert_violation(text, WS_MESSAGE_TOO_BIG, "exceeds")


def test_the_text_limit_counts_utf8_bytes_not_characters() -> None:
    text = json.dumps({"register": {"agentName": "é" * (MAX_FRAME_BYTES // 2)}},
                      ensure_ascii=False)
    assert len(text) < MAX_FRAME_BYTES < len(text.encode())
    assert_violation(text, WS_MESSAGE_TOO_BIG, "exceeds")


def test_a_lone_surrogate_in_text_is_a_violation() -> None:
    assert_violation('{"register": {"agentName": "\ud800"}}', WS_UNSUPPORTED_DATA,
                     "not a protojson WorkerMessage")


# -- encoding --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SERVER_MESSAGES))
def test_binary_encode_round_trips(kind: str) -> None:
    sent = SERVER_MESSAGES[kind]
    data = encode_server_message(sent, Format.BINARY)
    assert isinstance(data, bytes)
    got = pb.ServerMessage.FromString(data)
    assert got == sent and got.WhichOneof("message") == kind


@pytest.mark.parametrize("kind", sorted(SERVER_MESSAGES))
def test_text_encode_round_trips(kind: str) -> None:
    sent = SERVER_MESSAGES[kind]
    data = encode_server_message(sent, Format.TEXT)
    assert isinstance(data, str) and "\n" not in data
    assert json_format.Parse(data, pb.ServerMessage()) == sent
    assert isinstance(json.loads(data), dict)


def test_text_encode_is_protojson() -> None:
    data = encode_server_message(SERVER_MESSAGES["register"], Format.TEXT)
    assert json.loads(data)["register"]["workerId"] == "AW_abcdefghijkm"


def test_a_worker_message_survives_both_formats_through_the_decoder() -> None:
    """What a light worker writes in either format decodes to the same message."""
    for sent in WORKER_MESSAGES.values():
        binary, _ = decode_worker_message(sent.SerializeToString())
        text, _ = decode_worker_message(json_format.MessageToJson(sent, indent=None))
        assert binary == text == sent


# -- properties ------------------------------------------------------------------------------------


def decodes_or_violates(data: bytes | str) -> None:
    try:
        msg, fmt = decode_worker_message(data)
    except ProtocolViolation as exc:
        assert exc.close_code in (WS_UNSUPPORTED_DATA, WS_MESSAGE_TOO_BIG)
        return
    assert isinstance(msg, pb.WorkerMessage)
    assert fmt is (Format.BINARY if isinstance(data, bytes) else Format.TEXT)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise_anything_but_a_violation(data: bytes) -> None:
    decodes_or_violates(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([m.SerializeToString() for m in WORKER_MESSAGES.values()]),
                min_size=1, max_size=3),
       st.integers(min_value=0, max_value=64), st.binary(max_size=8))
def test_mangled_real_frames_never_raise_anything_but_a_violation(
    frames: list[bytes], cut: int, junk: bytes
) -> None:
    data = b"".join(frames)
    decodes_or_violates(data[:cut] + junk + data[cut:])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=256))
def test_arbitrary_text_never_raises_anything_but_a_violation(text: str) -> None:
    decodes_or_violates(text)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=3),
    max_leaves=12,
)
WORKER_KEYS = st.sampled_from([
    "register", "availability", "updateWorker", "update_worker", "updateJob", "ping",
    "migrateJob", "simulateJob", "agentName", "allowedPermissions", "status", "load", "jobId",
    "jobIds", "timestamp", "participantAttributes", "type", "room",
])


@settings(max_examples=500, deadline=None)
@given(st.recursive(JSON, lambda inner: st.dictionaries(WORKER_KEYS, inner, max_size=3),
                    max_leaves=12))
def test_protojson_shaped_garbage_never_raises_anything_but_a_violation(obj: object) -> None:
    decodes_or_violates(json.dumps(obj))
