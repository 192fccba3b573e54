"""Tones in, tones out: publish a sine with the real LiveKit SDK, record what a subscriber hears.

`Tone` publishes a sine wave from an `rtc.AudioSource` (20 ms frames, paced by the source's own
queue). `Ear` records, per publisher identity, the audio a client receives through
`rtc.AudioStream`. `analyse` gives the FFT peak frequency and the RMS of a window of samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms
AMPLITUDE = 8000  # int16 peak: an RMS of 8000 / sqrt(2)


def sent_rms(amplitude: float = AMPLITUDE) -> float:
    return amplitude / math.sqrt(2)


def analyse(samples: np.ndarray) -> tuple[float, float]:
    """(frequency of the FFT peak in Hz, RMS) of int16 samples at 48 kHz."""
    data = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(data * np.hanning(len(data))))
    freqs = np.fft.rfftfreq(len(data), 1 / SAMPLE_RATE)
    return float(freqs[int(np.argmax(spectrum))]), float(np.sqrt(np.mean(data**2)))


@dataclass
class Tone:
    """A published sine wave; `stop()` ends it (and unpublishes, unless told not to)."""

    room: rtc.Room
    frequency_hz: float = 440.0
    amplitude: float = AMPLITUDE
    name: str = "tone"
    publication: rtc.LocalTrackPublication | None = None
    _source: rtc.AudioSource | None = None
    _task: asyncio.Task[None] | None = None
    _phase: int = 0

    async def start(self) -> rtc.LocalTrackPublication:
        self._source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=100)
        track = rtc.LocalAudioTrack.create_audio_track(self.name, self._source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        self.publication = await self.room.local_participant.publish_track(track, options)
        self._task = asyncio.create_task(self._play())
        return self.publication

    async def _play(self) -> None:
        assert self._source is not None
        while True:
            t = (np.arange(FRAME_SAMPLES) + self._phase) / SAMPLE_RATE
            self._phase += FRAME_SAMPLES
            wave = (self.amplitude * np.sin(2 * np.pi * self.frequency_hz * t)).astype(np.int16)
            frame = rtc.AudioFrame(wave.tobytes(), SAMPLE_RATE, 1, FRAME_SAMPLES)
            await self._source.capture_frame(frame)

    async def stop(self, unpublish: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if unpublish and self.publication is not None:
            with contextlib.suppress(Exception):
                await self.room.local_participant.unpublish_track(self.publication.sid)
        if self._source is not None:
            with contextlib.suppress(Exception):
                await self._source.aclose()


@dataclass
class Ear:
    """Everything a client hears, per publisher identity (int16 samples, 48 kHz mono)."""

    room: rtc.Room
    heard: dict[str, list[np.ndarray]] = field(default_factory=dict)
    subscribed: list[tuple[str, str]] = field(default_factory=list)  # (identity, track sid)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # by track sid

    def __post_init__(self) -> None:
        self.room.on("track_subscribed", self._on_track)
        self.room.on("track_unsubscribed", self._on_gone)

    def _on_gone(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        """Stop listening: a section the server reuses would otherwise be heard twice."""
        task = self._tasks.pop(publication.sid, None)
        if task is not None:
            task.cancel()

    def _on_track(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if track.kind != rtc.TrackKind.KIND_AUDIO:
            return
        self.subscribed.append((participant.identity, publication.sid))
        self._tasks[publication.sid] = asyncio.create_task(
            self._listen(track, participant.identity)
        )

    async def _listen(self, track: rtc.Track, identity: str) -> None:
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        try:
            async for event in stream:
                samples = np.frombuffer(event.frame.data, dtype=np.int16).copy()
                self.heard.setdefault(identity, []).append(samples)
        finally:
            await stream.aclose()

    def samples(self, identity: str) -> np.ndarray:
        chunks = self.heard.get(identity, [])
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def mark(self, identity: str) -> int:
        """How many samples were heard so far (to analyse only what comes after)."""
        return len(self.samples(identity))

    async def listen_for(
        self,
        identity: str,
        seconds: float,
        since: int | None = None,
        timeout_s: float = 15.0,
        settle_s: float = 0.5,
    ) -> np.ndarray:
        """Wait until `settle_s` + `seconds` of audible sound arrived after `since`; return the
        last `seconds` (the receiver's jitter buffer adapts during the first moments)."""
        start = self.mark(identity) if since is None else since
        want = int((seconds + settle_s) * SAMPLE_RATE)
        keep = int(seconds * SAMPLE_RATE)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            audible = _from_first_sound(self.samples(identity)[start:])
            if len(audible) >= want:
                return audible[-keep:]
            await asyncio.sleep(0.05)
        raise AssertionError(f"heard under {seconds}s of sound from {identity} in {timeout_s}s")

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _from_first_sound(samples: np.ndarray, threshold: int = 500) -> np.ndarray:
    loud = np.nonzero(np.abs(samples) > threshold)[0]
    return samples[loud[0] :] if len(loud) else samples[:0]


def assert_tone(samples: np.ndarray, frequency_hz: float = 440.0, rms: float = 0.0) -> None:
    """The FFT peak is within 2 Hz of `frequency_hz` and the RMS within 5% of `rms`."""
    peak_hz, got_rms = analyse(samples)
    expected = rms or sent_rms()
    assert abs(peak_hz - frequency_hz) <= 2.0, f"peak at {peak_hz:.1f} Hz"
    assert abs(got_rms - expected) <= 0.05 * expected, f"RMS {got_rms:.0f}, sent {expected:.0f}"


def is_quiet(samples: np.ndarray, level: float = 200.0) -> bool:
    return len(samples) > 0 and analyse(samples)[1] < level
