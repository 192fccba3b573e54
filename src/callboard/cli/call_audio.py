"""Audio for `callboard call`: publish a WAV file (`--say`), record the agent's audio (`--record`).

Both use the real rtc SDK. A server that does not carry audio either refuses the track or never
confirms it; `publish_wav` turns both into `AudioUnsupported`, and a recorder that got nothing says
so rather than writing an empty file.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from livekit import rtc
from livekit.rtc.participant import PublishTrackError

from callboard.cli.wav import Pcm, write_pcm16

PUBLISH_TIMEOUT_S = 10.0
FRAME_MS = 10
RECORD_RATE = 48000


class AudioUnsupported(Exception):
    """The server did not take our audio track."""


async def publish_wav(room: rtc.Room, pcm: Pcm) -> None:
    """Publish `pcm` as a microphone track and play it out in real time, then unpublish."""
    source = rtc.AudioSource(pcm.sample_rate, pcm.channels)
    track = rtc.LocalAudioTrack.create_audio_track("say", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    try:
        publication = await asyncio.wait_for(
            room.local_participant.publish_track(track, options), PUBLISH_TIMEOUT_S
        )
    except (TimeoutError, PublishTrackError) as exc:
        why = str(exc) or f"no answer within {PUBLISH_TIMEOUT_S:g} s"
        raise AudioUnsupported(
            f"audio is not supported by this server yet (publishing the track failed: {why})"
        ) from None
    step = pcm.sample_rate * FRAME_MS // 1000
    width = 2 * pcm.channels
    for start in range(0, pcm.frames, step):
        chunk = pcm.data[start * width : (start + step) * width]
        samples = len(chunk) // width
        await source.capture_frame(rtc.AudioFrame(chunk, pcm.sample_rate, pcm.channels, samples))
    await source.wait_for_playout()
    with contextlib.suppress(Exception):
        await room.local_participant.unpublish_track(publication.sid)
    await source.aclose()


class Recorder:
    """Collects the audio of the agent's tracks (mono, 48 kHz) until `save`."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.tasks: set[asyncio.Task[None]] = set()

    def attach(self, track: rtc.Track) -> None:
        task = asyncio.ensure_future(self._pull(track))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _pull(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=RECORD_RATE, num_channels=1)
        try:
            async for event in stream:
                self.data += event.frame.data.tobytes()
        finally:
            await stream.aclose()

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def save(self, path: Path) -> float:
        """Write what was recorded; its length in seconds."""
        pcm = Pcm(bytes(self.data), RECORD_RATE, 1)
        write_pcm16(path, pcm)
        return pcm.duration_s
