"""`callboard room …` against a real server: rooms, automatic dispatch, participants, data."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.support.cli import acb, cb, creds, isolate, ok, ok_json, one_line_error, usage_error
from tests.support.clients import light_worker
from tests.support.rtc import Client, eventually, needs_netns, token
from tests.support.server import ServerProcess


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


def test_create_list_delete(server: ServerProcess) -> None:
    out = ok(cb("room", "create", "alpha", *creds(server)))
    assert out.startswith("room alpha (RM_") and out.endswith(")\n")
    made = ok_json(cb("room", "create", "beta", "--empty-timeout", "5m", "--departure-timeout",
                      "20s", "--max-participants", "3", "--metadata", "m", "--json",
                      *creds(server)))
    assert (made["name"], made["empty_timeout"], made["departure_timeout"],
            made["max_participants"], made["metadata"]) == ("beta", 300, 20, 3, "m")
    assert made["sid"].startswith("RM_")
    listed = ok_json(cb("room", "list", "--json", *creds(server)))
    assert sorted(r["name"] for r in listed) == ["alpha", "beta"]
    only = ok_json(cb("room", "list", "beta", "--json", *creds(server)))
    assert [r["name"] for r in only] == ["beta"]
    table = ok(cb("room", "list", *creds(server)))
    assert "alpha" in table and made["sid"] in table and "300s" in table
    assert ok(cb("room", "delete", "alpha", *creds(server))) == "deleted room alpha\n"
    assert [r["name"] for r in ok_json(cb("room", "list", "--json", *creds(server)))] == ["beta"]


async def test_create_with_agents_dispatches_them(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    worker = await light_worker(http, server, "greeter")
    out = ok(await acb("room", "create", "lobby", "--agent", "greeter", "--agent", "notes",
                       "--job-metadata", "hi", *creds(server)))
    assert out.endswith("with greeter, notes dispatched\n")
    job = (await worker.next("assignment")).assignment.job
    assert (job.room.name, job.agent_name, job.metadata) == ("lobby", "greeter", "hi")
    dispatches = ok_json(await acb("dispatch", "list", "lobby", "--json", *creds(server)))
    assert sorted(d["agent_name"] for d in dispatches) == ["greeter", "notes"]
    await worker.close()


def test_refusals(server: ServerProcess) -> None:
    one_line_error(cb("room", "delete", "ghost", *creds(server)), 1, "server said not_found:")
    one_line_error(cb("room", "participants", "list", "ghost", *creds(server)), 1,
                   "server said not_found:")
    one_line_error(cb("room", "send-data", "ghost", "x", *creds(server)), 1,
                   "server said not_found:")
    usage_error(cb("room", "create", "r", "--empty-timeout", "soon", "--dev"),
                "Invalid value for '--empty-timeout'")
    usage_error(cb("room", "create", "r", "--max-participants", "-1", "--dev"),
                "--max-participants")


def test_participants_of_an_empty_room(server: ServerProcess) -> None:
    ok(cb("room", "create", "quiet", *creds(server)))
    assert ok_json(cb("room", "participants", "list", "quiet", "--json", *creds(server))) == []
    assert "participants in quiet" in ok(cb("room", "participants", "list", "quiet",
                                            *creds(server)))


def test_send_data_to_an_empty_room(server: ServerProcess) -> None:
    ok(cb("room", "create", "quiet", *creds(server)))
    out = ok(cb("room", "send-data", "quiet", "--topic", "news", "hello", *creds(server)))
    assert out == "sent 5 bytes to everyone in quiet on topic news\n"


@needs_netns
async def test_participants_and_data_with_a_real_participant(server: ServerProcess) -> None:
    client = Client("alice")
    await client.room.connect(server.ws_url, token("alice", "meet", name="Alice"))
    try:
        people = ok_json(await acb("room", "participants", "list", "meet", "--json",
                                   *creds(server)))
        assert [(p["identity"], p["name"]) for p in people] == [("alice", "Alice")]
        table = ok(await acb("room", "participants", "list", "meet", *creds(server)))
        assert "alice" in table and "Alice" in table
        out = ok(await acb("room", "send-data", "meet", "--topic", "chat", "--identity", "alice",
                           "hi alice", *creds(server)))
        assert out == "sent 8 bytes to alice in meet on topic chat\n"
        await eventually(lambda: len(client.data) == 1)
        assert (client.data[0].data, client.data[0].topic) == (b"hi alice", "chat")
    finally:
        await client.close()
