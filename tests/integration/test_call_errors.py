"""`callboard call` and `callboard perf` bad input: each is one line on stderr, no traceback.

None of these reach WebRTC, so they run anywhere (no network namespace needed).
"""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import aiohttp
import pytest

from tests.support.cli import acb, cb, creds, isolate, one_line_error, usage_error
from tests.support.clients import light_worker
from tests.support.server import ServerProcess, free_port


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


def write_wav(path: Path, width: int, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(b"\0" * width * 160)
    return path


def write_float_wav(path: Path) -> Path:
    data = struct.pack("<160f", *([0.0] * 160))
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
                     + b"fmt " + struct.pack("<I", 16) + fmt
                     + b"data" + struct.pack("<I", len(data)) + data)
    return path


def test_missing_credentials_say_which_and_where() -> None:
    for command in (["call", "--message", "hi"],
                    ["perf", "agent-load-test", "--agent-name", "a"]):
        text = one_line_error(cb(*command), 2, "no credentials", "URL", "API key",
                              "$LIVEKIT_URL", "cli-config.yaml")
        assert "API secret" in text


def test_unreachable_server_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for command in (["call", "--agent", "a", "--message", "hi"],
                    ["perf", "agent-load-test", "--agent-name", "a"]):
        one_line_error(cb(*command, "--url", url, "--api-key", "k", "--api-secret", "s"), 1,
                       f"cannot reach callboard at {url}", "connection refused")


def test_a_wav_that_is_not_16_bit_pcm_is_refused(tmp_path: Path) -> None:
    dev = ["--dev"]
    eight = write_wav(tmp_path / "eight.wav", 1)
    one_line_error(cb("call", "--say", str(eight), *dev), 2, "eight.wav is 8-bit PCM, not 16-bit",
                   "pcm_s16le")
    floats = write_float_wav(tmp_path / "float.wav")
    one_line_error(cb("call", "--say", str(floats), *dev), 2, "float.wav is not 16-bit PCM WAV",
                   "IEEE float, 32-bit")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    one_line_error(cb("call", "--say", str(text), *dev), 2, "not a RIFF/WAVE file")
    one_line_error(cb("call", "--say", str(tmp_path / "missing.wav"), *dev), 2, "no such file")


def test_expect_reply_needs_a_message() -> None:
    usage_error(cb("call", "--expect-reply", "--dev"), "--expect-reply needs --message")


async def test_no_single_agent_lists_them_and_asks_for_agent(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    jack = await light_worker(http, server, "my-agent-jack")
    jill = await light_worker(http, server, "my-agent-jill")
    several = await acb("call", "--message", "hi", *creds(server))
    one_line_error(several, 2, "several agent names served by the project's workers",
                   "my-agent-jack, my-agent-jill", "give --agent NAME")
    none = await acb("call", "--message", "hi", *creds(server),
                     env={"LIVEKIT_AGENT_SUFFIX": "zed"})
    one_line_error(none, 2, "no agent name ending in '-zed' ($LIVEKIT_AGENT_SUFFIX)",
                   "agent names served now: my-agent-jack, my-agent-jill")
    for worker in (jack, jill):
        await worker.close()
