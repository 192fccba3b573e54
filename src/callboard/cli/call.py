"""`callboard call`: a test call to an agent from the terminal, with the real `livekit` rtc SDK.

The call mints a join token that names the agent (`roomConfig.agents`, so joining dispatches it),
joins a fresh room, waits for an AGENT participant, asks the server which worker runs that
participant's job (ListDispatch for the job, `GET /callboard/v1/workers/<id>` for the developer and
address), then chats: lines go out as LiveKit chat (a text stream on `lk.chat`); the agent's text
streams (`lk.chat`) and transcriptions (`lk.transcription`) are printed as they arrive.

Scripted: `--message TEXT --expect-reply --timeout S` exits 0 only when the agent replied in time;
when it did not (or no agent joined) it prints the dispatch's explain trace and exits 1. `--json`
prints who answered and the timings. The room the call made is deleted when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import secrets
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from jwt.warnings import InsecureKeyLengthWarning
from livekit import api, rtc
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration

from callboard.cli import explain
from callboard.cli.agents import (
    AgentChoiceError,
    Answer,
    choose_agent,
    explain_room,
    find_answer,
    list_workers,
)
from callboard.cli.call_audio import AudioUnsupported, Recorder, publish_wav
from callboard.cli.client import Api, NotCallboard, Refused, run
from callboard.cli.common import EXIT_REFUSED, EXIT_USAGE
from callboard.cli.credentials import Credentials, pass_credentials
from callboard.cli.env import ws_url
from callboard.cli.output import console, emit_json, fail, spinner, warn
from callboard.cli.wav import Pcm, WavError, read_pcm16

CHAT_TOPIC = "lk.chat"
TRANSCRIPTION_TOPIC = "lk.transcription"
AGENT_KIND = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
ACTIVE = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE
Json = dict[str, Any]


class CallFailed(Exception):
    """The call could not go on; `explain` is the dispatch's trace when there is one."""

    def __init__(self, message: str, explain: Json | None = None, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.explain = explain
        self.code = code


@dataclass(frozen=True)
class CallPlan:
    agent: str | None
    room: str | None
    identity: str
    message: str | None
    expect_reply: bool
    timeout_s: float
    say: Pcm | None
    record: Path | None
    linger_s: float
    as_json: bool
    suffix: str

    @property
    def interactive(self) -> bool:
        return self.message is None and self.say is None


@dataclass
class Reply:
    sender: str
    topic: str
    text: str
    after_ms: int


@dataclass
class Report:
    """What `--json` prints."""

    room: str
    identity: str
    agent_name: str
    answer: Answer | None = None
    timings_ms: dict[str, int] = field(default_factory=dict)
    replies: list[Reply] = field(default_factory=list)
    recorded_s: float | None = None
    crosstalk: list[Json] = field(default_factory=list)

    def as_json(self, ok: bool, error: str = "", trace: Json | None = None) -> Json:
        out: Json = {
            "ok": ok,
            "room": self.room,
            "identity": self.identity,
            "agent_name": self.agent_name,
            "answered_by": self.answer.as_json() if self.answer else None,
            "timings_ms": self.timings_ms,
            "replies": [vars(r) for r in self.replies],
            "crosstalk": self.crosstalk,
        }
        if self.recorded_s is not None:
            out["recorded_s"] = round(self.recorded_s, 3)
        if error:
            out["error"] = error
            out["explain"] = trace
        return out


class Session:
    """One SDK room: which agent joined, what it said (printed as it streams), its audio."""

    def __init__(self, show: bool, record: bool) -> None:
        self.room = rtc.Room()
        self.show = show
        self.agent: asyncio.Future[rtc.RemoteParticipant] = asyncio.Future()
        self.ready: asyncio.Future[None] = asyncio.Future()  # that agent is ACTIVE
        self.replies: asyncio.Queue[Reply] = asyncio.Queue()
        self.recorder = Recorder() if record else None
        self.started = time.monotonic()
        self.tasks: set[asyncio.Future[None]] = set()
        self.room.on("participant_connected", self._joined)
        self.room.on("participant_disconnected", self._left)
        self.room.on("participant_active", self._active)
        self.room.on("track_subscribed", self._track)
        for topic in (CHAT_TOPIC, TRANSCRIPTION_TOPIC):
            self.room.register_text_stream_handler(topic, self._text)

    async def connect(self, url: str, token: str) -> None:
        await self.room.connect(url, token)
        for participant in self.room.remote_participants.values():
            self._joined(participant)

    def agent_identities(self) -> set[str]:
        return {p.identity for p in self.room.remote_participants.values() if p.kind == AGENT_KIND}

    def _left(self, participant: rtc.RemoteParticipant) -> None:
        if self.show and participant.kind == AGENT_KIND:
            click.echo(f"{participant.identity} left the room", err=True)

    def _joined(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind == AGENT_KIND and not self.agent.done():
            self.agent.set_result(participant)
            if participant.state == ACTIVE:
                self._active(participant)

    def _active(self, participant: rtc.RemoteParticipant) -> None:
        """Its connection is up: only now does chat reach it (the server drops data for a
        participant whose connection is still being set up, as LiveKit does)."""
        if (
            self.agent.done()
            and self.agent.result().identity == participant.identity
            and not self.ready.done()
        ):
            self.ready.set_result(None)

    async def wait_ready(self, timeout_s: float) -> None:
        await asyncio.wait_for(asyncio.shield(self.ready), max(0.0, timeout_s))

    def _track(
        self, track: rtc.Track, _pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if (
            self.recorder is not None
            and track.kind == rtc.TrackKind.KIND_AUDIO
            and participant.kind == AGENT_KIND
        ):
            self.recorder.attach(track)

    def _text(self, reader: rtc.TextStreamReader, sender: str) -> None:
        task = asyncio.ensure_future(self._read(reader, sender))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _read(self, reader: rtc.TextStreamReader, sender: str) -> None:
        topic = reader.info.topic
        parts: list[str] = []
        async for chunk in reader:
            if self.show and not parts:
                click.echo(f"{sender} ({topic}): ", nl=False)
            parts.append(chunk)
            if self.show:
                click.echo(chunk, nl=False)
        if self.show:
            click.echo()
        if sender in self.agent_identities():
            after_ms = int((time.monotonic() - self.started) * 1000)
            self.replies.put_nowait(Reply(sender, topic, "".join(parts), after_ms))

    async def say(self, text: str) -> None:
        await self.room.local_participant.send_text(text, topic=CHAT_TOPIC)

    async def close(self) -> None:
        if self.recorder is not None:
            await self.recorder.stop()
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.room.disconnect()


def mint(creds: Credentials, room: str, identity: str, agent_name: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    at = (
        api.AccessToken(creds.api_key, creds.api_secret)
        .with_identity(identity)
        .with_name(identity)
        .with_grants(grants)
        .with_room_config(RoomConfiguration(agents=[RoomAgentDispatch(agent_name=agent_name)]))
        .with_ttl(datetime.timedelta(hours=1))
    )
    return at.to_jwt()


async def pick_agent(a: Api, plan: CallPlan) -> str:
    workers = await list_workers(a)  # also: is the server there at all
    if plan.agent:
        if not any(w.get("agent_name") == plan.agent for w in workers):
            warn(f"no worker serves agent {plan.agent!r} now; the dispatch waits for one")
        return plan.agent
    try:
        return choose_agent(workers, a.creds.api_key, plan.suffix)
    except AgentChoiceError as exc:
        raise CallFailed(str(exc), code=EXIT_USAGE) from None


def elapsed_ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)


async def wait_agent(a: Api, s: Session, report: Report, deadline: float) -> rtc.RemoteParticipant:
    try:
        with spinner(f"waiting for agent {report.agent_name} in room {report.room}"):
            agent = await asyncio.wait_for(asyncio.shield(s.agent), deadline - time.monotonic())
    except TimeoutError:
        trace = await explain_room(a, report.room, report.agent_name)
        raise CallFailed(
            f"no agent {report.agent_name!r} joined room {report.room} within the timeout", trace
        ) from None
    report.timings_ms["agent_joined"] = elapsed_ms(s.started)
    report.answer = await find_answer(a, report.room, report.agent_name, agent.identity)
    try:
        await s.wait_ready(deadline - time.monotonic())
    except TimeoutError:
        raise CallFailed(
            f"agent {agent.identity} joined room {report.room} but its connection "
            f"did not come up within the timeout"
        ) from None
    return agent


async def expect_reply(a: Api, s: Session, report: Report, deadline: float) -> None:
    sent = time.monotonic()
    try:
        reply = await asyncio.wait_for(s.replies.get(), max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        trace = await explain_room(a, report.room, report.agent_name)
        raise CallFailed(
            f"agent {report.agent_name!r} did not reply within the timeout", trace
        ) from None
    report.timings_ms["reply"] = elapsed_ms(sent)
    report.replies.append(reply)


async def chat_from_stdin(s: Session) -> None:
    """Typed lines go out as chat until end of input (Ctrl-D) or the room closes."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def pump() -> None:  # a daemon thread: a blocked readline must not hold up the exit
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=pump, daemon=True).start()
    if sys.stdin.isatty():
        click.echo("type a message and press Enter; Ctrl-D ends the call", err=True)
    while (line := await lines.get()) is not None and s.room.isconnected():
        if line.strip():
            await s.say(line)


async def converse(a: Api, s: Session, plan: CallPlan, report: Report, deadline: float) -> None:
    if plan.say is not None:
        try:
            await publish_wav(s.room, plan.say)
        except AudioUnsupported as exc:
            raise CallFailed(str(exc)) from None
    if plan.message is not None:
        await s.say(plan.message)
        if plan.expect_reply:
            await expect_reply(a, s, report, deadline)
    if plan.interactive:
        await chat_from_stdin(s)
    if plan.linger_s:
        await asyncio.sleep(plan.linger_s)
    await asyncio.sleep(0.1)  # let streams that are still arriving finish printing
    while not s.replies.empty():
        report.replies.append(s.replies.get_nowait())


async def crosstalk_of(a: Api, agent_name: str) -> list[Json]:
    """Pools of this agent name whose calls may land on someone else's machine (server's view)."""
    try:
        body = await a.get("/crosstalk")
    except (Refused, NotCallboard):
        return []  # an older server: nothing to say, and the call itself went fine
    return [c for c in body.get("crosstalk", []) if c.get("agent_name") == agent_name]


async def place_call(a: Api, plan: CallPlan) -> Report:
    agent_name = await pick_agent(a, plan)
    room = plan.room or f"call-{secrets.token_hex(4)}"
    report = Report(room, plan.identity, agent_name)
    s = Session(show=not plan.as_json, record=plan.record is not None)
    deadline = time.monotonic() + plan.timeout_s
    try:
        await s.connect(ws_url(a.creds.url), mint(a.creds, room, plan.identity, agent_name))
        report.timings_ms["connect"] = elapsed_ms(s.started)
        await wait_agent(a, s, report, deadline)
        report.crosstalk = await crosstalk_of(a, agent_name)
        if not plan.as_json:
            click.echo(
                report.answer.line()
                if report.answer
                else f"agent joined as {s.agent.result().identity} (its job was not found)"
            )
            for item in report.crosstalk:
                warn(f"crosstalk for {agent_name}: {item['reason']}. Fix: {item['fix']}")
        await converse(a, s, plan, report, deadline)
    except rtc.ConnectError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CallFailed(f"cannot join room {room}: {first}") from None
    except CallFailed as exc:
        raise _WithReport(exc, report) from None
    finally:
        await s.close()
        if plan.room is None:
            with contextlib.suppress(Exception):
                await a.lk.room.delete_room(api.DeleteRoomRequest(room=room))
    if s.recorder is not None and plan.record is not None:
        report.recorded_s = s.recorder.save(plan.record) if s.recorder.data else 0.0
    report.timings_ms["total"] = elapsed_ms(s.started)
    return report


class _WithReport(Exception):
    def __init__(self, failure: CallFailed, report: Report) -> None:
        super().__init__(str(failure))
        self.failure = failure
        self.report = report


def show_failure(failure: CallFailed, report: Report | None, as_json: bool) -> None:
    if as_json and report is not None:
        emit_json(report.as_json(False, str(failure), failure.explain))
        sys.exit(failure.code)
    if failure.explain is None:
        fail(str(failure), failure.code)
    click.echo(f"error: {failure}", err=True)
    err = console(stderr=True)
    err.print("explain of the room's dispatch:")
    for item in explain.render(failure.explain):
        err.print(item)
    sys.exit(failure.code)


def show_report(report: Report, plan: CallPlan) -> None:
    if plan.as_json:
        emit_json(report.as_json(True))
        return
    if plan.record is not None:
        if not report.recorded_s:
            fail(
                f"nothing recorded: the agent sent no audio (audio is not supported by this "
                f"server yet, or the agent does not speak); {plan.record} not written"
            )
        click.echo(f"recorded {report.recorded_s:.1f} s of the agent's audio to {plan.record}")


def _default_linger_s(record: Path | None, message: str | None, say: Path | None) -> float:
    """Stay a moment after the last step when something may still arrive: the echo of a
    recording, or the replies to lines piped in (a terminal user ends the call themselves)."""
    if record is not None:
        return 2.0
    piped = message is None and say is None and not sys.stdin.isatty()
    return 1.0 if piped else 0.0


@click.command()
@click.option(
    "--agent",
    metavar="NAME",
    help="Agent name to call (default: the one agent "
    "ending in -$LIVEKIT_AGENT_SUFFIX, or that your developer key serves).",
)
@click.option("--room", help="Room to join (default: a new room, deleted when the call ends).")
@click.option("--identity", help="Your participant identity (default: caller-<random>).")
@click.option("--message", metavar="TEXT", help="Send TEXT as chat instead of reading stdin.")
@click.option(
    "--expect-reply",
    is_flag=True,
    help="With --message: exit 0 only when the agent replied within --timeout.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    metavar="S",
    help="Seconds to wait for the agent (and reply).",
)
@click.option(
    "--say",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.wav",
    help="Publish FILE.wav (16-bit PCM) as your microphone.",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.wav",
    help="Save the agent's audio to FILE.wav.",
)
@click.option(
    "--linger",
    "linger_s",
    type=click.FloatRange(min=0),
    default=None,
    metavar="S",
    help="Stay in the room S seconds after the last step (default: 2 with --record, 1 when "
    "chat lines are piped in, else 0).",
)
@click.option("--json", "as_json", is_flag=True, help="Print who answered and timings as JSON.")
@pass_credentials()
def call(
    creds: Credentials,
    agent: str | None,
    room: str | None,
    identity: str | None,
    message: str | None,
    expect_reply: bool,
    timeout_s: float,
    say: Path | None,
    record: Path | None,
    linger_s: float | None,
    as_json: bool,
) -> None:
    """Call an agent: join a room with it, see which worker answered, and chat.

    \b
    Examples:
      LIVEKIT_AGENT_SUFFIX=jack callboard call          # my-agent-jack; type lines, Ctrl-D ends
      callboard call --agent my-agent --message hi --expect-reply --timeout 20 --json
    """
    if expect_reply and message is None:
        raise click.UsageError("--expect-reply needs --message")
    pcm = None
    if say is not None:
        try:
            pcm = read_pcm16(say)
        except WavError as exc:
            fail(str(exc), EXIT_USAGE)
    plan = CallPlan(
        agent,
        room,
        identity or f"caller-{secrets.token_hex(3)}",
        message,
        expect_reply,
        timeout_s,
        pcm,
        record,
        linger_s if linger_s is not None else _default_linger_s(record, message, say),
        as_json,
        os.environ.get("LIVEKIT_AGENT_SUFFIX", ""),
    )
    logging.getLogger("livekit").setLevel(logging.CRITICAL)  # the SDK's own chatter
    warnings.simplefilter("ignore", InsecureKeyLengthWarning)
    try:
        report = run(creds, lambda a: place_call(a, plan))
    except _WithReport as exc:
        show_failure(exc.failure, exc.report, as_json)
    except CallFailed as exc:
        show_failure(exc, None, as_json)
    show_report(report, plan)
