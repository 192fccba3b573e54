"""Audio tracks in the room model: publish, refuse, mute, unpublish, who hears what. No I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from livekit.protocol import models
from livekit.protocol import rtc as pb

from callboard.protocol.errors import NotFound
from callboard.rooms.contract import ParticipantView, RoomView, TrackView
from callboard.rooms.limits import RoomLimits
from callboard.rooms.model import RoomModel
from tests.support.rtc import FakeEdge, Recorder
from tests.unit.test_rooms_model import Clock, attempt

Reason = pb.RequestResponse.Reason
AUDIO = models.TrackType.AUDIO
MIC = models.TrackSource.MICROPHONE


@dataclass
class Media:
    changed: list[list[str]] = field(default_factory=list)
    muted: list[tuple[str, bool]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def subscriptions_changed(self, sids: list[str]) -> None:
        self.changed.append(list(sids))

    def track_muted(self, track_sid: str, muted: bool) -> None:
        self.muted.append((track_sid, muted))

    def track_removed(self, track_sid: str) -> None:
        self.removed.append(track_sid)


class TrackRecorder(Recorder):
    def track_published(self, room: RoomView, p: ParticipantView, track: TrackView) -> None:
        self.events.append(("track_published", (p.identity, track)))

    def track_unpublished(self, room: RoomView, p: ParticipantView, track: TrackView) -> None:
        self.events.append(("track_unpublished", (p.identity, track)))


@pytest.fixture
def observer() -> TrackRecorder:
    return TrackRecorder()


@pytest.fixture
def media() -> Media:
    return Media()


@pytest.fixture
def model(observer: TrackRecorder, media: Media) -> RoomModel:
    model = RoomModel(observer, RoomLimits(max_tracks_per_participant=2), Clock())
    model.media = media
    return model


def join(model: RoomModel, identity: str, **kw: Any) -> tuple[str, FakeEdge]:
    edge = FakeEdge()
    joined = model.join(attempt(identity, **kw), edge)
    return joined.sid, edge


def add(model: RoomModel, sid: str, cid: str = "mic", kind: models.TrackType = AUDIO) -> None:
    model.add_track(sid, pb.AddTrackRequest(cid=cid, name=cid, type=kind, source=MIC))


def published(edge: FakeEdge) -> list[models.TrackInfo]:
    return [m.track_published.track for m in edge.of("track_published")]


def refusals(edge: FakeEdge) -> list[pb.RequestResponse]:
    return [m.request_response for m in edge.of("request_response")]


def test_add_track_answers_track_published_and_others_see_the_track(
    model: RoomModel, observer: TrackRecorder, media: Media
) -> None:
    alice, alice_edge = join(model, "alice")
    bob, bob_edge = join(model, "bob")
    add(model, alice)
    (info,) = published(alice_edge)
    assert info.sid.startswith("TR_") and info.type == AUDIO and info.mime_type == "audio/opus"
    assert alice_edge.of("track_published")[0].track_published.cid == "mic"
    latest = [p for p in bob_edge.updates() if p.identity == "alice"][-1]
    assert [t.sid for t in latest.tracks] == [info.sid] and latest.is_publisher
    assert model.subscriptions(bob) == {info.sid: alice}
    assert model.subscriptions(alice) == {}
    assert media.changed[-1] == [alice, bob]
    assert ("track_published", ("alice", observer.events[-1][1][1])) == observer.events[-1]
    assert model.track_sid_for(alice, "mic") == info.sid


def test_the_same_cid_twice_gets_the_same_track(model: RoomModel) -> None:
    alice, edge = join(model, "alice")
    add(model, alice)
    add(model, alice)
    first, second = published(edge)
    assert first.sid == second.sid
    assert model.counters["tracks.published"] == 1


def test_a_late_joiner_is_subscribed_to_tracks_already_published(model: RoomModel) -> None:
    alice, edge = join(model, "alice")
    add(model, alice)
    (info,) = published(edge)
    bob, _ = join(model, "bob")
    assert model.subscriptions(bob) == {info.sid: alice}


@pytest.mark.parametrize(
    ("grants", "kind", "reason", "counter"),
    [
        ({"can_publish": False}, AUDIO, Reason.NOT_ALLOWED, "tracks.refused.not_allowed"),
        ({}, models.TrackType.VIDEO, Reason.UNSUPPORTED_TYPE, "tracks.refused.unsupported_type"),
    ],
)
def test_refused_publishes_get_a_request_response_and_change_nothing(
    model: RoomModel, grants: dict[str, bool], kind: models.TrackType, reason: int, counter: str
) -> None:
    alice, edge = join(model, "alice", video=grants)
    bob, _ = join(model, "bob")
    add(model, alice, kind=kind)
    (refusal,) = refusals(edge)
    assert refusal.reason == reason and refusal.add_track.cid == "mic" and refusal.message
    assert published(edge) == [] and model.subscriptions(bob) == {}
    assert model.counters[counter] == 1
    assert edge.leaves == []  # the connection stays


def test_the_track_limit_is_per_participant(model: RoomModel) -> None:
    alice, edge = join(model, "alice")
    for cid in ("a", "b", "c"):
        add(model, alice, cid)
    assert len(published(edge)) == 2
    (refusal,) = refusals(edge)
    assert refusal.reason == Reason.LIMIT_EXCEEDED and "at most 2" in refusal.message


def test_mute_by_the_client_is_announced_and_reaches_the_relay(
    model: RoomModel, media: Media
) -> None:
    alice, alice_edge = join(model, "alice")
    _, bob_edge = join(model, "bob")
    add(model, alice)
    (info,) = published(alice_edge)
    assert model.set_muted(alice, info.sid, True)
    assert media.muted == [(info.sid, True)]
    assert [p for p in bob_edge.updates() if p.identity == "alice"][-1].tracks[0].muted
    assert model.track_muted(info.sid)
    assert alice_edge.of("mute") == []  # the client muted itself: nothing to tell it
    assert not model.set_muted(alice, "TR_unknown", True)


def test_mute_by_the_server_tells_the_publisher(model: RoomModel) -> None:
    alice, edge = join(model, "alice")
    add(model, alice)
    (info,) = published(edge)
    track = model.mute_published_track("P_1", "r1", "alice", info.sid, True)
    assert track.muted
    (mute,) = edge.of("mute")
    assert mute.mute.sid == info.sid and mute.mute.muted
    with pytest.raises(NotFound):
        model.mute_published_track("P_1", "r1", "alice", "TR_nope", True)


def test_unpublish_removes_the_track_everywhere(
    model: RoomModel, observer: TrackRecorder, media: Media
) -> None:
    alice, alice_edge = join(model, "alice")
    bob, bob_edge = join(model, "bob")
    add(model, alice)
    (info,) = published(alice_edge)
    assert model.unpublish(alice, info.sid)
    assert alice_edge.of("track_unpublished")[0].track_unpublished.track_sid == info.sid
    assert [p for p in bob_edge.updates() if p.identity == "alice"][-1].tracks == []
    assert model.subscriptions(bob) == {}
    assert media.removed == [info.sid]
    assert observer.events[-1][0] == "track_unpublished"
    assert model.track_sid_for(alice, "mic") == ""
    assert not model.unpublish(alice, info.sid)


def test_a_leaving_publisher_takes_its_tracks_along(
    model: RoomModel, observer: TrackRecorder, media: Media
) -> None:
    alice, alice_edge = join(model, "alice")
    bob, _ = join(model, "bob")
    add(model, alice)
    (info,) = published(alice_edge)
    model.leave(alice)
    assert media.removed == [info.sid]
    assert media.changed[-1] == [alice, bob]
    assert model.subscriptions(bob) == {} and not model.has_track(info.sid)
    assert ("track_unpublished", "alice") in [
        (k, v[0]) for k, v in observer.events if k.startswith("track")
    ]


def test_manual_unsubscribe_and_resubscribe(model: RoomModel) -> None:
    alice, edge = join(model, "alice")
    bob, _ = join(model, "bob")
    add(model, alice)
    (info,) = published(edge)
    model.update_subscription(bob, pb.UpdateSubscription(track_sids=[info.sid], subscribe=False))
    assert model.subscriptions(bob) == {}
    update = pb.UpdateSubscription(
        participant_tracks=[models.ParticipantTracks(participant_sid=alice, track_sids=[info.sid])],
        subscribe=True,
    )
    model.update_subscriptions("P_1", "r1", "bob", update)
    assert model.subscriptions(bob) == {info.sid: alice}


def test_without_auto_subscribe_only_chosen_tracks_are_received(model: RoomModel) -> None:
    alice, edge = join(model, "alice")
    bob_edge = FakeEdge()
    bob = model.join(
        attempt("bob").__class__(**{**attempt("bob").__dict__, "auto_subscribe": False}), bob_edge
    ).sid
    add(model, alice)
    (info,) = published(edge)
    assert model.subscriptions(bob) == {}
    model.update_subscription(bob, pb.UpdateSubscription(track_sids=[info.sid], subscribe=True))
    assert model.subscriptions(bob) == {info.sid: alice}


def test_can_subscribe_false_receives_nothing(model: RoomModel) -> None:
    alice, _ = join(model, "alice")
    bob, _ = join(model, "bob", video={"can_subscribe": False})
    add(model, alice)
    assert model.subscriptions(bob) == {}


def test_subscription_permission_limits_who_hears_a_publisher(model: RoomModel) -> None:
    alice, edge = join(model, "alice")
    bob, _ = join(model, "bob")
    carol, _ = join(model, "carol")
    add(model, alice)
    (info,) = published(edge)
    only_bob = pb.SubscriptionPermission(
        all_participants=False,
        track_permissions=[pb.TrackPermission(participant_identity="bob", all_tracks=True)],
    )
    model.set_subscription_permission(alice, only_bob)
    assert model.subscriptions(bob) == {info.sid: alice}
    assert model.subscriptions(carol) == {}
    by_track = pb.SubscriptionPermission(
        track_permissions=[pb.TrackPermission(participant_sid=carol, track_sids=["TR_other"])]
    )
    model.set_subscription_permission(alice, by_track)
    assert model.subscriptions(bob) == {} and model.subscriptions(carol) == {}
    model.set_subscription_permission(alice, pb.SubscriptionPermission(all_participants=True))
    assert model.subscriptions(carol) == {info.sid: alice}


def test_observers_without_track_methods_still_work() -> None:
    model = RoomModel(Recorder(), RoomLimits(), Clock())
    edge = FakeEdge()
    sid = model.join(attempt("alice"), edge).sid
    add(model, sid)
    assert len(published(edge)) == 1
    model.leave(sid)
