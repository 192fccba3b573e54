"""Relay Opus RTP from a publisher to its subscribers without decoding or re-encoding.

aiortc has no public RTP-forwarding API, so this is a small adapter around two of its seams
(pinned: aiortc 1.16.0; `pass_through` raises AdapterError if the receiver seam moves):

- Receiving: `RTCRtpReceiver` reassembles each RTP packet into an encoded frame in its jitter
  buffer and puts `(codec, frame)` on a queue read by a decoder thread. `pass_through(receiver,
  deliver)` swaps that queue for one whose `put` hands the encoded Opus payload and its RTP
  timestamp straight to `deliver`, on the event loop, and forwards only the end-of-stream marker
  to the decoder thread (which therefore never decodes anything and just waits to be stopped).
  Its jitter buffer is replaced too: every Opus RTP packet is a whole frame, so each is handed
  on the moment it arrives (aiortc's buffer holds a frame until the next packet shows it complete,
  20 ms). Reordering is left to the subscriber's own jitter buffer, as an SFU does.
- Sending: `RTCRtpSender` only packetises an `av.Packet` it gets from its track (no encoder runs),
  using `pts` in `time_base`. `ForwardTrack` is such a track: a bounded per-subscriber queue of
  packets whose timestamps it rebases when its source changes (a republish, another publisher on
  the same media section), advancing them by the time that really passed, as receivers expect.

`Relay` fans one published track out to its subscribers' `ForwardTrack`s. Each sink has its own
small queue and drops its oldest packet when full, so a subscriber that stops reading loses
audio itself and never delays anyone else. A muted relay drops everything.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import queue
import time
from collections.abc import Callable
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCRtpReceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

log = logging.getLogger("callboard.rtc")

OPUS_CLOCK_HZ = 48_000
TIME_BASE = fractions.Fraction(1, OPUS_CLOCK_HZ)
FRAME_TICKS = 960  # 20 ms at 48 kHz, the frame size every LiveKit SDK sends
LATE_TICKS = 10 * FRAME_TICKS  # a packet less than 200 ms behind is late; further, a new timeline
# Per-subscriber queue: 15 frames = 300 ms of audio; beyond that the oldest is dropped.
SINK_QUEUE_FRAMES = 15

_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"

Deliver = Callable[[bytes, int], None]
OnLevel = Callable[[int], None]  # the sender's audio level, in -dBov (0 loudest, 127 silence)


class AdapterError(RuntimeError):
    """aiortc's internals are not what this adapter was written against (version pinned)."""


class _NoJitterBuffer:
    """Stands in for the receiver's jitter buffer: each packet is a complete Opus frame. It also
    sees the packet's header extensions: the audio level (RFC 6464) goes to `on_level`."""

    def __init__(self, on_level: OnLevel | None) -> None:
        self.on_level = on_level

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        level = packet.extensions.audio_level
        if level is not None and self.on_level is not None:
            self.on_level(int(level[1]))
        data: bytes = getattr(packet, "_data", packet.payload)
        return False, JitterFrame(data=data, timestamp=packet.timestamp)


class _PassThroughQueue:
    """Stands in for the receiver's decoder queue: frames go to `deliver`, not to a decoder."""

    def __init__(self, inner: queue.Queue[Any], deliver: Deliver) -> None:
        self.inner = inner
        self.deliver = deliver
        self.frames = 0

    def put(self, item: Any) -> None:
        if item is None:  # the receiver is stopping: let its decoder thread end
            self.inner.put(None)
            return
        _codec, frame = item
        self.frames += 1
        try:
            self.deliver(bytes(frame.data), int(frame.timestamp))
        except Exception:
            log.exception("relaying an audio frame failed")

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.get(*args, **kwargs)


