"""`callboard perf agent-load-test`: many rooms at once, each with the agent, like `lk perf`.

For each of `--rooms N` rooms a tester participant (the real rtc SDK) joins with a token that
dispatches `--agent-name` (so every room gets its dispatch at the tester's join), then checks:

- joined: an AGENT participant appears, and RoomService ListParticipants lists it as AGENT; the
  join latency is from the tester being in the room to the agent's arrival;
- answered: the agent replies to a chat message (`lk.chat`) with a text stream;
- where it went: the worker that runs the job (ListDispatch, then `GET /callboard/v1/workers`).

Rooms stay up for `--duration`, then the tester leaves and the room is deleted. The report gives
join latency p50/p99, failures with their reasons, and the jobs per worker. Exit 1 when any room
failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import click
from jwt.warnings import InsecureKeyLengthWarning
from livekit import api, rtc
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from callboard.cli.agents import Answer, find_answer
from callboard.cli.call import Session, mint
from callboard.cli.client import Api, run
from callboard.cli.common import EXIT_REFUSED, Duration
from callboard.cli.credentials import Credentials, pass_credentials
from callboard.cli.env import ws_url
from callboard.cli.output import console, emit_json, table

Json = dict[str, Any]
AGENT_KIND_INFO = 4  # livekit.ParticipantInfo.Kind.AGENT
ROOMS_SHOWN = 50  # beyond this many rooms, the per-room table is left to --json


@dataclass(frozen=True)
class LoadPlan:
    rooms: int
    agent_name: str
    duration_s: float
    timeout_s: float
    prefix: str
    message: str = "ping"


@dataclass
class RoomResult:
    room: str
    joined: bool = False
    listed: bool = False
    answered: bool = False
    join_ms: int | None = None
    reply_ms: int | None = None
    answer: Answer | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.joined and self.listed and self.answered and not self.error

    def as_json(self) -> Json:
        out = asdict(self)
        out["answer"] = self.answer.as_json() if self.answer else None
        out["ok"] = self.ok
        return out


def percentile(values: list[int], pct: float) -> int | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(plan: LoadPlan, results: list[RoomResult], took_s: float) -> Json:
    joins = [r.join_ms for r in results if r.join_ms is not None]
    workers: dict[str, Json] = {}
    for r in results:
        if r.answer is not None:
            w = workers.setdefault(
                r.answer.worker_id,
                {"jobs": 0, "developer": r.answer.developer, "address": r.answer.address},
            )
            w["jobs"] += 1
    return {
        "agent_name": plan.agent_name,
        "rooms": plan.rooms,
        "joined": sum(r.joined for r in results),
        "listed": sum(r.listed for r in results),
        "answered": sum(r.answered for r in results),
        "failed": sum(not r.ok for r in results),
        "join_latency_ms": {
            "p50": percentile(joins, 50),
            "p99": percentile(joins, 99),
            "max": max(joins) if joins else None,
        },
        "by_worker": workers,
        "took_s": round(took_s, 3),
        "results": [r.as_json() for r in results],
    }


async def agent_listed(a: Api, room: str, identity: str) -> bool:
    """RoomService ListParticipants shows `identity` as an AGENT participant."""
    found = await a.lk.room.list_participants(api.ListParticipantsRequest(room=room))
    return any(p.identity == identity and p.kind == AGENT_KIND_INFO for p in found.participants)


async def check_room(a: Api, plan: LoadPlan, s: Session, result: RoomResult) -> None:
    await s.connect(
        ws_url(a.creds.url),
        mint(a.creds, result.room, f"load-tester-{result.room}", plan.agent_name),
    )
    in_room = time.monotonic()
    try:
        agent = await asyncio.wait_for(asyncio.shield(s.agent), plan.timeout_s)
    except TimeoutError:
        raise LoadFailure(f"no agent joined within {plan.timeout_s:g} s") from None
    result.joined, result.join_ms = True, int((time.monotonic() - in_room) * 1000)
    result.listed = await agent_listed(a, result.room, agent.identity)
    result.answer = await find_answer(a, result.room, plan.agent_name, agent.identity)
    try:
        await s.wait_ready(plan.timeout_s)
    except TimeoutError:
        raise LoadFailure(
            f"the agent joined, but its connection was not up within {plan.timeout_s:g} s"
        ) from None
    sent = time.monotonic()
    await s.say(plan.message)
    try:
        await asyncio.wait_for(s.replies.get(), plan.timeout_s)
    except TimeoutError:
        raise LoadFailure(f"the agent did not reply within {plan.timeout_s:g} s") from None
    result.answered, result.reply_ms = True, int((time.monotonic() - sent) * 1000)
    if not result.listed:
        raise LoadFailure("ListParticipants does not show the agent as an AGENT participant")


class LoadFailure(Exception):
    """Why one room failed, in a few words."""


async def one_room(a: Api, plan: LoadPlan, index: int, done: Callable[[], None]) -> RoomResult:
    result = RoomResult(f"{plan.prefix}-{index}")
    started = time.monotonic()
    s = Session(show=False, record=False)
    try:
        await check_room(a, plan, s, result)
        done()
        await asyncio.sleep(max(0.0, plan.duration_s - (time.monotonic() - started)))
    except LoadFailure as exc:
        result.error = str(exc)
        done()
    except rtc.ConnectError as exc:
        result.error = f"tester could not join: {str(exc).splitlines()[0] if str(exc) else exc}"
        done()
    finally:
        await s.close()
        with contextlib.suppress(Exception):
            await a.lk.room.delete_room(api.DeleteRoomRequest(room=result.room))
    return result


async def load_test(a: Api, plan: LoadPlan, done: Callable[[], None]) -> Json:
    await a.get("/workers")  # the server is there and the key works, before any room
    started = time.monotonic()
    results = await asyncio.gather(*(one_room(a, plan, i, done) for i in range(plan.rooms)))
    return summary(plan, list(results), time.monotonic() - started)


def show(report: Json) -> None:
    lat = report["join_latency_ms"]
    out = console()
    out.print(
        f"agent {report['agent_name']}: {report['rooms']} rooms, {report['joined']} "
        f"joined, {report['answered']} answered, {report['failed']} failed "
        f"({report['took_s']:.1f} s)"
    )
    out.print(f"join latency: p50 {_ms(lat['p50'])}, p99 {_ms(lat['p99'])}, max {_ms(lat['max'])}")
    table(
        "jobs per worker",
        ["worker", "jobs", "developer", "address"],
        [
            [w, v["jobs"], v["developer"] or "production", v["address"]]
            for w, v in sorted(report["by_worker"].items())
        ],
    )
    rooms = report["results"]
    if len(rooms) <= ROOMS_SHOWN:
        table("where each job went", ["room", "job", "worker", "join", "reply", "result"],
              [_room_row(r) for r in rooms])
    else:
        out.print(f"(--json lists each of the {len(rooms)} rooms)")
    failures = [r for r in rooms if not r["ok"]]
    if failures:
        table("failures", ["room", "why"], [[r["room"], r["error"]] for r in failures])


def _room_row(r: Json) -> list[Any]:
    answer = r.get("answer") or {}
    result = "ok" if r["ok"] else "failed"
    return [r["room"], answer.get("job_id", ""), answer.get("worker_id", ""),
            _ms(r["join_ms"]), _ms(r["reply_ms"]), result]


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms"


@click.group()
def perf() -> None:
    """Load tests."""


@perf.command("agent-load-test")
@click.option(
    "--rooms",
    type=click.IntRange(1, 1000),
    default=5,
    show_default=True,
    help="How many rooms to run at once.",
)
@click.option("--agent-name", required=True, help="The agent to dispatch to every room.")
@click.option(
    "--duration",
    "duration_s",
    type=Duration(),
    default="5s",
    show_default=True,
    help="How long each room stays up: 30s, 2m, …",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    metavar="S",
    help="Seconds to wait for the agent to join, and again for its reply.",
)
@click.option(
    "--room-prefix",
    default=None,
    help="Room names are PREFIX-0, PREFIX-1, … (default: load-<random>).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_credentials()
def agent_load_test(
    creds: Credentials,
    rooms: int,
    agent_name: str,
    duration_s: float,
    timeout_s: float,
    room_prefix: str | None,
    as_json: bool,
) -> None:
    """Run an agent in many rooms at once: join latency, answers, failures, jobs per worker."""
    plan = LoadPlan(
        rooms, agent_name, duration_s, timeout_s, room_prefix or f"load-{secrets.token_hex(3)}"
    )
    logging.getLogger("livekit").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore", InsecureKeyLengthWarning)
    report = run_with_progress(creds, plan)
    if as_json:
        emit_json(report)
    else:
        show(report)
    if report["failed"]:
        raise SystemExit(EXIT_REFUSED)


def run_with_progress(creds: Credentials, plan: LoadPlan) -> Json:
    """The load test, with a progress bar of checked rooms on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return run(creds, lambda a: load_test(a, plan, lambda: None))
    columns = (TextColumn("rooms checked"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console(stderr=True), transient=True) as bar:
        task = bar.add_task("rooms", total=plan.rooms)
        return run(creds, lambda a: load_test(a, plan, lambda: bar.advance(task)))
