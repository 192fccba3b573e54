"""An echo agent for callboard, written with the real `livekit-agents` SDK (no callboard imports).

It answers chat (text streams on `lk.chat`) with a text stream on `lk.transcription`, the topic an
AgentSession uses for what the agent says, and echoes the caller's microphone back as its own audio
track when the server carries audio. Its name follows the seed's suffix pattern, so two developers
running it against one server each get their own agent:

    LIVEKIT_AGENT_SUFFIX=jack python examples/echo_agent.py dev     # registers echo-agent-jack
    callboard call --message hi --expect-reply                      # with the same suffix set

Environment: LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET (`callboard env --write .env.local`
writes them), LIVEKIT_AGENT_SUFFIX, and optionally ECHO_AGENT_EVENTS=FILE, which appends one JSON
line per job (worker id, job id, room) — the tests count jobs with it.

Commands (livekit-agents 1.8.9's built-in CLI, `cli.run_app`): `dev` and `start` both work against
callboard; that CLI is deprecated upstream in favour of `lk agent …`, and `dev` no longer reloads
on file changes. `console` cannot run here: it needs PortAudio (`sounddevice`) and an audio
device, and it drives an AgentSession voice pipeline (STT/LLM/TTS), which this agent does not use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any

from livekit import rtc
from livekit.agents import AgentServer, JobContext, cli

BASE_AGENT_NAME = "echo-agent"
_dev_suffix = os.getenv("LIVEKIT_AGENT_SUFFIX", "")
AGENT_NAME = f"{BASE_AGENT_NAME}-{_dev_suffix}" if _dev_suffix else BASE_AGENT_NAME

CHAT_TOPIC = "lk.chat"
REPLY_TOPIC = "lk.transcription"
logger = logging.getLogger("echo-agent")


def note(**fields: Any) -> None:
    """One JSON line in $ECHO_AGENT_EVENTS, when set (for tests and the curious)."""
    path = os.getenv("ECHO_AGENT_EVENTS")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({**fields, "agent_name": AGENT_NAME, "at": time.time()}) + "\n")


class Echo:
    """One job: chat answered as text, the caller's audio played back."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.room = ctx.room
        self.tasks: set[asyncio.Task[None]] = set()
        self.callers_left = asyncio.Event()

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def on_chat(self, reader: rtc.TextStreamReader, sender: str) -> None:
        self.spawn(self.answer(reader, sender))

    async def answer(self, reader: rtc.TextStreamReader, sender: str) -> None:
        text = await reader.read_all()
        note(event="chat", job_id=self.ctx.job.id, sender=sender, text=text)
        await self.room.local_participant.send_text(
            f"echo: {text}", topic=REPLY_TOPIC, destination_identities=[sender],
            attributes={"lk.transcription_final": "true"})

    def on_track(self, track: rtc.Track, _pub: rtc.RemoteTrackPublication,
                 participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self.spawn(self.echo_audio(track, participant.identity))

    async def echo_audio(self, track: rtc.Track, identity: str) -> None:
        """Play the caller's audio back on a track of our own (needs a server that has audio)."""
        try:
            source = rtc.AudioSource(48000, 1)
            mine = rtc.LocalAudioTrack.create_audio_track(f"echo-{identity}", source)
            options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            await self.room.local_participant.publish_track(mine, options)
            async for event in rtc.AudioStream(track, sample_rate=48000, num_channels=1):
                await source.capture_frame(event.frame)
        except Exception:  # audio is best effort: chat must go on without it
            logger.warning("audio echo for %s stopped", identity, exc_info=True)

    def on_left(self, _participant: rtc.RemoteParticipant) -> None:
        agents = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        if not any(p.kind != agents for p in self.room.remote_participants.values()):
            self.callers_left.set()

    async def run(self) -> None:
        self.room.register_text_stream_handler(CHAT_TOPIC, self.on_chat)
        self.room.on("track_subscribed", self.on_track)
        self.room.on("participant_disconnected", self.on_left)
        await self.ctx.connect()
        note(event="job", job_id=self.ctx.job.id, room=self.room.name,
             identity=self.room.local_participant.identity,
             worker_id=self.ctx.worker_id)
        if not self.room.remote_participants:
            self.callers_left.set()  # dispatched into an empty room: nobody to talk to
        with contextlib.suppress(asyncio.CancelledError):
            await self.callers_left.wait()
        for task in list(self.tasks):
            task.cancel()
        self.ctx.shutdown(reason="the caller left")


# `start` serves health checks on port 8081; a second `start` worker on one machine needs another.
server = (
    AgentServer(port=int(os.environ["AGENT_HTTP_PORT"]))
    if os.getenv("AGENT_HTTP_PORT")
    else AgentServer()
)


@server.rtc_session(agent_name=AGENT_NAME)
async def entrypoint(ctx: JobContext) -> None:
    await Echo(ctx).run()


def on_registered(worker_id: str, _info: Any) -> None:
    note(event="registered", worker_id=worker_id)


server.on("worker_registered", on_registered)

if __name__ == "__main__":
    cli.run_app(server)
