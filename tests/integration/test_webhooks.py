"""Webhooks from a real server process to a real aiohttp receiver on 127.0.0.1, verified with
livekit-api's WebhookReceiver; the admin API and `callboard admin webhooks` that configure them."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner, Result
from livekit import api
from livekit.protocol import agent as pb
from livekit.protocol import models
from livekit.protocol import webhook as whpb
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest
from livekit.protocol.room import CreateRoomRequest, DeleteRoomRequest, ListRoomsRequest

from callboard.cli.main import cli
from tests.support.clients import admin, light_worker, lk_api, new_project, wait_for
from tests.support.server import DEV_ADMIN, DEV_KEY, DEV_SECRET, ServerProcess, free_port


@dataclass
class Receiver:
    """A webhook endpoint: verifies each delivery as a LiveKit user would, and keeps it.

    `status` is what it answers; `gate`, when set, holds every answer until it opens.
    """

    key: str = DEV_KEY
    secret: str = DEV_SECRET
    status: int = 200
    gate: asyncio.Event | None = None
    events: list[whpb.WebhookEvent] = field(default_factory=list)
    requests: int = 0
    problems: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.text()
        if request.content_type != "application/webhook+json":
            self.problems.append(f"content type {request.content_type}")
        if self.gate is not None:
            await self.gate.wait()
        if self.status != 200:
            return web.Response(status=self.status)
        verifier = api.WebhookReceiver(api.TokenVerifier(self.key, self.secret))
        try:
            self.events.append(verifier.receive(body, request.headers["Authorization"]))
        except Exception as exc:
            self.problems.append(repr(exc))
            return web.Response(status=401)
        return web.Response(text="ok")

    def kinds(self, room: str | None = None) -> list[str]:
        return [e.event for e in self.events if room is None or e.room.name == room]


@contextlib.asynccontextmanager
async def listening(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    try:
        yield receiver
    finally:
        await runner.cleanup()


def add_webhook(server: ServerProcess, url: str, project: str = "dev", **body: str) -> str:
    status, reply = admin(server, "POST", f"/projects/{project}/webhooks", {"url": url, **body})
    assert status == 201, reply
    return str(reply["id"])


# -- delivery -------------------------------------------------------------------------------------


async def test_room_and_agent_job_events_arrive_signed_and_in_order(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    async with listening(Receiver()) as receiver:
        add_webhook(server, receiver.url)
        worker = await light_worker(http, server, "bot")
        async with lk_api(server) as lk:
            await lk.room.create_room(CreateRoomRequest(name="room-1", metadata="m"))
            await lk.agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name="bot", room="room-1")
            )
            job_id = (await worker.next("assignment")).assignment.job.id
            await wait_for(lambda: "agent_job_started" in receiver.kinds())
            await lk.room.delete_room(DeleteRoomRequest(room="room-1"))
        await worker.next("termination")
        await wait_for(lambda: "room_finished" in receiver.kinds())
        await worker.close()
    assert receiver.problems == []
    assert receiver.kinds() == [
        "room_started", "agent_job_started", "agent_job_ended", "room_finished"
    ]
    started, job_started, job_ended, finished = receiver.events
    assert started.room.name == "room-1" and started.room.sid.startswith("RM_")
    assert started.room.metadata == "m" and started.id.startswith("EV_") and started.created_at
    assert job_started.job.id == job_id and job_started.job.agent_name == "bot"
    assert job_started.job.type == pb.JT_ROOM and job_started.room.sid == started.room.sid
    assert job_ended.job.id == job_id and "deleted" in job_ended.job.state.error
    assert job_ended.job.state.ended_at > 0
    assert finished.room.sid == started.room.sid
    assert finished.room_end_reason == models.ROOM_END_API_DELETE
    assert len({e.id for e in receiver.events}) == 4


async def test_a_receiver_that_is_down_then_back_gets_every_event_in_order(
    server: ServerProcess,
) -> None:
    receiver = Receiver()
    add_webhook(server, receiver.url)  # nothing listens there yet
    async with lk_api(server) as lk:
        for n in range(3):
            await lk.room.create_room(CreateRoomRequest(name=f"room-{n}"))
        for n in range(3):
            await lk.room.delete_room(DeleteRoomRequest(room=f"room-{n}"))
    await wait_for(lambda: "failed (attempt 2 of" in server.log(), timeout_s=15)
    async with listening(receiver):
        await wait_for(lambda: len(receiver.events) == 6, timeout_s=20)
    assert receiver.problems == []
    for n in range(3):
        assert receiver.kinds(f"room-{n}") == ["room_started", "room_finished"]
    assert all(e.num_dropped == 0 for e in receiver.events)


async def test_a_receiver_answering_errors_is_retried_until_it_takes_them(
    server: ServerProcess,
) -> None:
    async with listening(Receiver(status=503)) as receiver:
        add_webhook(server, receiver.url)
        async with lk_api(server) as lk:
            await lk.room.create_room(CreateRoomRequest(name="r"))
            await lk.room.delete_room(DeleteRoomRequest(room="r"))
        await wait_for(lambda: receiver.requests >= 2)
        receiver.status = 200
        await wait_for(lambda: len(receiver.events) == 2)
    assert receiver.kinds() == ["room_started", "room_finished"]


async def test_a_slow_receiver_never_delays_the_server_apis(server: ServerProcess) -> None:
    async with listening(Receiver(gate=asyncio.Event())) as receiver:
        add_webhook(server, receiver.url)
        async with lk_api(server) as lk:
            for n in range(10):  # every call answers while the receiver still sits on the first
                await lk.room.create_room(CreateRoomRequest(name=f"room-{n}"))
                await lk.room.list_rooms(ListRoomsRequest())
                await lk.room.delete_room(DeleteRoomRequest(room=f"room-{n}"))
            assert receiver.events == [] and receiver.requests >= 1
            assert receiver.gate is not None
            receiver.gate.set()
        await wait_for(lambda: len(receiver.events) == 20, timeout_s=20)
    for n in range(10):
        assert receiver.kinds(f"room-{n}") == ["room_started", "room_finished"]


async def test_deliveries_are_signed_with_the_chosen_production_key(
    server: ServerProcess,
) -> None:
    key, secret = new_project(server, "acme")
    second, second_secret = new_project(server, "acme")
    async with listening(Receiver(key=second, secret=second_secret)) as receiver:
        add_webhook(server, receiver.url, "acme", signing_key=second)
        async with api.LiveKitAPI(server.http_url, key, secret) as lk:  # made with the first key
            await lk.room.create_room(CreateRoomRequest(name="r"))
        async with lk_api(server) as lk:  # another project's room: not acme's webhook
            await lk.room.create_room(CreateRoomRequest(name="dev-room"))
        await wait_for(lambda: receiver.events)
    assert receiver.problems == [] and receiver.kinds() == ["room_started"]
    assert receiver.events[0].room.name == "r"


# -- the admin API --------------------------------------------------------------------------------


def test_admin_api_adds_lists_and_removes_webhooks(server: ServerProcess) -> None:
    oldest, _ = new_project(server, "acme")
    new_project(server, "acme")  # a younger production key
    status, added = admin(server, "POST", "/projects/acme/webhooks", {"url": "http://h.test/x"})
    assert status == 201 and added["signing_key"] == oldest and added["id"].startswith("WH_")
    status, listed = admin(server, "GET", "/projects/acme/webhooks")
    assert status == 200 and listed["webhooks"] == [added]
    status, body = admin(server, "POST", "/projects/acme/webhooks", {"url": "http://h.test/x"})
    assert status == 409 and body["code"] == "already_exists"
    status, _ = admin(server, "DELETE", f"/projects/acme/webhooks/{added['id']}")
    assert status == 200
    assert admin(server, "GET", "/projects/acme/webhooks")[1]["webhooks"] == []
    status, body = admin(server, "DELETE", f"/projects/acme/webhooks/{added['id']}")
    assert status == 404 and body["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "status", "code", "needle"),
    [
        ({"url": "ftp://h/x"}, 400, "invalid_argument", "http"),
        ({"url": ""}, 400, "invalid_argument", "url"),
        ({"url": 7}, 400, "invalid_argument", "strings"),
        ({"url": "http://h/x", "signing_key": "JACK"}, 400, "invalid_argument", "developer"),
        ({"url": "http://h/x", "signing_key": "devkey"}, 400, "invalid_argument", "production"),
        ({"url": "http://h/x", "signing_key": "APInope"}, 400, "invalid_argument", "production"),
    ],
)
def test_admin_api_refuses_bad_webhooks(
    server: ServerProcess, body: dict[str, object], status: int, code: str, needle: str
) -> None:
    new_project(server, "acme")
    jack, _ = new_project(server, "acme", developer="jack")
    if body.get("signing_key") == "JACK":
        body = {**body, "signing_key": jack}
    got, reply = admin(server, "POST", "/projects/acme/webhooks", body)
    assert (got, reply["code"]) == (status, code) and needle in reply["msg"], reply


def test_a_project_without_a_production_key_cannot_have_webhooks(server: ServerProcess) -> None:
    new_project(server, "devs", developer="jack")
    status, reply = admin(server, "POST", "/projects/devs/webhooks", {"url": "http://h/x"})
    assert (status, reply["code"]) == (412, "failed_precondition")
    assert admin(server, "GET", "/projects/nope/webhooks")[0] == 404
    assert admin(server, "GET", "/projects/dev/webhooks", token="wrong")[0] == 401


# -- the CLI --------------------------------------------------------------------------------------


@pytest.fixture
def _no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in ("CALLBOARD_ADMIN_TOKEN", "CALLBOARD_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield


def cb(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.usefixtures("_no_env")
def test_cli_adds_lists_and_removes_webhooks(server: ServerProcess) -> None:
    target = ("admin", "--url", server.http_url, "--admin-token", DEV_ADMIN)
    added = cb(*target, "webhooks", "add", "dev", "http://h.test/in", "--json")
    assert added.exit_code == 0, added.output
    hook = json.loads(added.output)
    assert hook["signing_key"] == DEV_KEY and hook["url"] == "http://h.test/in"
    listed = cb(*target, "webhooks", "list", "dev")
    assert listed.exit_code == 0 and hook["id"] in listed.output
    assert "http://h.test/in" in listed.output
    refused = cb(*target, "webhooks", "add", "dev", "http://h.test/2", "--signing-key", "APIx")
    assert refused.exit_code == 1
    assert refused.output.startswith("error: server said invalid_argument")
    removed = cb(*target, "webhooks", "remove", "dev", hook["id"])
    assert removed.exit_code == 0 and f"removed webhook {hook['id']}" in removed.output
    assert json.loads(cb(*target, "webhooks", "list", "dev", "--json").output) == []
    again = cb(*target, "webhooks", "remove", "dev", hook["id"])
    assert again.exit_code == 1 and "not_found" in again.output


@pytest.mark.usefixtures("_no_env")
def test_cli_works_offline_on_a_stopped_servers_database(server: ServerProcess) -> None:
    server.stop()
    db = str(server.db)
    added = cb("admin", "--db", db, "webhooks", "add", "dev", "http://h.test/in")
    assert added.exit_code == 0, added.output
    assert "signed with key devkey" in added.output
    refused = cb("admin", "--db", db, "webhooks", "add", "dev", "nope")
    assert refused.exit_code == 1 and "http" in refused.output
    listed = json.loads(cb("admin", "--db", db, "webhooks", "list", "dev", "--json").output)
    assert [h["url"] for h in listed] == ["http://h.test/in"]
    server.start()  # the running server loads it
    status, reply = admin(server, "GET", "/projects/dev/webhooks")
    assert status == 200 and [h["url"] for h in reply["webhooks"]] == ["http://h.test/in"]
