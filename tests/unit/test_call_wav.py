"""WAV files for --say/--record: 16-bit PCM in and out, anything else refused with a reason."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from callboard.cli.wav import Pcm, WavError, read_pcm16, write_pcm16


def test_round_trip(tmp_path: Path) -> None:
    pcm = Pcm(bytes(range(256)) * 10, 48000, 2)
    write_pcm16(tmp_path / "a.wav", pcm)
    assert read_pcm16(tmp_path / "a.wav") == pcm
    assert pcm.frames == 640 and pcm.duration_s == pytest.approx(640 / 48000)


def test_other_widths_are_refused(tmp_path: Path) -> None:
    for width in (1, 3, 4):
        path = tmp_path / f"w{width}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(width)
            w.setframerate(16000)
            w.writeframes(b"\0" * width * 10)
        with pytest.raises(WavError, match=f"is {8 * width}-bit PCM, not 16-bit"):
            read_pcm16(path)


def test_empty_and_odd_files(tmp_path: Path) -> None:
    write_pcm16(tmp_path / "empty.wav", Pcm(b"", 16000, 1))
    with pytest.raises(WavError, match="has no samples"):
        read_pcm16(tmp_path / "empty.wav")
    (tmp_path / "x.wav").write_bytes(b"RIFF")
    with pytest.raises(WavError, match="not a RIFF/WAVE file"):
        read_pcm16(tmp_path / "x.wav")
    with pytest.raises(WavError, match="no such file"):
        read_pcm16(tmp_path / "nope.wav")


def test_odd_rates_and_channel_counts_are_refused(tmp_path: Path) -> None:
    write_pcm16(tmp_path / "six.wav", Pcm(b"\0" * 120, 16000, 6))
    with pytest.raises(WavError, match="6 channels at 16000 Hz"):
        read_pcm16(tmp_path / "six.wav")
