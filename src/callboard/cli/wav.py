"""WAV files for `callboard call --say/--record`: 16-bit PCM only, read whole and written whole.

The standard library's `wave` reads only integer PCM; anything else (float, A-law, 8/24/32-bit)
is refused with a message that says what the file is and what to convert it to.
"""

from __future__ import annotations

import struct
import wave
from dataclasses import dataclass
from pathlib import Path


class WavError(Exception):
    """The file is not a WAV file we can publish; the message says why."""


@dataclass(frozen=True)
class Pcm:
    """Interleaved little-endian 16-bit samples."""

    data: bytes
    sample_rate: int
    channels: int

    @property
    def frames(self) -> int:
        return len(self.data) // (2 * self.channels)

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


_FORMATS = {1: "PCM", 3: "IEEE float", 6: "A-law", 7: "µ-law", 0xFFFE: "extensible"}
_HINT = "convert it, e.g. `ffmpeg -i IN -acodec pcm_s16le -ar 48000 -ac 1 OUT.wav`"


def read_pcm16(path: Path) -> Pcm:
    """The samples of a 16-bit PCM WAV file, or `WavError` saying what the file is instead."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, rate, channels = wav.getsampwidth(), wav.getframerate(), wav.getnchannels()
            data = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise WavError(f"{path}: no such file") from None
    except (wave.Error, EOFError) as exc:
        raise WavError(f"{path} is not 16-bit PCM WAV ({_describe(path, exc)}); {_HINT}") from None
    except OSError as exc:
        raise WavError(f"{path}: {exc.strerror or exc}") from None
    if width != 2:
        raise WavError(f"{path} is {8 * width}-bit PCM, not 16-bit; {_HINT}")
    if channels not in (1, 2) or rate < 8000 or rate > 96000:
        raise WavError(f"{path}: {channels} channels at {rate} Hz; use mono or stereo at 8-96 kHz")
    if not data:
        raise WavError(f"{path} has no samples")
    return Pcm(data, rate, channels)


def _describe(path: Path, exc: BaseException) -> str:
    """What the header says, when it is a RIFF/WAVE file with a format we do not take."""
    try:
        head = path.read_bytes()[:36]
    except OSError:
        return str(exc)
    if len(head) < 36 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return "not a RIFF/WAVE file"
    fmt, channels, rate = struct.unpack("<HHI", head[20:28])
    bits = struct.unpack("<H", head[34:36])[0]
    return f"{_FORMATS.get(fmt, f'format {fmt}')}, {bits}-bit, {channels} ch, {rate} Hz"


def write_pcm16(path: Path, pcm: Pcm) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(pcm.channels)
        wav.setsampwidth(2)
        wav.setframerate(pcm.sample_rate)
        wav.writeframes(pcm.data)