def pass_through(
    receiver: RTCRtpReceiver, deliver: Deliver, on_level: OnLevel | None = None
) -> _PassThroughQueue:
    """Make `receiver` hand its encoded audio frames to `deliver(payload, rtp_timestamp)` (and
    the audio-level header of each packet, when the sender sets it, to `on_level`)."""
    inner = getattr(receiver, _QUEUE_ATTR, None)
    if isinstance(inner, _PassThroughQueue):
        inner.deliver = deliver
        jitter = getattr(receiver, _JITTER_ATTR, None)
        if isinstance(jitter, _NoJitterBuffer):
            jitter.on_level = on_level
        return inner
    if not isinstance(inner, queue.Queue) or not hasattr(receiver, _JITTER_ATTR):
        raise AdapterError("aiortc's RTCRtpReceiver internals changed: cannot relay audio")
    adapter = _PassThroughQueue(inner, deliver)
    setattr(receiver, _QUEUE_ATTR, adapter)
    setattr(receiver, _JITTER_ATTR, _NoJitterBuffer(on_level))
    return adapter


class ForwardTrack(MediaStreamTrack):
    """An audio track of pre-encoded Opus packets for one subscriber's media section."""

    kind = "audio"

    def __init__(self, track_id: str = "", maxsize: int = SINK_QUEUE_FRAMES) -> None:
        super().__init__()
        if track_id:
            self._id = track_id
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self._offset: int | None = None
        self._last_pts = -FRAME_TICKS
        self._last_push_s = time.monotonic()
        self.forwarded = 0
        self.dropped = 0
        self.late = 0

    def retarget(self, track_id: str) -> None:
        """A new source from now on: its timestamps are rebased to continue ours."""
        self._id = track_id
        self._offset = None
        self.flush()

    def flush(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    def push(self, payload: bytes, timestamp: int) -> bool:
        """Queue one Opus frame; when the queue is full the oldest frame is dropped."""
        if self.readyState != "live":
            return False
        now = time.monotonic()
        if self._offset is None:  # a new source continues after the time that really passed
            gap = max(1, round((now - self._last_push_s) * OPUS_CLOCK_HZ / FRAME_TICKS))
            self._offset = self._last_pts + gap * FRAME_TICKS - timestamp
        self._last_push_s = now
        pts = timestamp + self._offset
        if pts <= self._last_pts:
            if self._last_pts - pts < LATE_TICKS:  # a late (reordered) packet: drop it
                self.late += 1
                return False
            # the source jumped back in time: continue from where we are
            self._offset += self._last_pts + FRAME_TICKS - pts
            pts = self._last_pts + FRAME_TICKS
        self._last_pts = pts
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = TIME_BASE
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(packet)
        self.forwarded += 1
        return True

    async def recv(self) -> Any:
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            self.flush()
            self._queue.put_nowait(None)
        super().stop()


class Relay:
    """One published audio track and the subscribers' tracks it feeds."""

    def __init__(self, track_sid: str, publisher_sid: str = "") -> None:
        self.track_sid = track_sid
        self.publisher_sid = publisher_sid
        self.sinks: dict[str, ForwardTrack] = {}  # by subscriber sid
        self.muted = False
        self.frames_in = 0
        self._level_sum = 0.0
        self._level_count = 0

    def note_level(self, dbov: int) -> None:
        self._level_sum += 10 ** (-min(127, max(0, dbov)) / 20)
        self._level_count += 1

    def take_level(self) -> float:
        """The mean linear audio level (0..1) since the last call; 0 when muted or unknown."""
        level = self._level_sum / self._level_count if self._level_count else 0.0
        self._level_sum, self._level_count = 0.0, 0
        return 0.0 if self.muted else level

    def push(self, payload: bytes, timestamp: int) -> None:
        self.frames_in += 1
        if self.muted:
            return
        for sink in self.sinks.values():
            sink.push(payload, timestamp)

    def add(self, subscriber_sid: str, sink: ForwardTrack) -> None:
        self.sinks[subscriber_sid] = sink

    def remove(self, subscriber_sid: str) -> ForwardTrack | None:
        return self.sinks.pop(subscriber_sid, None)
