"""`callboard dispatch …` against a real server, with protocol-level workers taking the jobs."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from callboard.client.worker import WorkerProtocol
from tests.support.cli import acb, cb, creds, isolate, ok, ok_json, one_line_error, usage_error
from tests.support.clients import light_worker, project_get
from tests.support.server import ServerProcess


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


def dispatch_id(out: str) -> str:
    """`dispatched A to room R: AD_…` -> AD_…"""
    first = out.splitlines()[0]
    assert first.startswith("dispatched "), out
    return first.rsplit(": ", 1)[1]


async def test_create_reaches_a_worker_and_explain_tells_the_story(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    picky = await light_worker(http, server, proto=WorkerProtocol(agent_name="helper",
                                                                   decide=lambda job: False))
    out = ok(await acb("dispatch", "create", "--room", "r1", "--agent-name", "helper",
                       "--metadata", '{"k": 1}', *creds(server)))
    dispatch = dispatch_id(out)
    assert f"callboard dispatch explain {dispatch}" in out
    await picky.next("availability")  # it says no; the job waits for the next worker
    waiting = ok(await acb("dispatch", "explain", dispatch, *creds(server)))
    assert "outcome: waiting for a worker: the only candidate declined" in waiting
    willing = await light_worker(http, server, "helper", load=0.25)
    assignment = await willing.next("assignment")
    assert assignment.assignment.job.dispatch_id == dispatch
    assert assignment.assignment.job.metadata == '{"k": 1}'
    story = ok(await acb("dispatch", "explain", dispatch, *creds(server)))
    a, b = picky.proto.worker_id, willing.proto.worker_id
    assert f"dispatch {dispatch}: agent 'helper' in room r1" in story
    assert f"{a}  load 0.00  available  127.0.0.1:" in story
    assert f"{a}  load 0.00  available, already tried" in story
    # offered on registering, before its first status report (load 0.25) arrives
    assert re.search(rf"{b}  load 0\.(00|25)  available  127\.0\.0\.1:\d+", story), story
    assert f"job {assignment.assignment.job.id} offered to worker {a} (load 0.00)" in story
    assert f"worker {a} declined" in story
    assert f"worker {b} took job {assignment.assignment.job.id} as light-" in story
    assert f"outcome: running on worker {b} as light-" in story or (
        f"outcome: assigned to worker {b}" in story)
    explained = ok_json(await acb("dispatch", "explain", dispatch, "--json", *creds(server)))
    _, from_api = await project_get(http, server, f"/dispatches/{dispatch}/explain")
    assert explained["id"] == from_api["id"] == dispatch
    assert [t["what"] for t in explained["trace"]][:4] == [
        "created", "candidates", "offered", "declined"]
    for worker in (picky, willing):
        await worker.close()


def test_explain_says_why_a_dispatch_waits(server: ServerProcess) -> None:
    dispatch = dispatch_id(ok(cb("dispatch", "create", "--room", "r1", "--agent-name", "ghost",
                                 *creds(server))))
    story = ok(cb("dispatch", "explain", dispatch, *creds(server)))
    assert ("outcome: waiting for a worker: no worker registered for agent 'ghost' with "
            "production credentials") in story
    assert "job AJ_" in story and "0 matching workers" in story


def test_list_get_delete(server: ServerProcess) -> None:
    first = dispatch_id(ok(cb("dispatch", "create", "--room", "lr", "--agent-name", "a",
                              *creds(server))))
    second = ok_json(cb("dispatch", "create", "--room", "lr", "--agent-name", "b", "--metadata",
                        "m", "--json", *creds(server)))
    assert second["id"].startswith("AD_") and second["agent_name"] == "b"
    assert second["room"] == "lr" and second["metadata"] == "m"
    listed = ok_json(cb("dispatch", "list", "lr", "--json", *creds(server)))
    assert sorted(d["id"] for d in listed) == sorted([first, second["id"]])
    assert all(d["state"]["jobs"][0]["state"]["status"] == "JS_PENDING" for d in listed)
    table = ok(cb("dispatch", "list", "lr", *creds(server)))
    assert first in table and second["id"] in table and "pending" in table
    got = ok_json(cb("dispatch", "get", "lr", first, "--json", *creds(server)))
    assert got["id"] == first and got["agent_name"] == "a"
    assert first in ok(cb("dispatch", "get", "lr", first, *creds(server)))
    out = ok(cb("dispatch", "delete", "lr", first, *creds(server)))
    assert out == f"deleted dispatch {first} (a in lr)\n"
    assert [d["id"] for d in ok_json(cb("dispatch", "list", "lr", "--json", *creds(server)))] == [
        second["id"]]
    assert "deleted" in ok(cb("dispatch", "explain", first, *creds(server)))


def test_new_room(server: ServerProcess) -> None:
    made = ok_json(cb("dispatch", "create", "--new-room", "--agent-name", "a", "--json",
                      *creds(server)))
    assert made["room"].startswith("room-")
    assert [d["id"] for d in ok_json(cb("dispatch", "list", made["room"], "--json",
                                        *creds(server)))] == [made["id"]]
    rooms = ok_json(cb("room", "list", "--json", *creds(server)))
    assert made["room"] in [r["name"] for r in rooms]


def test_refusals_show_the_server_code(server: ServerProcess) -> None:
    one_line_error(cb("dispatch", "get", "r", "AD_nope", *creds(server)), 1,
                   "dispatch 'AD_nope' not found in room 'r'")
    one_line_error(cb("dispatch", "delete", "r", "AD_nope", *creds(server)), 1,
                   "server said not_found:")
    one_line_error(cb("dispatch", "explain", "AD_nope", *creds(server)), 1,
                   "server said not_found: dispatch 'AD_nope' not found")
    one_line_error(cb("dispatch", "explain", "a/../b?c", *creds(server)), 1, "not_found")
    one_line_error(cb("dispatch", "create", "--room", "r", "--agent-name", "a", "--metadata",
                      "x" * (600 * 1024), *creds(server)), 1, "server said invalid_argument:")
    assert ok_json(cb("dispatch", "list", "no-such-room", "--json", *creds(server))) == []


def test_usage_errors() -> None:
    usage_error(cb("dispatch", "create", "--agent-name", "a", "--dev"),
                "exactly one of --room ROOM or --new-room")
    usage_error(cb("dispatch", "create", "--room", "r", "--new-room", "--agent-name", "a",
                   "--dev"), "exactly one of")
    usage_error(cb("dispatch", "create", "--room", "r", "--dev"), "Missing option '--agent-name'")
