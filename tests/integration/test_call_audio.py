"""`callboard call --say tone.wav --record heard.wav` against the example echo agent.

The caller publishes a 440 Hz tone from a 16-bit WAV file; the echo agent (real livekit-agents
worker) plays what it hears back on its own track; the call records that track to a WAV file,
whose loudest stretch must be the tone again. Needs audio in rooms (Opus relayed by the server).
"""

from __future__ import annotations

import wave
from pathlib import Path

import aiohttp
import numpy as np

from callboard.cli.wav import Pcm, read_pcm16, write_pcm16
from tests.support.audio import analyse
from tests.support.calls import place_call
from tests.support.cli import creds
from tests.support.echo_agents import echo_fleet
from tests.support.rtc import needs_netns
from tests.support.server import ServerProcess

pytestmark = needs_netns
RATE = 48_000


def tone_wav(path: Path, seconds: float = 2.0, hz: float = 440.0) -> Path:
    t = np.arange(int(RATE * seconds)) / RATE
    samples = (8000 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    write_pcm16(path, Pcm(samples.tobytes(), RATE, 1))
    return path


def loudest_window(samples: np.ndarray, size: int = 4800) -> np.ndarray:
    windows = [samples[i:i + size] for i in range(0, len(samples) - size, size)]
    return max(windows, key=lambda w: float(np.sqrt(np.mean(w.astype(np.float64) ** 2))))


async def test_say_and_record_round_trip_a_tone(
    server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    said = tone_wav(tmp_path / "tone.wav")
    heard = tmp_path / "heard.wav"
    with echo_fleet(server, tmp_path / "agents") as fleet:
        agent = fleet.start(suffix="tone")
        await fleet.wait_registered(http)
        result = place_call(tmp_path, *creds(server), "--say", str(said), "--record",
                            str(heard), "--linger", "2", suffix="tone")
    assert result.rc == 0, result.describe() + agent.describe()
    assert result.body["answered_by"]["worker_id"] == agent.worker_id
    assert result.body["recorded_s"] > 1.0
    pcm = read_pcm16(heard)
    assert (pcm.sample_rate, pcm.channels) == (RATE, 1)
    with wave.open(str(heard)) as wav:
        assert wav.getsampwidth() == 2
    peak_hz, rms = analyse(loudest_window(np.frombuffer(pcm.data, dtype="<i2")))
    assert abs(peak_hz - 440) < 15, peak_hz
    assert rms > 1000, rms
