"""Audio with the real LiveKit SDK: a 440 Hz tone published by one client, heard by another.

The server relays Opus RTP without decoding it (rtc/relay.py); these tests check what a real
libwebrtc receiver makes of it: the FFT peak at 440 Hz and the RMS within 5% of what was sent —
whether the listener joined before or after the publish, and after a republish. Mute (by the
client and by the server), manual unsubscribe, refused publishes and a vanishing publisher are
checked too, and afterwards nothing is left in the room manager's stats.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import pytest
from livekit import api, rtc
from livekit.protocol import room as room_pb

from callboard.server.app import DEV_KEY, DEV_SECRET
from tests.support.audio import Ear, Tone, assert_tone, is_quiet
from tests.support.rtc import (
    Client,
    RtcServer,
    connect,
    eventually,
    in_process_app,
    needs_netns,
    rtc_server,
    token,
)

pytestmark = [needs_netns, in_process_app]
MEDIA_STATS = ("relays", "relay_sinks", "forward_tracks", "peer_connections", "sessions")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RtcServer]:
    async with rtc_server(tmp_path) as running:
        yield running


async def close(*clients: Client) -> None:
    for client in clients:
        await client.close()


async def nothing_left(server: RtcServer) -> None:
    def clean() -> bool:
        stats = server.rooms.stats()
        return all(stats.get(name, 0) == 0 for name in MEDIA_STATS)

    await eventually(clean)


def tracks_of(client: Client, identity: str) -> list[rtc.RemoteTrackPublication]:
    for p in client.room.remote_participants.values():
        if p.identity == identity:
            return list(p.track_publications.values())
    return []


class AliceToBob(NamedTuple):
    alice: Client
    bob: Client
    ear: Ear
    tone: Tone


@contextlib.asynccontextmanager
async def alice_to_bob(server: RtcServer) -> AsyncIterator[AliceToBob]:
    """alice with a tone (not started yet) and bob with an ear, both in room-1; on the way out the
    tone stops, the ear closes and both leave."""
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    ear = Ear(bob.room)
    tone = Tone(alice.room)
    try:
        yield AliceToBob(alice, bob, ear, tone)
    finally:
        await tone.stop()
        await ear.close()
        await close(alice, bob)


async def test_listener_who_joined_before_the_publish_hears_the_tone(server: RtcServer) -> None:
    async with alice_to_bob(server) as (_, bob, ear, tone):
        publication = await tone.start()
        assert publication.sid.startswith("TR_")
        assert_tone(await ear.listen_for("alice", 1.0))
        (seen,) = tracks_of(bob, "alice")
        assert seen.sid == publication.sid
        assert seen.kind == rtc.TrackKind.KIND_AUDIO
        assert ear.subscribed == [("alice", publication.sid)]
    await nothing_left(server)


async def test_listener_who_joins_after_the_publish_hears_the_tone(server: RtcServer) -> None:
    alice = await connect(server, "alice")
    tone = Tone(alice.room)
    await tone.start()
    bob = Client("bob")
    ear = Ear(bob.room)
    try:
        await bob.room.connect(server.url, token("bob"))
        assert_tone(await ear.listen_for("alice", 1.0))
    finally:
        await tone.stop()
        await ear.close()
        await close(alice, bob)
    await nothing_left(server)


async def test_a_republished_tone_is_heard_again(server: RtcServer) -> None:
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    ear = Ear(bob.room)
    first = Tone(alice.room)
    try:
        await first.start()
        assert_tone(await ear.listen_for("alice", 0.5))
        await first.stop()
        await eventually(lambda: not tracks_of(bob, "alice"))
        assert server.rooms.stats()["relays"] == 0
        second = Tone(alice.room, frequency_hz=440.0)
        await second.start()
        mark = ear.mark("alice")
        await eventually(lambda: len(ear.subscribed) == 2)
        assert_tone(await ear.listen_for("alice", 1.0, since=mark))
        await second.stop()
    finally:
        await ear.close()
        await close(alice, bob)
    await nothing_left(server)


async def test_mute_stops_the_audio_and_unmute_brings_it_back(server: RtcServer) -> None:
    async with alice_to_bob(server) as (_, bob, ear, tone):
        publication = await tone.start()
        assert_tone(await ear.listen_for("alice", 0.5))
        assert publication.track is not None
        publication.track.mute()
        await eventually(lambda: all(t.muted for t in tracks_of(bob, "alice")))
        await asyncio.sleep(0.3)  # what was already on its way
        mark = ear.mark("alice")
        await asyncio.sleep(1.0)
        assert is_quiet(ear.samples("alice")[mark:]) or len(ear.samples("alice")) == mark
        publication.track.unmute()
        await eventually(lambda: not any(t.muted for t in tracks_of(bob, "alice")))
        assert_tone(await ear.listen_for("alice", 0.5, since=ear.mark("alice")))


async def test_a_server_side_mute_silences_the_track_and_tells_everyone(server: RtcServer) -> None:
    async with alice_to_bob(server) as (_, bob, ear, tone):
        publication = await tone.start()
        assert_tone(await ear.listen_for("alice", 0.5))
        sid = server.rooms.model.publisher_of(server.project_id, "room-1", publication.sid)
        assert server.rooms.model.set_muted(sid, publication.sid, True, by_server=True)
        await eventually(lambda: all(t.muted for t in tracks_of(bob, "alice")))
        await asyncio.sleep(0.3)
        mark = ear.mark("alice")
        await asyncio.sleep(1.0)
        heard = ear.samples("alice")[mark:]
        assert len(heard) == 0 or is_quiet(heard)


async def test_unsubscribing_stops_the_audio_and_resubscribing_resumes(server: RtcServer) -> None:
    async with alice_to_bob(server) as (_, bob, ear, tone):
        await tone.start()
        assert_tone(await ear.listen_for("alice", 0.5))
        (publication,) = tracks_of(bob, "alice")
        publication.set_subscribed(False)
        await eventually(lambda: server.rooms.stats()["relay_sinks"] == 0)
        publication.set_subscribed(True)
        await eventually(lambda: server.rooms.stats()["relay_sinks"] == 1)
        assert_tone(await ear.listen_for("alice", 0.5, since=ear.mark("alice")))


async def test_three_listeners_each_hear_the_tone(server: RtcServer) -> None:
    alice = await connect(server, "alice")
    listeners = [await connect(server, name) for name in ("bob", "carol", "dave")]
    ears = [Ear(c.room) for c in listeners]
    tone = Tone(alice.room)
    try:
        await tone.start()
        for ear in ears:
            assert_tone(await ear.listen_for("alice", 0.5))
        assert server.rooms.stats()["relay_sinks"] == 3
    finally:
        await tone.stop()
        for ear in ears:
            await ear.close()
        await close(alice, *listeners)
    await nothing_left(server)


async def test_a_publisher_that_vanishes_mid_stream_is_cleaned_up(server: RtcServer) -> None:
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    ear = Ear(bob.room)
    tone = Tone(alice.room)
    try:
        await tone.start()
        assert_tone(await ear.listen_for("alice", 0.5))
        await tone.stop(unpublish=False)
        session = next(s for s in server.rooms.sessions.values() if s.identity == "alice")
        await server.rooms.close_peer(session.peer)  # its media stops dead
        server.rooms.model.leave(session.sid)
        await eventually(lambda: "alice" not in bob.remote_identities)
        await eventually(lambda: server.rooms.stats()["relays"] == 0)
        assert server.rooms.stats()["relay_sinks"] == 0
        assert bob.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
    finally:
        await ear.close()
        await close(alice, bob)
    await nothing_left(server)


async def test_publishing_without_can_publish_is_refused_and_the_connection_stays(
    server: RtcServer,
) -> None:
    alice = await connect(server, "alice", can_publish=False)
    bob = await connect(server, "bob")
    tone = Tone(alice.room)
    try:
        with pytest.raises((TimeoutError, Exception)):
            await asyncio.wait_for(tone.start(), 2.0)
        assert server.rooms.stats()["tracks.refused.not_allowed"] == 1
        assert not tracks_of(bob, "alice")
        await alice.room.local_participant.publish_data(b"still here")
        await eventually(lambda: [p.data for p in bob.data] == [b"still here"])
    finally:
        with contextlib.suppress(Exception):
            await tone.stop(unpublish=False)
        await close(alice, bob)


async def test_video_is_refused_clearly_and_the_connection_stays(server: RtcServer) -> None:
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    source = rtc.VideoSource(64, 64)
    track = rtc.LocalVideoTrack.create_video_track("camera", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)
    try:
        with pytest.raises((TimeoutError, Exception)):
            await asyncio.wait_for(alice.room.local_participant.publish_track(track, options), 2)
        assert server.rooms.stats()["tracks.refused.unsupported_type"] == 1
        await alice.room.local_participant.publish_data(b"still here")
        await eventually(lambda: [p.data for p in bob.data] == [b"still here"])
        assert alice.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
    finally:
        await close(alice, bob)


async def test_room_service_mutes_a_track_and_updates_subscriptions(server: RtcServer) -> None:
    async with alice_to_bob(server) as (_, _, ear, tone):
        publication = await tone.start()
        assert_tone(await ear.listen_for("alice", 0.5))
        async with api.LiveKitAPI(server.http_url, DEV_KEY, DEV_SECRET) as lk:
            muted = await lk.room.mute_published_track(
                room_pb.MuteRoomTrackRequest(
                    room="room-1", identity="alice", track_sid=publication.sid, muted=True
                )
            )
            assert muted.track.sid == publication.sid and muted.track.muted
            await eventually(lambda: publication.track is not None and publication.track.muted)
            await lk.room.update_subscriptions(
                room_pb.UpdateSubscriptionsRequest(
                    room="room-1", identity="bob", track_sids=[publication.sid], subscribe=False
                )
            )
            await eventually(lambda: server.rooms.stats()["relay_sinks"] == 0)
            with pytest.raises(api.TwirpError):
                await lk.room.mute_published_track(
                    room_pb.MuteRoomTrackRequest(
                        room="room-1", identity="alice", track_sid="TR_nope", muted=True
                    )
                )


async def test_active_speakers_come_from_the_audio_level_header(server: RtcServer) -> None:
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    speakers: list[list[str]] = []
    bob.room.on("active_speakers_changed", lambda ps: speakers.append([p.identity for p in ps]))
    tone = Tone(alice.room)
    try:
        publication = await tone.start()
        await eventually(lambda: speakers and speakers[-1] == ["alice"])
        assert publication.track is not None
        publication.track.mute()
        await eventually(lambda: speakers[-1] == [])
    finally:
        await tone.stop()
        await close(alice, bob)
