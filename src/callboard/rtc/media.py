"""Audio routing on the event loop: one `Relay` per published track, fed by the publisher's
receiver, feeding the `ForwardTrack` of every subscriber's media section that carries it.

The room model decides who hears what (`RoomModel.subscriptions`) and tells the router when that
may have changed; the router asks each affected session to catch up (which may mean asking its
client to re-offer), and wires relays to whatever sections the last answer settled on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiortc import RTCRtpReceiver
from livekit.protocol import models
from livekit.protocol import rtc as pb

from callboard.rtc.relay import AdapterError, ForwardTrack, Relay, pass_through

if TYPE_CHECKING:
    from callboard.rtc.manager import RoomManager

log = logging.getLogger("callboard.rtc")

# A publisher louder than -50 dBov on average over a tick is speaking (LiveKit-like threshold).
SPEAKING_LEVEL = 10 ** (-50 / 20)


class MediaRouter:
    def __init__(self, manager: RoomManager) -> None:
        self.manager = manager
        self.relays: dict[str, Relay] = {}  # by track sid
        self._speaking: dict[str, float] = {}  # publisher sid → level, as last announced

    def relay(self, track_sid: str) -> Relay:
        relay = self.relays.get(track_sid)
        if relay is None:
            relay = self.relays[track_sid] = Relay(track_sid)
            relay.muted = self.manager.model.track_muted(track_sid)
        return relay

    # -- MediaListener (the model calls these)

    def subscriptions_changed(self, sids: list[str]) -> None:
        for sid in dict.fromkeys(sids):
            session = self.manager.sessions.get(sid)
            if session is None:
                self.drop_subscriber(sid)
            else:
                session.sync_subscriptions(self.manager.model.subscriptions(sid))

    def track_muted(self, track_sid: str, muted: bool) -> None:
        if track_sid in self.relays:
            self.relays[track_sid].muted = muted

    def track_removed(self, track_sid: str) -> None:
        relay = self.relays.pop(track_sid, None)
        if relay is not None:
            relay.sinks.clear()

    # -- sessions call these

    def publish(self, track_sid: str, receiver: RTCRtpReceiver, publisher_sid: str = "") -> bool:
        """Relay what `receiver` gets as `track_sid`, without decoding it."""
        relay = self.relay(track_sid)
        relay.publisher_sid = publisher_sid
        try:
            pass_through(receiver, relay.push, relay.note_level)
        except AdapterError:
            log.exception("cannot relay track %s", track_sid)
            return False
        return True

    def wire(self, subscriber_sid: str, sinks: dict[str, ForwardTrack]) -> None:
        """The subscriber's sections now carry exactly `sinks` (track sid → its track)."""
        for track_sid, relay in self.relays.items():
            sink = sinks.get(track_sid)
            if sink is None:
                relay.remove(subscriber_sid)
            else:
                relay.add(subscriber_sid, sink)
        for track_sid, sink in sinks.items():
            if track_sid not in self.relays and self.manager.model.has_track(track_sid):
                self.relay(track_sid).add(subscriber_sid, sink)

    def drop_subscriber(self, sid: str) -> None:
        for relay in self.relays.values():
            relay.remove(sid)

    # -- active speakers (from the audio-level header extension; nothing is decoded)

    def tick(self) -> None:
        """Announce `speakers_changed` to the rooms whose set of speakers changed."""
        levels: dict[str, float] = {}
        for relay in self.relays.values():
            level = relay.take_level()
            if relay.publisher_sid and level >= SPEAKING_LEVEL:
                levels[relay.publisher_sid] = max(level, levels.get(relay.publisher_sid, 0.0))
        changed = levels.keys() ^ self._speaking.keys()
        if not changed:
            self._speaking = levels
            return
        by_room: dict[tuple[str, ...], list[models.SpeakerInfo]] = {}
        for sid in changed:
            members = tuple(self.manager.model.room_members(sid))
            info = models.SpeakerInfo(sid=sid, level=levels.get(sid, 0.0), active=sid in levels)
            by_room.setdefault(members, []).append(info)
        self._speaking = levels
        for members, speakers in by_room.items():
            msg = pb.SignalResponse(speakers_changed=pb.SpeakersChanged(speakers=speakers))
            for member in members:
                session = self.manager.sessions.get(member)
                if session is not None:
                    session.send_signal(msg)

    def stats(self) -> dict[str, int]:
        return {
            "relays": len(self.relays),
            "relay_sinks": sum(len(r.sinks) for r in self.relays.values()),
        }
