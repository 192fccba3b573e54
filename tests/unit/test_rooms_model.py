"""The room model driven directly: fake clock, fake edges, a recording observer. No I/O."""

from __future__ import annotations

from typing import Any

import pytest
from livekit.protocol import models
from livekit.protocol import rtc as pb

from callboard.protocol.errors import InvalidArgument, NotFound
from callboard.protocol.tokens import JobClaim, TokenClaims, VideoGrant
from callboard.rooms.contract import JoinRefused
from callboard.rooms.limits import RoomLimits
from callboard.rooms.model import JoinAttempt, Joined, RoomModel
from callboard.rooms.state import DataKind
from callboard.store.base import ApiKey
from callboard.store.base import Room as StoredRoom
from tests.support.rtc import FakeEdge, Recorder

Reason = models.DisconnectReason
Action = pb.LeaveRequest.Action
State = models.ParticipantInfo.State
KEY = ApiKey("APIkey1", "secret", "P_1", "", 0)
DEV_KEY = ApiKey("APIjack", "secret", "P_1", "jack", 0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def observer() -> Recorder:
    return Recorder()


@pytest.fixture
def model(observer: Recorder, clock: Clock) -> RoomModel:
    limits = RoomLimits(ping_timeout_ms=15_000, empty_timeout_s=300, departure_timeout_s=20)
    return RoomModel(observer, limits, clock)


def claims(identity: str, room: str = "r1", **kw: Any) -> TokenClaims:
    video = {"room_join": True, "room": room, "can_update_own_metadata": True}
    video.update(kw.pop("video", {}))
    return TokenClaims(
        api_key=KEY.key, identity=identity, expires_at_s=0, video=VideoGrant(**video), **kw
    )


def attempt(identity: str, room: str = "r1", *, key: ApiKey = KEY, **kw: Any) -> JoinAttempt:
    stored = kw.pop("stored", None)
    return JoinAttempt(key, claims(identity, room, **kw), room, stored)


def join(model: RoomModel, identity: str, room: str = "r1", **kw: Any) -> tuple[Joined, FakeEdge]:
    edge = FakeEdge()
    return model.join(attempt(identity, room, **kw), edge), edge


def packet(payload: bytes = b"x", **kw: Any) -> bytes:
    return models.DataPacket(
        user=models.UserPacket(payload=payload, topic="t"), **kw
    ).SerializeToString()


# -- joining


def test_first_join_creates_the_room_and_hands_back_the_record(
    model: RoomModel, observer: Recorder
) -> None:
    joined, _ = join(model, "alice", key=DEV_KEY)
    assert joined.store_room is not None
    assert joined.store_room.creator_key == "APIjack" and joined.store_room.owner == "jack"
    assert joined.room.sid.startswith("RM_") and joined.participant.sid.startswith("PA_")
    assert joined.room.name == "r1" and joined.others == []
    assert observer.kinds() == ["room_started", "joined"]
    assert observer.events[-1][1].created_room is True


def test_second_join_sees_the_first_and_the_first_is_told(
    model: RoomModel, observer: Recorder
) -> None:
    first, alice = join(model, "alice")
    second, _ = join(model, "bob")
    assert [p.identity for p in second.others] == ["alice"]
    assert second.room.sid == first.room.sid and second.store_room is None
    assert [(p.identity, p.state) for p in alice.updates()] == [("bob", State.JOINED)]
    assert observer.events[-1][1].created_room is False


def test_a_second_join_with_the_same_identity_replaces_the_first(
    model: RoomModel, observer: Recorder
) -> None:
    old, old_edge = join(model, "alice")
    _, bob = join(model, "bob")
    new, _ = join(model, "alice")
    assert old_edge.leaves == [(Reason.DUPLICATE_IDENTITY, Action.DISCONNECT)]
    seen = [(p.sid, p.state) for p in bob.updates()]
    assert seen == [(old.sid, State.DISCONNECTED), (new.sid, State.JOINED)]
    assert ("left", ("alice", "DUPLICATE_IDENTITY")) in observer.events
    assert [p.identity for p in model.list_participants("P_1", "r1")] == ["bob", "alice"]


def test_hidden_participants_are_never_announced(model: RoomModel) -> None:
    _, alice = join(model, "alice")
    join(model, "recorder", video={"hidden": True})
    bob_joined, _ = join(model, "bob")
    assert [p.identity for p in alice.updates()] == ["bob"]
    assert [p.identity for p in bob_joined.others] == ["alice"]
    model.leave(model.get_participant("P_1", "r1", "recorder").sid)
    assert [p.identity for p in alice.updates()] == ["bob"]


def test_kind_job_and_attributes_come_from_the_token(model: RoomModel) -> None:
    job = JobClaim("AD_1", "AJ_1", 2)
    joined, _ = join(
        model, "agent-AJ_1", kind="agent", job=job, attributes={"lk.agent_name": "my-agent"}
    )
    assert joined.participant.kind == models.ParticipantInfo.Kind.AGENT
    view = model.get_participant("P_1", "r1", "agent-AJ_1")
    assert (view.job_id, view.dispatch_id, view.attempt) == ("AJ_1", "AD_1", 2)
    assert view.attributes == {"lk.agent_name": "my-agent"}
    assert join(model, "human", kind="")[0].participant.kind == models.ParticipantInfo.Kind.STANDARD


def test_a_stored_room_lends_its_sid_and_settings(model: RoomModel, observer: Recorder) -> None:
    stored = StoredRoom("P_1", "r1", "RM_stored", 5, "APIkey1", "", "meta", 0, 0, 1)
    joined, _ = join(model, "alice", stored=stored)
    assert joined.room.sid == "RM_stored" and joined.room.metadata == "meta"
    assert joined.store_room is None and observer.kinds() == ["joined"]
    with pytest.raises(JoinRefused, match="full"):
        join(model, "bob", stored=stored)


def test_max_participants_from_the_token_room_config(model: RoomModel) -> None:
    join(model, "alice", room_config={"maxParticipants": 2, "emptyTimeout": 7})
    join(model, "bob")
    with pytest.raises(JoinRefused, match="full: it allows 2"):
        model.check(attempt("carol"))
    with pytest.raises(JoinRefused):
        join(model, "carol")
    join(model, "bob")  # a rejoin replaces, it does not add
    assert model.get_room("P_1", "r1") is not None
    assert model.get_room("P_1", "r1").empty_timeout_s == 7  # type: ignore[union-attr]


def test_a_malformed_room_config_refuses_with_400(model: RoomModel) -> None:
    with pytest.raises(JoinRefused) as refused:
        join(model, "alice", room_config={"maxParticipants": "lots"})
    assert refused.value.status == 400 and model.room_count() == 0


def test_a_refusing_observer_changes_nothing(model: RoomModel, observer: Recorder) -> None:
    observer.refuse = "attempt superseded"
    with pytest.raises(JoinRefused, match="superseded"):
        join(model, "agent")
    assert model.room_count() == 0 and observer.kinds() == []


def test_check_changes_nothing(model: RoomModel, observer: Recorder) -> None:
    model.check(attempt("alice"))
    assert model.room_count() == 0 and observer.kinds() == []


def test_mark_active_tells_the_others(model: RoomModel) -> None:
    _, alice = join(model, "alice")
    bob, bob_edge = join(model, "bob")
    model.mark_active(bob.sid)
    model.mark_active(bob.sid)
    assert [(p.identity, p.state) for p in alice.updates()][-1] == ("bob", State.ACTIVE)
    assert len(alice.updates()) == 2 and bob_edge.updates() == []


# -- leaving, timers


def test_leave_tells_the_others_with_the_reason(model: RoomModel, observer: Recorder) -> None:
    _, alice = join(model, "alice")
    bob, _ = join(model, "bob")
    assert model.leave(bob.sid) is True and model.leave(bob.sid) is False
    last = alice.updates()[-1]
    assert (last.identity, last.state, last.disconnect_reason) == (
        "bob",
        State.DISCONNECTED,
        Reason.CLIENT_INITIATED,
    )
    assert last.version > alice.updates()[0].version
    assert ("left", ("bob", "CLIENT_INITIATED")) in observer.events


def test_a_silent_participant_is_removed_after_the_ping_timeout(
    model: RoomModel, clock: Clock
) -> None:
    alice, alice_edge = join(model, "alice")
    _, bob_edge = join(model, "bob")
    clock.now += 10_000
    model.touch(alice.sid)
    clock.now += 10_000
    model.tick(clock.now)
    assert bob_edge.leaves == [(Reason.CONNECTION_TIMEOUT, Action.DISCONNECT)]
    assert alice_edge.leaves == []
    assert [p.identity for p in model.list_participants("P_1", "r1")] == ["alice"]


def test_a_room_nobody_joined_closes_after_its_empty_timeout(
    model: RoomModel, observer: Recorder, clock: Clock
) -> None:
    model.open_room(StoredRoom("P_1", "api-room", "RM_x", 0, empty_timeout_s=10))
    clock.now += 9_999
    model.tick(clock.now)
    assert model.room_count() == 1
    clock.now += 1
    model.tick(clock.now)
    assert model.room_count() == 0
    assert observer.events[-1] == ("finished", ("api-room", "empty timeout"))


def test_a_room_closes_departure_timeout_after_the_last_left(
    model: RoomModel, observer: Recorder, clock: Clock
) -> None:
    alice, _ = join(model, "alice")
    clock.now += 1_000_000  # far beyond the empty timeout: someone is in
    model.touch(alice.sid)
    model.tick(clock.now)
    model.leave(alice.sid)
    clock.now += 19_999
    model.tick(clock.now)
    assert model.room_count() == 1
    clock.now += 1
    model.tick(clock.now)
    assert observer.events[-1] == ("finished", ("r1", "departure timeout"))


# -- timers: the deadline heap must never go stale


def finished(observer: Recorder) -> list[tuple[str, str]]:
    return [args for kind, args in observer.events if kind == "finished"]


def tick_until(model: RoomModel, clock: Clock, end_ms: int, step_ms: int = 1_000) -> None:
    while clock.now < end_ms:
        clock.now = min(clock.now + step_ms, end_ms)
        model.tick(clock.now)


def test_a_room_emptied_again_closes_at_the_new_time(
    model: RoomModel, observer: Recorder, clock: Clock
) -> None:
    alice, _ = join(model, "alice")
    model.leave(alice.sid)  # first deadline: now + 20 s
    start = clock.now
    clock.now += 10_000
    bob, _ = join(model, "bob")
    model.leave(bob.sid)  # new deadline: start + 30 s
    tick_until(model, clock, start + 29_999)
    assert model.room_count() == 1 and finished(observer) == []
    clock.now += 1
    model.tick(clock.now)
    assert finished(observer) == [("r1", "departure timeout")]


def test_a_room_joined_before_its_deadline_stays_open(
    model: RoomModel, observer: Recorder, clock: Clock
) -> None:
    model.open_room(StoredRoom("P_1", "r1", "RM_x", 0, empty_timeout_s=10))
    clock.now += 5_000
    alice, edge = join(model, "alice")
    for _ in range(30):  # well past the 10 s empty deadline, alice pinging
        clock.now += 1_000
        model.touch(alice.sid)
        model.tick(clock.now)
    assert model.room_count() == 1 and edge.leaves == [] and finished(observer) == []


def test_leaving_switches_a_room_to_its_departure_timeout(
    model: RoomModel, observer: Recorder, clock: Clock
) -> None:
    model.open_room(StoredRoom("P_1", "r1", "RM_x", 0))  # empty deadline: now + 300 s
    alice, _ = join(model, "alice")
    model.leave(alice.sid)
    tick_until(model, clock, clock.now + 20_000)
    assert finished(observer) == [("r1", "departure timeout")]


def test_new_default_timeouts_move_the_deadlines_both_ways(
    model: RoomModel, observer: Recorder, clock: Clock
) -> None:
    start = clock.now
    model.open_room(StoredRoom("P_1", "short", "RM_s", 0))
    model.limits = RoomLimits(empty_timeout_s=5)
    model.tick(start + 4_999)
    assert finished(observer) == []
    model.tick(start + 5_000)
    assert finished(observer) == [("short", "empty timeout")]
    model.open_room(StoredRoom("P_1", "long", "RM_l", 0))  # empty deadline: start + 5 s
    model.limits = RoomLimits(empty_timeout_s=600)
    tick_until(model, clock, start + 599_999, step_ms=10_000)
    assert model.room_count() == 1
    clock.now += 1
    model.tick(clock.now)
    assert finished(observer)[-1] == ("long", "empty timeout")


def test_a_room_timeout_made_longer_is_waited_for(
    model: RoomModel, observer: Recorder, clock: Clock
) -> None:
    start = clock.now
    model.open_room(StoredRoom("P_1", "r1", "RM_x", 0, empty_timeout_s=10))
    model._rooms[("P_1", "r1")].empty_timeout_s = 30  # no API does this yet; a stale entry
    model.tick(start + 10_000)  # ... pops at the old deadline and finds it not due
    assert model.room_count() == 1
    model.tick(start + 29_999)
    assert model.room_count() == 1
    model.tick(start + 30_000)
    assert finished(observer) == [("r1", "empty timeout")]


def test_many_rooms_close_in_deadline_order_each_on_time(
    model: RoomModel, observer: Recorder, clock: Clock
) -> None:
    start = clock.now
    timeouts = [(i * 37) % 50 + 1 for i in range(50)]  # distinct, opened out of order
    for i, timeout_s in enumerate(timeouts):
        model.open_room(StoredRoom("P_1", f"r{i}", f"RM_{i}", 0, empty_timeout_s=timeout_s))
    closed_at: dict[str, int] = {}
    while model.room_count():
        clock.now += 500
        model.tick(clock.now)
        for name, _ in finished(observer)[len(closed_at):]:
            closed_at[name] = clock.now
    assert list(closed_at) == [f"r{i}" for i in sorted(range(50), key=lambda i: timeouts[i])]
    assert all(closed_at[f"r{i}"] == start + t * 1000 for i, t in enumerate(timeouts))


def test_rooms_due_in_one_tick_close_in_the_order_they_were_opened(
    model: RoomModel, observer: Recorder, clock: Clock
) -> None:
    for name, timeout_s in [("a", 3), ("b", 1), ("c", 2)]:
        model.open_room(StoredRoom("P_1", name, f"RM_{name}", 0, empty_timeout_s=timeout_s))
    model.tick(clock.now + 5_000)
    assert [name for name, _ in finished(observer)] == ["a", "b", "c"]


def test_a_finished_room_is_not_finished_again(
    model: RoomModel, observer: Recorder, clock: Clock
) -> None:
    start = clock.now
    model.open_room(StoredRoom("P_1", "empty", "RM_e", 0, empty_timeout_s=10))
    join(model, "alice", "busy")
    model.close_room("P_1", "empty")
    model.close_room("P_1", "busy")  # its leaving participant scheduled a departure deadline
    model.open_room(StoredRoom("P_1", "empty", "RM_e2", 0, empty_timeout_s=60))
    tick_until(model, clock, start + 59_000)
    assert finished(observer) == [("empty", "room deleted"), ("busy", "room deleted")]
    assert [r.sid for r in model.list_rooms("P_1")] == ["RM_e2"]  # the old deadline missed it
    tick_until(model, clock, start + 60_000)
    assert finished(observer)[-1] == ("empty", "empty timeout") and model.room_count() == 0
    assert model.counters["rooms.finished"] == 3


def test_a_room_emptied_by_ping_timeout_can_close_in_the_same_tick(
    observer: Recorder, clock: Clock
) -> None:
    limits = RoomLimits(ping_timeout_ms=15_000, empty_timeout_s=300, departure_timeout_s=0)
    model = RoomModel(observer, limits, clock)
    join(model, "alice")
    model.open_room(StoredRoom("P_1", "later", "RM_l", 0, empty_timeout_s=1))
    clock.now += 15_001
    model.tick(clock.now)
    assert observer.kinds()[-3:] == ["left", "finished", "finished"]
    assert finished(observer) == [("r1", "departure timeout"), ("later", "empty timeout")]


def test_join_and_leave_cycles_do_not_grow_the_deadline_heap(
    model: RoomModel, clock: Clock
) -> None:
    for _ in range(1_000):
        alice, _ = join(model, "alice")
        clock.now += 1
        model.leave(alice.sid)
    assert model.room_count() == 1
    assert len(model._deadlines) <= 100  # stale entries are compacted away


def test_close_room_disconnects_everyone(model: RoomModel, observer: Recorder) -> None:
    _, alice = join(model, "alice")
    _, bob = join(model, "bob")
    assert model.close_room("P_1", "r1") is True
    assert alice.leaves == bob.leaves == [(Reason.ROOM_DELETED, Action.DISCONNECT)]
    assert observer.kinds()[-3:] == ["left", "left", "finished"]
    assert model.room_count() == 0 and model.participant_count() == 0
    assert model.close_room("P_1", "r1") is False


def test_close_all_says_server_shutdown(model: RoomModel) -> None:
    _, alice = join(model, "alice")
    model.close_all()
    assert alice.leaves == [(Reason.SERVER_SHUTDOWN, Action.DISCONNECT)]


# -- metadata and attributes


def test_update_metadata_answers_ok_and_everyone_hears_it(model: RoomModel) -> None:
    alice, alice_edge = join(model, "alice")
    _, bob_edge = join(model, "bob")
    req = pb.UpdateParticipantMetadata(request_id=8, metadata="m", name="Alice")
    model.update_own_metadata(alice.sid, req)
    view = model.get_participant("P_1", "r1", "alice")
    assert (view.metadata, view.name) == ("m", "Alice")
    answer = alice_edge.signals[-1].request_response
    assert (answer.request_id, answer.reason) == (8, pb.RequestResponse.Reason.OK)
    assert alice_edge.signals[-2].update.participants[0].metadata == "m"  # update, then answer
    assert bob_edge.updates()[-1].name == "Alice"
    assert bob_edge.of("request_response") == []


def test_update_metadata_attributes_merge_and_delete(model: RoomModel) -> None:
    joined, edge = join(model, "alice", attributes={"a": "1", "b": "2"})
    model.update_own_metadata(
        joined.sid, pb.UpdateParticipantMetadata(attributes={"a": "", "c": "3"})
    )
    assert dict(edge.updates()[-1].attributes) == {"b": "2", "c": "3"}


def test_update_metadata_without_the_grant_is_not_allowed(model: RoomModel) -> None:
    joined, edge = join(model, "alice", video={"can_update_own_metadata": False})
    model.update_own_metadata(joined.sid, pb.UpdateParticipantMetadata(request_id=3, metadata="m"))
    answer = edge.signals[-1].request_response
    assert (answer.request_id, answer.reason) == (3, pb.RequestResponse.Reason.NOT_ALLOWED)
    assert model.get_participant("P_1", "r1", "alice").metadata == "" and edge.updates() == []


def test_oversized_attributes_are_refused(model: RoomModel) -> None:
    joined, edge = join(model, "alice")
    big = {"k": "x" * (65 * 1024)}
    model.update_own_metadata(
        joined.sid, pb.UpdateParticipantMetadata(request_id=1, attributes=big)
    )
    assert edge.signals[-1].request_response.reason == pb.RequestResponse.Reason.LIMIT_EXCEEDED


# -- data


def test_data_is_stamped_with_the_real_sender(model: RoomModel) -> None:
    alice, _ = join(model, "alice")
    _, bob = join(model, "bob")
    spoofed = packet(participant_identity="mallory", participant_sid="PA_fake")
    model.on_data(alice.sid, DataKind.RELIABLE, spoofed)
    (got,) = bob.packets()
    assert (got.participant_identity, got.participant_sid) == ("alice", alice.sid)
    assert (got.user.participant_identity, got.user.payload) == ("alice", b"x")
    assert bob.data[0][0] == DataKind.RELIABLE


def test_destination_identities_are_honoured_and_unknown_ones_dropped(model: RoomModel) -> None:
    alice, alice_edge = join(model, "alice")
    _, bob = join(model, "bob")
    _, carol = join(model, "carol")
    model.on_data(alice.sid, DataKind.LOSSY, packet(destination_identities=["bob", "ghost"]))
    assert len(bob.data) == 1 and carol.data == [] and alice_edge.data == []
    assert bob.data[0][0] == DataKind.LOSSY
    assert model.counters["data.dropped.unknown_destination"] == 1


def test_legacy_destination_sids_are_honoured(model: RoomModel) -> None:
    alice, _ = join(model, "alice")
    bob, bob_edge = join(model, "bob")
    _, carol = join(model, "carol")
    legacy = models.DataPacket(user=models.UserPacket(payload=b"x", destination_sids=[bob.sid]))
    model.on_data(alice.sid, DataKind.RELIABLE, legacy.SerializeToString())
    assert len(bob_edge.data) == 1 and carol.data == []


def test_sending_to_yourself_reaches_nobody(model: RoomModel) -> None:
    alice, alice_edge = join(model, "alice")
    join(model, "bob")
    model.on_data(alice.sid, DataKind.RELIABLE, packet(destination_identities=["alice"]))
    assert alice_edge.data == [] and model.counters["data.forwarded"] == 0


@pytest.mark.parametrize(
    ("kind", "size", "dropped"),
    [
        (DataKind.LOSSY, 15 * 1024, False),
        (DataKind.LOSSY, 15 * 1024 + 1, True),
        (DataKind.RELIABLE, 64 * 1024, False),
        (DataKind.RELIABLE, 64 * 1024 + 1, True),
    ],
)
def test_oversized_packets_are_dropped(
    model: RoomModel, kind: DataKind, size: int, dropped: bool
) -> None:
    alice, _ = join(model, "alice")
    _, bob = join(model, "bob")
    payload = packet(b"x" * size)
    payload = packet(b"x" * (2 * size - len(payload)))  # exactly `size` bytes on the wire
    assert len(payload) == size
    model.on_data(alice.sid, kind, payload)
    assert (bob.data == []) is dropped
    assert model.counters["data.dropped.oversize"] == int(dropped)


def test_data_without_the_grant_or_malformed_is_dropped(model: RoomModel) -> None:
    mute, _ = join(model, "mute", video={"can_publish_data": False})
    alice, _ = join(model, "alice")
    _, bob = join(model, "bob")
    model.on_data(mute.sid, DataKind.RELIABLE, packet())
    model.on_data(alice.sid, DataKind.RELIABLE, b"\xff\xff\xff not protobuf")
    model.on_data(alice.sid, DataKind.RELIABLE, b"")
    assert bob.data == []
    assert model.counters["data.dropped.not_allowed"] == 1
    assert model.counters["data.dropped.malformed"] == 2


def test_a_data_flood_is_rate_limited_logged_once_and_recovers(
    observer: Recorder, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    model = RoomModel(observer, RoomLimits(data_packets_per_s=10), clock)
    alice, _ = join(model, "alice")
    _, bob = join(model, "bob")
    for _ in range(50):
        model.on_data(alice.sid, DataKind.LOSSY, packet())
    assert len(bob.data) == 10 and model.counters["data.dropped.rate_limited"] == 40
    assert sum("rate limit" in r.message for r in caplog.records) == 1
    clock.now += 500
    for _ in range(10):
        model.on_data(alice.sid, DataKind.LOSSY, packet())
    assert len(bob.data) == 15


def test_a_byte_flood_is_rate_limited(observer: Recorder, clock: Clock) -> None:
    model = RoomModel(observer, RoomLimits(data_bytes_per_s=10_000), clock)
    alice, _ = join(model, "alice")
    _, bob = join(model, "bob")
    for _ in range(5):
        model.on_data(alice.sid, DataKind.RELIABLE, packet(b"x" * 4000))
    assert len(bob.data) == 2


def test_a_busy_receiver_is_counted(model: RoomModel) -> None:
    alice, _ = join(model, "alice")
    _, bob = join(model, "bob")
    bob.open = False
    model.on_data(alice.sid, DataKind.LOSSY, packet())
    assert model.counters["data.dropped.receiver_busy"] == 1


def test_data_from_an_unknown_sid_is_ignored(model: RoomModel) -> None:
    model.on_data("PA_nobody", DataKind.RELIABLE, packet())
    assert model.counters == {}


# -- the RoomService side


def test_remove_participant_kicks_with_participant_removed(model: RoomModel) -> None:
    _, alice = join(model, "alice")
    _, bob = join(model, "bob")
    model.remove_participant("P_1", "r1", "bob")
    assert bob.leaves == [(Reason.PARTICIPANT_REMOVED, Action.DISCONNECT)]
    assert alice.updates()[-1].disconnect_reason == Reason.PARTICIPANT_REMOVED
    with pytest.raises(NotFound):
        model.remove_participant("P_1", "r1", "bob")
    with pytest.raises(NotFound):
        model.remove_participant("P_2", "r1", "alice")


def test_update_participant_from_the_api(model: RoomModel) -> None:
    _, alice = join(model, "alice")
    _, bob = join(model, "bob")
    perm = models.ParticipantPermission(can_publish_data=False)
    info = model.update_participant(
        "P_1", "r1", "bob", metadata="m", attributes={"x": "1"}, permission=perm
    )
    assert (info.metadata, dict(info.attributes)) == ("m", {"x": "1"})
    assert alice.updates()[-1].metadata == "m" and bob.updates()[-1].metadata == "m"
    assert model.get_participant("P_1", "r1", "bob").permissions["can_publish_data"] is False
    with pytest.raises(InvalidArgument):
        model.update_participant("P_1", "r1", "bob", metadata="x" * (513 * 1024))


def test_send_data_from_the_server(model: RoomModel) -> None:
    _, alice = join(model, "alice")
    _, bob = join(model, "bob")
    sent = model.send_data("P_1", "r1", b"hello", DataKind.RELIABLE, ["bob"], topic="news")
    assert sent == 1 and alice.data == []
    (got,) = bob.packets()
    assert (got.user.payload, got.user.topic, got.participant_identity) == (b"hello", "news", "")
    assert model.send_data("P_1", "r1", b"all") == 2
    with pytest.raises(InvalidArgument):
        model.send_data("P_1", "r1", b"x" * 16 * 1024, DataKind.LOSSY)
    with pytest.raises(NotFound):
        model.send_data("P_1", "nope", b"x")


def test_update_room_metadata_reaches_everyone(model: RoomModel) -> None:
    _, alice = join(model, "alice")
    view = model.update_room_metadata("P_1", "r1", "new")
    assert view.metadata == "new"
    assert alice.of("room_update")[0].room_update.room.metadata == "new"


def test_list_and_info_views(model: RoomModel) -> None:
    join(model, "alice")
    join(model, "x", room="r2")
    assert [r.name for r in model.list_rooms("P_1")] == ["r1", "r2"]
    assert model.list_rooms("P_other") == []
    assert [p.identity for p in model.participant_infos("P_1", "r1")] == ["alice"]
    assert model.participant_info("P_1", "r1", "alice").identity == "alice"
    with pytest.raises(NotFound):
        model.list_participants("P_1", "missing")


def test_projects_do_not_share_rooms(model: RoomModel) -> None:
    other = ApiKey("APIother", "s", "P_2", "", 0)
    a, alice = join(model, "alice")
    b, _ = join(model, "bob", key=other)
    assert a.room.sid != b.room.sid and b.others == [] and alice.updates() == []
