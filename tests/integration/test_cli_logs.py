"""`callboard logs`: the project's event log, filtered, paged, and followed."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import Result
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

from callboard.cli import logs as logs_module
from tests.support.cli import CALLBOARD, acb, cb, creds, isolate, ok, one_line_error
from tests.support.clients import light_worker, lk_api
from tests.support.server import ServerProcess, free_port

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (info|warning|error|debug) +(\S+) ")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


def kinds(out: str) -> list[str]:
    found = []
    for line in out.splitlines():
        match = LINE.match(line)
        assert match, line
        found.append(match.group(2))
    return found


def json_lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ok(result).splitlines()]


async def dispatch(server: ServerProcess, agent: str, room: str) -> str:
    async with lk_api(server) as lk:
        made = await lk.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name=agent, room=room))
    return str(made.id)


async def test_the_log_and_its_filters(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    worker = await light_worker(http, server, "helper")
    first = await dispatch(server, "helper", "r1")
    job = (await worker.next("assignment")).assignment.job.id
    await dispatch(server, "ghost", "r2")
    everything = ok(await acb("logs", *creds(server)))
    assert kinds(everything)[:2] == ["worker.connected", "dispatch.created"]
    assert "dispatch.queued" in kinds(everything)
    assert f"room=r1 dispatch={first}" in everything
    assert "waiting for a worker: no worker registered for agent 'ghost'" in everything
    in_r2 = ok(await acb("logs", "--room", "r2", *creds(server)))
    assert {"dispatch.created", "dispatch.queued"} <= set(kinds(in_r2))
    assert all("room=r2 " in line for line in in_r2.splitlines())
    assert all(f"job={job}" in line
               for line in ok(await acb("logs", "--job", job, *creds(server))).splitlines())
    by_agent = ok(await acb("logs", "--agent-name", "ghost", *creds(server)))
    assert "ghost" in by_agent and "helper" not in by_agent
    assert set(kinds(ok(await acb("logs", "--kind", "worker.", *creds(server))))) == {
        "worker.connected"}
    events = json_lines(await acb("logs", "--dispatch", first, "--json", *creds(server)))
    assert events and all(e["dispatch_id"] == first for e in events)
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    await worker.close()


async def test_paging_reads_everything_once(
    server: ServerProcess, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(5):
        await dispatch(server, "ghost", f"room-{n}")
    one_page = json_lines(await acb("logs", "--json", *creds(server)))
    monkeypatch.setattr(logs_module, "PAGE", 2)
    paged = json_lines(await acb("logs", "--json", *creds(server)))
    created = [e for e in paged if e["kind"] == "dispatch.created"]
    assert len(created) == 5 and paged == one_page


async def test_follow_prints_new_events_once(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    await dispatch(server, "ghost", "before")
    following = asyncio.create_task(acb("logs", "--follow", "--json", "--poll-interval", "0.1",
                                        "--max-seconds", "1.5", *creds(server)))
    later = await dispatch(server, "ghost", "after")
    events = json_lines(await following)
    rooms = [e["room_name"] for e in events if e["kind"] == "dispatch.created"]
    assert rooms == ["before", "after"]
    assert len({e["seq"] for e in events}) == len(events)  # nothing printed twice
    assert any(e.get("dispatch_id") == later for e in events)


async def test_follow_outlives_a_server_restart(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    following = asyncio.create_task(acb("logs", "--follow", "--poll-interval", "0.1",
                                        "--max-seconds", "8", *creds(server)))
    await dispatch(server, "ghost", "one")
    await asyncio.sleep(1.0)  # the follower is in touch before the server goes (else: exit 1)
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(0.5)  # the follower notices the server is gone (polls every 0.1 s)
    await asyncio.to_thread(server.start)
    await dispatch(server, "ghost", "two")
    result = await following
    out = ok(result)
    assert "room=one" in out and "room=two" in out
    assert "warning: lost the server at" in result.stderr
    assert "warning: back in touch with" in result.stderr


def test_an_unreachable_server_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["logs"], ["logs", "--follow", "--max-seconds", "1"]):
        one_line_error(cb(*args, "--dev", "--url", url), 1, f"cannot reach callboard at {url}",
                       "connection refused")


async def test_ctrl_c_ends_a_follow_quietly(
    server: ServerProcess, home: Path
) -> None:
    await dispatch(server, "ghost", "r")
    proc = subprocess.Popen(
        [str(CALLBOARD), "logs", "--follow", *creds(server)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(home)})
    assert proc.stdout is not None
    first = await asyncio.to_thread(proc.stdout.readline)  # it is streaming
    assert "dispatch.created" in first
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.to_thread(proc.communicate, timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and err == ""
    assert time.monotonic() - started < 5
